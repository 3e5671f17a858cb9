/**
 * Issue 12 items 4 and 5 against our multiplexer: a peer cannot make us queue replies it never reads, nor make us
 * hold more than the connection window of data, nor pile up channel requests; and 100,000 malformed or out-of-order
 * frames over a real (DTLS) connection leave the victim up, its other connection working, memory bounded.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes, randomInt } from 'node:crypto'
import { once } from 'node:events'
import { isDhtnetError } from '../src/errors.js'
import { ChannelSocket, Multiplexer } from '../src/mux/index.js'
import { FrameType, encodeFrame, encodeOpen, encodePing } from '../src/mux/native/frames.js'
import { WebRtcPeer } from '../src/transport/webrtc/webrtc.js'
import { readAll, withPair } from './helpers/memory-transport.js'

const KiB = 1024
const MiB = 1024 * KiB

function closedWith(mux: Multiplexer): Promise<Error | undefined> {
  return mux.closed ? Promise.resolve(undefined) : new Promise((resolve) => mux.once('close', (err?: Error) => resolve(err)))
}

test('a PING with more than its 4-byte nonce closes the connection (PROTOCOL_ERROR)', () =>
  withPair({}, async ({ b, ta }) => {
    const closed = closedWith(b)
    ta.inject(encodeFrame(FrameType.PING, 0, randomBytes(1000)))
    const err = await closed
    assert.ok(isDhtnetError(err, 'PROTOCOL_ERROR'), String(err))
    assert.match(err.message, /PING frame with a 1000-byte body/)
  }))

test('a peer that asks (PING) without reading the answers: the victim stops at its backlog bound', () =>
  withPair({ b: { sendHighWaterBytes: 64 * KiB, maxControlBacklogBytes: 64 * KiB } }, async ({ b, ta, tb }) => {
    const closed = closedWith(b)
    tb.pause() // what b sends is never delivered: the attacker does not read
    let sent = 0
    for (let batch = 0; batch < 100 && !b.closed; batch++) {
      for (let i = 0; i < 1000; i++) ta.inject(encodePing(FrameType.PING, sent++))
      await new Promise((r) => setImmediate(r))
    }
    const err = await closed
    assert.ok(isDhtnetError(err, 'PROTOCOL_ERROR'), String(err))
    assert.match(err.message, /does not read the answers/)
    // the replies it held stayed under the bound (+ one frame), far below what was asked for
    assert.ok(sent < 100_000, `the victim took all ${sent} pings`)
    assert.ok(tb.bufferedAmount <= 128 * KiB + 64, `victim queued ${tb.bufferedAmount} bytes of replies`)
  }))

test('channel requests waiting for a slow handler are capped; the others are declined at once', () =>
  withPair({ b: { maxPendingRequests: 16, maxChannels: 4096, onChannelRequest: () => new Promise(() => {}) } }, async ({ a, b }) => {
    const opens = Array.from({ length: 200 }, (_, i) => a.openChannel(`slow-${i}`, { timeoutMs: 60_000 }))
    let timer: NodeJS.Timeout | undefined
    const settled = await Promise.race([Promise.allSettled(opens.slice(16)), new Promise((r) => (timer = setTimeout(() => r('stuck'), 10_000)))])
    clearTimeout(timer)
    assert.notEqual(settled, 'stuck')
    for (const r of settled as PromiseSettledResult<unknown>[]) {
      assert.equal(r.status, 'rejected')
      assert.ok(isDhtnetError(r.reason, 'CHANNEL_DECLINED'))
      assert.match((r.reason as Error).message, /too many channel requests waiting/)
    }
    assert.equal(b.stats().pendingRequests, 16)
    for (const p of opens.slice(0, 16)) p.catch(() => {})
  }))

test('the connection window bounds what a peer makes us hold across many unread channels; reading resumes it', () =>
  withPair({ b: { connectionWindowBytes: 4 * MiB } }, async ({ a, b }) => {
    const incoming: ChannelSocket[] = []
    b.on('channel', (c: ChannelSocket) => incoming.push(c))
    const channels = await Promise.all(Array.from({ length: 40 }, (_, i) => a.openChannel(`bulk-${i}`)))
    const payloads = channels.map(() => randomBytes(MiB))
    const writes = channels.map((c, i) => new Promise<void>((resolve, reject) => c.end(payloads[i], (err?: Error | null) => (err ? reject(err) : resolve()))))
    // let the sender push everything it is allowed to
    for (let i = 0; i < 50; i++) await new Promise((r) => setTimeout(r, 10))
    const held = incoming.reduce((n, c) => n + c.pendingReceiveBytes, 0)
    assert.ok(held <= 4 * MiB, `b holds ${held} bytes of unread data (connection window 4 MiB)`)
    assert.ok(held >= 3 * MiB, `the window is used (${held} bytes held)`)
    assert.equal(incoming.length, 40)
    // reading everything lets the rest through, byte-exact
    const got = await Promise.all(incoming.map((c) => readAll(c)))
    await Promise.all(writes)
    for (let i = 0; i < 40; i++) {
      const k = incoming[i]!.name.slice('bulk-'.length)
      assert.equal(createHash('sha256').update(got[i]!).digest('hex'), createHash('sha256').update(payloads[Number(k)]!).digest('hex'))
    }
  }))

test('data beyond the connection window from a raw peer is a protocol error', () =>
  withPair({ b: { connectionWindowBytes: 128 * KiB, onChannelRequest: () => true } }, async ({ b, ta }) => {
    b.on('channel', (c: ChannelSocket) => c.on('error', () => {}))
    const closed = closedWith(b)
    ta.inject(encodeOpen(1001, 'stream', MiB, Buffer.from('raw')))
    await new Promise((r) => setTimeout(r, 20))
    for (let i = 0; i < 3; i++) ta.inject(encodeFrame(FrameType.DATA, 1001, randomBytes(60 * KiB)))
    const err = await closed
    assert.ok(isDhtnetError(err, 'PROTOCOL_ERROR'), String(err))
    assert.match(err.message, /beyond the connection window/)
  }))

/** A real DTLS/SCTP connection between two WebRTC peers, with our multiplexer on the answerer (the victim). */
async function realPair(): Promise<{ attacker: WebRtcPeer; victim: WebRtcPeer; mux: Multiplexer; close(): void }> {
  const attacker = new WebRtcPeer({ role: 'offerer', bindAddress: '127.0.0.1' })
  const victim = new WebRtcPeer({ role: 'answerer', bindAddress: '127.0.0.1', holdChecksMs: 10 })
  const offer = await attacker.createOffer()
  attacker.acceptAnswer(await victim.createAnswer(offer))
  await Promise.all([attacker.waitConnected({ timeoutMs: 10_000 }), victim.waitConnected({ timeoutMs: 10_000 })])
  const mux = new Multiplexer({ reliable: victim.reliable, datagram: victim.datagram, initiator: false, onChannelRequest: () => true })
  mux.on('channel', (c: ChannelSocket) => {
    c.on('error', () => {})
    c.pipe(c) // echo
  })
  return {
    attacker,
    victim,
    mux,
    close: () => {
      mux.close()
      attacker.close()
      victim.close()
    },
  }
}

