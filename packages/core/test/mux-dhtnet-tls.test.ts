// Two DhtnetMux over a real TLS 1.3 connection on loopback (node:tls, throwaway certificate): the TLS client end is
// the DHT responder (ids from 0x0001), the TLS server end the connectDevice caller (ids from 0x8000).
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { isDhtnetError } from '../src/errors.js'
import { DhtnetMux, type DhtnetChannel, type DhtnetMuxOptions } from '../src/mux/dhtnet/index.js'
import { createTlsPair, type TlsPair } from './helpers/tls-pair.js'
import { hashUntil, sendStamped } from './helpers/byte-streams.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const keepLoop = setInterval(() => {}, 1000)
after(() => clearInterval(keepLoop))

interface Pair {
  /** the connectDevice caller (TLS server) */
  a: DhtnetMux
  /** the responder (TLS client) */
  b: DhtnetMux
  tls: TlsPair
}

async function withPair(options: { a?: Partial<DhtnetMuxOptions>; b?: Partial<DhtnetMuxOptions> }, body: (pair: Pair) => Promise<void>): Promise<void> {
  const tls = await createTlsPair()
  const a = new DhtnetMux({ stream: tls.server, initiator: true, keepaliveIntervalMs: 0, ...options.a })
  const b = new DhtnetMux({ stream: tls.client, initiator: false, keepaliveIntervalMs: 0, ...options.b })
  try {
    await body({ a, b, tls })
  } finally {
    const closed = [tls.client, tls.server].map((s) => (s.closed ? Promise.resolve() : once(s, 'close')))
    a.close()
    b.close()
    await Promise.race([Promise.all(closed), sleep(6000)])
    tls.close()
    await sleep(1)
  }
  for (const mux of [a, b]) {
    const s = mux.stats()
    assert.equal(s.timers, 0, 'timers left after close')
    assert.equal(s.channels + s.pendingOpens + s.pendingRequests + s.pendingPings, 0, 'state left after close')
  }
}

async function openPair(pair: Pair, name: string, from: 'a' | 'b' = 'a'): Promise<[DhtnetChannel, DhtnetChannel]> {
  const [opener, acceptor] = from === 'a' ? [pair.a, pair.b] : [pair.b, pair.a]
  const accepted = new Promise<DhtnetChannel>((resolve) => acceptor.once('channel', resolve))
  const local = await opener.openChannel(name)
  return [local, await accepted]
}

test('100 MiB each way at once over one channel, byte-exact (SHA-256); then one EOF ends it on both sides', () =>
  withPair({}, async (pair) => {
    const [left, right] = await openPair(pair, 'bulk')
    assert.equal(left.channelId, 0x8000)
    const total = 100 * 1024 * 1024
    const started = performance.now()
    const [sentAB, sentBA, gotB, gotA] = await Promise.all([
      sendStamped(left, 100, randomBytes(1024 * 1024), 1),
      sendStamped(right, 100, randomBytes(1024 * 1024), 2),
      hashUntil(right, total),
      hashUntil(left, total),
    ])
    const seconds = (performance.now() - started) / 1000
    console.log(`# 2 × 100 MiB over one DHTNet channel on loopback TLS: ${((2 * total) / 1e6 / seconds).toFixed(0)} MB/s aggregate`)
    assert.equal(gotB, sentAB)
    assert.equal(gotA, sentBA)
    assert.equal(left.bytesWritten, total)
    assert.equal(right.bytesRead, total)
    // no half-close: one end() closes both directions on both sides
    const closed = Promise.all([once(left, 'close'), once(right, 'close')])
    left.resume()
    right.resume()
    left.end()
    await closed
    assert.equal(pair.a.stats().channels + pair.b.stats().channels, 0)
    assert.ok(pair.a.bytesOut > total && pair.b.bytesIn === pair.a.bytesOut)
  }))

