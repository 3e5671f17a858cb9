// Our native Multiplexer over StreamMessageTransport over a real loopback TLS 1.3 connection: the properties of the
// native multiplexer (half-close, reset with a reason, per-channel flow control, byte-exact bulk) hold on a byte
// stream too. Throughput is measured against raw TLS in the same run (logged, not asserted).
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { isDhtnetError } from '../src/errors.js'
import { Multiplexer, type ChannelSocket, type MultiplexerOptions } from '../src/mux/index.js'
import { StreamMessageTransport } from '../src/mux/native/stream-transport.js'
import { createTlsPair, type TlsPair } from './helpers/tls-pair.js'
import { readAll } from './helpers/memory-transport.js'
import { hashUntil, sendStamped } from './helpers/byte-streams.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const keepLoop = setInterval(() => {}, 1000)
after(() => clearInterval(keepLoop))

interface Pair {
  a: Multiplexer
  b: Multiplexer
  ta: StreamMessageTransport
  tb: StreamMessageTransport
  tls: TlsPair
}

async function withPair(options: Partial<MultiplexerOptions>, body: (pair: Pair) => Promise<void>): Promise<void> {
  const tls = await createTlsPair()
  const ta = new StreamMessageTransport(tls.server)
  const tb = new StreamMessageTransport(tls.client)
  const a = new Multiplexer({ reliable: ta, initiator: true, ...options })
  const b = new Multiplexer({ reliable: tb, initiator: false, ...options })
  try {
    await body({ a, b, ta, tb, tls })
  } finally {
    const closed = [tls.client, tls.server].map((s) => (s.closed ? Promise.resolve() : once(s, 'close')))
    a.close()
    b.close()
    await Promise.race([Promise.all(closed), sleep(6000)])
    tls.close()
  }
  assert.equal(a.stats().timers + b.stats().timers, 0)
}

async function openPair(pair: Pair, name: string): Promise<[ChannelSocket, ChannelSocket]> {
  const accepted = new Promise<ChannelSocket>((r) => pair.b.once('channel', r))
  const local = await pair.a.openChannel(name)
  return [local, await accepted]
}

test('64 MiB each way at once, byte-exact (SHA-256); throughput next to raw TLS in the same run', async () => {
  const MiB = 1024 * 1024
  const total = 64 * MiB
  const block = randomBytes(MiB)
  // baseline: the same bytes on a raw TLS pair
  const raw = await createTlsPair()
  let started = performance.now()
  const [rawAB, rawBA, rawGotB, rawGotA] = await Promise.all([
    sendStamped(raw.server, 64, block, 1),
    sendStamped(raw.client, 64, block, 2),
    hashUntil(raw.client, total),
    hashUntil(raw.server, total),
  ])
  const rawMBps = (2 * total) / 1e6 / ((performance.now() - started) / 1000)
  assert.equal(rawGotB, rawAB)
  assert.equal(rawGotA, rawBA)
  raw.close()

  await withPair({}, async (pair) => {
    const [left, right] = await openPair(pair, 'bulk')
    started = performance.now()
    const [sentAB, sentBA, gotB, gotA] = await Promise.all([sendStamped(left, 64, block, 1), sendStamped(right, 64, block, 2), hashUntil(right, total), hashUntil(left, total)])
    const muxMBps = (2 * total) / 1e6 / ((performance.now() - started) / 1000)
    console.log(`# 2 × 64 MiB in one process: native mux over TLS ${muxMBps.toFixed(0)} MB/s, raw TLS ${rawMBps.toFixed(0)} MB/s (aggregate)`)
    assert.equal(gotB, sentAB)
    assert.equal(gotA, sentBA)
    assert.equal(right.bytesRead, total)
    left.end()
    right.end()
    await Promise.all([once(left, 'close'), once(right, 'close')])
    assert.equal(pair.a.stats().channels + pair.b.stats().channels, 0)
  })
})

test('half-close: the side that ended still receives; the other answers after seeing the end', () =>
  withPair({}, async (pair) => {
    const [client, server] = await openPair(pair, 'echo')
    client.end('request')
    assert.equal((await readAll(server)).toString(), 'request')
    assert.equal(server.writable, true)
    const response = readAll(client)
    server.write('resp')
    await sleep(10)
    server.end('onse')
    assert.equal((await response).toString(), 'response')
  }))

test('destroy(err) resets the channel: the peer gets CHANNEL_RESET with the reason', () =>
  withPair({}, async (pair) => {
    const [client, server] = await openPair(pair, 'x')
    const errored = new Promise<Error>((r) => server.once('error', r))
    client.on('error', () => {})
    client.destroy(new Error('disk full'))
    const err = await errored
    assert.ok(isDhtnetError(err, 'CHANNEL_RESET'))
    assert.match(err.message, /disk full/)
  }))

test('flow control per channel: a paused reader stops its own sender only; another channel moves 32 MiB meanwhile', () =>
  withPair({ channelWindowBytes: 256 * 1024 }, async (pair) => {
    const [slowTx, slowRx] = await openPair(pair, 'slow')
    const [fastTx, fastRx] = await openPair(pair, 'fast')
    slowRx.pause()
    let offered = 0
    let blocked = false
    const chunk = Buffer.alloc(16 * 1024, 1)
    for (let i = 0; i < 10_000 && !blocked; i++) {
      offered += chunk.length
      if (!slowTx.write(chunk)) blocked = !(await Promise.race([once(slowTx, 'drain').then(() => true), sleep(200).then(() => false)]))
    }
    assert.ok(blocked, 'the slow writer was stopped')
    assert.ok(slowTx.bytesWritten <= 256 * 1024 + slowRx.readableHighWaterMark, `sent ${slowTx.bytesWritten}`)
    const total = 32 * 1024 * 1024
    const got = hashUntil(fastRx, total)
    const sent = sendStamped(fastTx, 32, randomBytes(1024 * 1024), 5)
    assert.equal(await got, await sent)
    let slowGot = 0
    slowRx.on('data', (c: Buffer) => (slowGot += c.length))
    slowRx.resume()
    await once(slowTx, 'drain')
    slowTx.end()
    await once(slowRx, 'end')
    assert.equal(slowGot, offered)
  }))

test('probe() over the stream; closing one side gives the other CONNECTION_CLOSED', () =>
  withPair({}, async (pair) => {
    const rtt = await pair.a.probe(5000)
    assert.ok(rtt >= 0 && rtt < 5000)
    const [ch] = await openPair(pair, 'x')
    const err = new Promise<Error>((r) => ch.once('error', r))
    pair.b.close()
    assert.ok(isDhtnetError(await err, 'CONNECTION_CLOSED'))
  }))