/** Frames a victim must survive without closing: unknown types, frames for channels that do not exist, stale answers. */
function survivableFrame(): Buffer {
  const id = 2 * randomInt(1, 1 << 20) // an id in the victim's own space it never opened
  switch (randomInt(0, 9)) {
    case 0:
      return encodeFrame((0x20 + randomInt(0, 0xd0)) as never, randomInt(0, 2 ** 32), randomBytes(randomInt(0, 64)))
    case 1:
      return encodeFrame(FrameType.DATA, id, randomBytes(randomInt(0, 512)))
    case 2:
      return encodeFrame(FrameType.WINDOW, id, randomBytes(4))
    case 3:
      return encodeFrame(FrameType.EOF, id)
    case 4:
      return encodeFrame(FrameType.RESET, id, randomBytes(randomInt(0, 64)))
    case 5:
      return encodeFrame(FrameType.ACCEPT, id, randomBytes(4))
    case 6:
      return encodeFrame(FrameType.DECLINE, id, randomBytes(randomInt(0, 64)))
    case 7:
      return encodePing(FrameType.PONG, randomInt(0, 2 ** 32)) // a pong for no probe
    default:
      return encodeFrame(FrameType.DGRAM, id, randomBytes(randomInt(0, 256)))
  }
}

/** Frames that must close the attacked connection (and only it). */
const FATAL_FRAMES: Array<[string, () => Buffer]> = [
  ['truncated header', () => randomBytes(randomInt(0, 5))],
  ['oversized PING', () => encodeFrame(FrameType.PING, 0, randomBytes(200 * KiB))],
  ['OPEN in our own id space', () => encodeOpen(2, 'stream', MiB, Buffer.from('x'))],
  ['truncated OPEN', () => encodeFrame(FrameType.OPEN, 1, randomBytes(3))],
  ['truncated WINDOW', () => encodeFrame(FrameType.WINDOW, 1, randomBytes(2))],
  ['second HELLO', () => Buffer.from([FrameType.HELLO, 0, 0, 0, 0, 1, 0])],
]