test('many channels in both directions at once (300 each way), each echoing its own bytes; ids from disjoint starts', () =>
  withPair({}, async (pair) => {
    for (const mux of [pair.a, pair.b]) {
      mux.on('channel', (ch: DhtnetChannel) => {
        ch.on('error', () => {})
        ch.pipe(ch) // echo; the opener's end() ends it
      })
    }
    const n = 300
    const one = async (mux: DhtnetMux, i: number): Promise<number> => {
      const ch = await mux.openChannel(`echo-${i}`)
      const data = randomBytes(1000 + ((i * 7919) % 20000))
      const back = new Promise<Buffer>((resolve, reject) => {
        const parts: Buffer[] = []
        let got = 0
        ch.on('data', (c: Buffer) => {
          parts.push(c)
          got += c.length
          if (got >= data.length) resolve(Buffer.concat(parts))
        })
        ch.once('error', reject)
      })
      ch.write(data)
      assert.ok((await back).equals(data), `channel ${i}`)
      const closed = once(ch, 'close')
      ch.end()
      await closed
      return ch.channelId
    }
    const ids = await Promise.all([...Array.from({ length: n }, (_, i) => one(pair.a, i)), ...Array.from({ length: n }, (_, i) => one(pair.b, i))])
    assert.ok(ids.slice(0, n).every((id) => id >= 0x8000 && id < 0x8000 + n))
    assert.ok(ids.slice(n).every((id) => id >= 1 && id <= n))
    await sleep(50)
    assert.equal(pair.a.stats().channels + pair.b.stats().channels, 0)
  }))

test('decline: the opener gets CHANNEL_DECLINED; the reason stays local', () =>
  withPair({ b: { onChannelRequest: (name) => (name === 'ssh' ? true : { accept: false, reason: 'not offered' }) } }, async (pair) => {
    pair.b.on('channel', (ch: DhtnetChannel) => ch.on('error', () => {}))
    await assert.rejects(pair.a.openChannel('telnet'), (err) => isDhtnetError(err, 'CHANNEL_DECLINED'))
    const [ssh] = await openPair(pair, 'ssh')
    assert.equal(ssh.name, 'ssh')
    ssh.destroy()
  }))

test("EOF has no half-close: after the peer's end() our readable ends after its data, our writable is finished, a write fails", () =>
  withPair({}, async (pair) => {
    const [client, server] = await openPair(pair, 'x')
    const serverGot: Buffer[] = []
    server.on('data', (c: Buffer) => serverGot.push(c))
    const serverEnded = once(server, 'end')
    const serverFinished = once(server, 'finish')
    const clientEnded = once(client, 'end')
    client.resume()
    client.end('request')
    await Promise.all([serverEnded, serverFinished, clientEnded])
    assert.equal(Buffer.concat(serverGot).toString(), 'request')
    assert.equal(server.writableFinished, true, 'the server cannot answer: DHTNet has no half-close')
    // the channel is closed by now ('close' came after 'end'): the write callback says why
    const err = await new Promise<Error | null | undefined>((resolve) => server.write('answer', resolve))
    assert.ok(isDhtnetError(err, 'CHANNEL_CLOSED'), String(err))

    // destroy() on one side is an EOF for the other: a normal end, no error
    const [c2, s2] = await openPair(pair, 'y', 'b')
    const errors: unknown[] = []
    s2.on('error', (e) => errors.push(e))
    const ended = once(s2, 'end')
    s2.resume()
    c2.destroy()
    await ended
    assert.deepEqual(errors, [])
  }))

test('probe(): a beacon round trip over TLS; keepalive beacons keep an idle connection and are answered', () =>
  withPair({ a: { keepaliveIntervalMs: 30, deadPeerTimeoutMs: 300 }, b: { keepaliveIntervalMs: 30, deadPeerTimeoutMs: 300 } }, async (pair) => {
    await sleep(20)
    assert.equal(pair.a.peerProtocolVersion, 1)
    const rtt = await pair.a.probe(5000)
    assert.ok(rtt >= 0 && rtt < 5000, `rtt ${rtt}`)
    const before = pair.b.bytesOut
    await sleep(600) // twice the dead-peer timeout, nothing else happening
    assert.equal(pair.a.closed, false)
    assert.equal(pair.b.closed, false)
    assert.ok(pair.b.bytesOut > before, 'beacons went out')
  }))

test('a dead peer (stops reading and answering) is detected by the keepalive: PEER_UNREACHABLE', () =>
  withPair({ a: { keepaliveIntervalMs: 30, deadPeerTimeoutMs: 300 } }, async (pair) => {
    const [ch] = await openPair(pair, 'x')
    const chErr = new Promise<Error>((r) => ch.once('error', r))
    await sleep(20)
    pair.tls.client.pause() // b's process hangs: it reads nothing, answers nothing
    pair.tls.client.removeAllListeners('data')
    const err = await new Promise<Error | undefined>((r) => pair.a.once('close', r))
    assert.ok(isDhtnetError(err, 'PEER_UNREACHABLE'), String(err))
    assert.ok(isDhtnetError(await chErr, 'PEER_UNREACHABLE'))
  }))

test('a slow reader: the connection stops reading (memory bounded), the writer is held back, nothing is lost on resume', () =>
  withPair({}, async (pair) => {
    const [tx, rx] = await openPair(pair, 'slow')
    rx.pause()
    let offered = 0
    let blocked = false
    const h = createHash('sha256')
    const chunk = randomBytes(256 * 1024)
    for (let i = 0; i < 4096 && !blocked; i++) {
      h.update(chunk)
      offered += chunk.length
      if (!tx.write(chunk)) {
        const drained = await Promise.race([once(tx, 'drain').then(() => true), sleep(300).then(() => false)])
        blocked = !drained
      }
    }
    assert.ok(blocked, 'the writer was held back')
    assert.ok(offered < 4096 * chunk.length)
    const stats = pair.b.stats()
    assert.equal(stats.readPaused, true, 'the reading side paused the connection')
    // what the receiver holds: the channel's buffer, at most its high-water mark plus one TLS read
    assert.ok(rx.readableLength <= 256 * 1024 + 128 * 1024, `receiver holds ${rx.readableLength}`)
    // what the sender holds: its channel buffer and the TLS socket's queue, both bounded
    assert.ok(tx.writableLength <= 64 * 1024 + chunk.length, `sender channel holds ${tx.writableLength}`)
    assert.ok(pair.tls.server.writableLength <= 256 * 1024 + 2 * 65542, `sender socket holds ${pair.tls.server.writableLength}`)
    // head-of-line blocking, as documented: another channel waits too while this reader sleeps
    const [other, otherRx] = await Promise.race([openPair(pair, 'other'), sleep(300).then(() => [undefined, undefined] as const)])
    assert.equal(other, undefined, 'the request waits behind the paused connection')
    // the reader wakes up: everything arrives, in order
    const got = hashUntil(rx, offered)
    rx.resume()
    assert.equal(await got, h.digest('hex'))
    void otherRx
  }))

test('fairness: a small message on one channel overtakes a bulk transfer on another', () =>
  withPair({}, async (pair) => {
    const [bulk, bulkRx] = await openPair(pair, 'bulk')
    const [chat, chatRx] = await openPair(pair, 'chat')
    let bulkGot = 0
    bulkRx.on('data', (c: Buffer) => (bulkGot += c.length))
    const total = 64 * 1024 * 1024
    const sending = sendStamped(bulk, 64, randomBytes(1024 * 1024), 3)
    await sleep(30)
    const sentAt = performance.now()
    const arrived = once(chatRx, 'data')
    chat.write('ping')
    await arrived
    const latency = performance.now() - sentAt
    console.log(`# small message during bulk: ${latency.toFixed(1)} ms; bulk had moved ${(bulkGot / 1e6).toFixed(1)} MB of ${total / 1e6}`)
    assert.ok(bulkGot < total, 'the small message arrived before the bulk transfer ended')
    await sending
  }))

test('close(): the peer sees CONNECTION_CLOSED on its channels and its pending opens; close once; the sockets end', () =>
  withPair({ b: { onChannelRequest: (name) => (name === 'never' ? new Promise(() => {}) : true) } }, async (pair) => {
    pair.b.on('channel', (ch: DhtnetChannel) => ch.on('error', () => {}))
    const [ch] = await openPair(pair, 'x')
    const pending = pair.a.openChannel('never')
    const chErr = new Promise<Error>((r) => ch.once('error', r))
    const aClosed = new Promise<Error | undefined>((r) => pair.a.once('close', r))
    let bCloses = 0
    pair.b.on('close', () => bCloses++)
    pair.b.close()
    assert.ok(isDhtnetError(await aClosed, 'CONNECTION_CLOSED'))
    assert.ok(isDhtnetError(await chErr, 'CONNECTION_CLOSED'))
    await assert.rejects(pending, (err) => isDhtnetError(err, 'CONNECTION_CLOSED'))
    await Promise.all([pair.tls.client, pair.tls.server].filter((s) => !s.closed).map((s) => once(s, 'close')))
    pair.b.close()
    assert.equal(bCloses, 1)
  }))