test('over a real connection: 100,000 malformed or out-of-order frames; the victim stays up, its other connection works, memory bounded', async () => {
  const keepAlive = setInterval(() => {}, 1000)
  const bystander = await realPair() // another connection of the victim's: it must keep working
  const attacked = await realPair()
  try {
    globalThis.gc?.()
    const heapBefore = process.memoryUsage().heapUsed
    let sent = 0
    while (sent < 100_000) {
      for (let i = 0; i < 2000; i++, sent++) {
        if (!attacked.attacker.reliable.send(survivableFrame())) await once(attacked.attacker.reliable, 'drain')
      }
      await new Promise((r) => setImmediate(r))
    }
    // everything arrived and was ignored: the attacked connection still serves a channel (through the attacker's own mux)
    const probeMux = new Multiplexer({ reliable: attacked.attacker.reliable, initiator: true })
    const echo = await probeMux.openChannel('echo-after-flood')
    echo.end('still here')
    assert.equal(String(await readAll(echo)), 'still here')
    assert.ok(attacked.mux.stats().ignoredFrames > 50_000, `ignored ${attacked.mux.stats().ignoredFrames}`)
    globalThis.gc?.()
    const grown = process.memoryUsage().heapUsed - heapBefore
    assert.ok(grown < 64 * MiB, `heap grew by ${grown} bytes`)
    // each fatal frame closes only the connection it arrives on
    for (const [what, make] of FATAL_FRAMES) {
      const victimConn = await realPair()
      const closed = closedWith(victimConn.mux)
      // twice: the first HELLO is the peer's own (accepted), the second one is the fault
      victimConn.attacker.reliable.send(make())
      victimConn.attacker.reliable.send(make())
      const err = await closed
      assert.ok(isDhtnetError(err, 'PROTOCOL_ERROR'), `${what}: ${String(err)}`)
      victimConn.close()
    }
    // the bystander connection never noticed
    const bystanderMux = new Multiplexer({ reliable: bystander.attacker.reliable, initiator: true })
    const ch = await bystanderMux.openChannel('echo-bystander')
    const payload = randomBytes(256 * KiB)
    ch.end(payload)
    assert.ok((await readAll(ch)).equals(payload))
    assert.equal(bystander.mux.closed, false)
    bystanderMux.close()
    probeMux.close()
  } finally {
    attacked.close()
    bystander.close()
    clearInterval(keepAlive)
  }
})
