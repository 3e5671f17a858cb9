// Hostile input into DhtnetMux: over 100,000 malformed, truncated, oversized and out-of-order frames. The process
// stays up, nothing throws out of the stream's event handler, memory stays bounded, and as long as the stream is
// still well-formed msgpack the other channels keep working.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { isDhtnetError } from '../src/errors.js'
import { DhtnetMux, type DhtnetChannel } from '../src/mux/dhtnet/index.js'
import { encodeChannelRequest, encodeFrame } from '../src/mux/dhtnet/wire.js'
import { ScriptedStream } from './helpers/byte-streams.js'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))
const keepLoop = setInterval(() => {}, 1000)
after(() => clearInterval(keepLoop))

const GOOD = 0x8000

function uintBytes(v: number, next: () => number): Buffer {
  // any msgpack form that holds v (not only the smallest)
  const forms: Buffer[] = []
  if (v < 0x80) forms.push(Buffer.from([v]))
  if (v < 0x100) forms.push(Buffer.from([0xcc, v]))
  if (v < 0x10000) forms.push(Buffer.from([0xcd, v >> 8, v & 0xff]))
  const u32 = Buffer.alloc(5)
  u32[0] = 0xce
  u32.writeUInt32BE(v, 1)
  forms.push(u32)
  return forms[next() % forms.length]!
}

/** A random well-formed msgpack object (bounded size and depth). */
function randomObject(next: () => number, depth = 0): Buffer {
  switch (next() % (depth > 2 ? 6 : 9)) {
    case 0:
      return Buffer.from([[0xc0, 0xc2, 0xc3][next() % 3]!])
    case 1:
      return uintBytes(next() >>> 0, next)
    case 2:
      return Buffer.from([0xe0 | (next() & 0x1f)]) // negative fixint
    case 3: {
      const s = randomBuffer(next, 40)
      return Buffer.concat([Buffer.from([0xd9, s.length]), s])
    }
    case 4: {
      const b = randomBuffer(next, 300)
      return Buffer.concat([b.length < 256 ? Buffer.from([0xc4, b.length]) : Buffer.from([0xc5, b.length >> 8, b.length & 0xff]), b])
    }
    case 5:
      return Buffer.from([0xcb, 0, 0, 0, 0, 0, 0, 0, 0]) // float64
    case 6: {
      const n = next() % 5
      return Buffer.concat([Buffer.from([0x90 | n]), ...Array.from({ length: n }, () => randomObject(next, depth + 1))])
    }
    case 7: {
      const n = next() % 4
      return Buffer.concat([Buffer.from([0x80 | n]), ...Array.from({ length: 2 * n }, () => randomObject(next, depth + 1))])
    }
    default:
      return Buffer.from([0xd6, next() & 0x7f, 1, 2, 3, 4]) // fixext 4
  }
}

function randomName(next: () => number): Buffer {
  if (next() % 50 === 0) return Buffer.alloc(5000 + (next() % 3000), 0x61) // over our 4096-byte limit
  return randomBuffer(next, 60)
}

/** A frame that is well-formed msgpack but hostile: the decoder stays in step with the stream. */
function hostileFrame(next: () => number): Buffer {
  let channel = next() & 0xffff
  if (channel === GOOD) channel = GOOD + 1
  switch (next() % 12) {
    case 0: // data (or EOF) for a channel that does not exist
      return encodeFrame(channel === 0 || channel === 0xffff ? 3 : channel, randomBuffer(next, next() % 8 === 0 ? 0 : 2000))
    case 1:
    case 2: {
      // a request, an answer, or a state that does not exist, for any id (reserved, used, ours, the peer's)
      const ids = [0, 0xffff, GOOD, GOOD + 1, next() & 0xffff, 1 + (next() % 8)]
      const states = [0, 0, 1, 2, 3, 0xff]
      return encodeFrame(0, encodeChannelRequest(randomName(next), ids[next() % ids.length]!, states[next() % states.length]! & 0x7f))
    }
    case 3: {
      // beacons, versions (any value, any form), unknown protocol maps, on either control channel
      const bodies = [
        Buffer.from('81a170c3', 'hex'),
        Buffer.from('81a170c2', 'hex'),
        Buffer.concat([Buffer.from('81a176', 'hex'), uintBytes(next() % 3 === 0 ? next() >>> 0 : next() % 3, next)]),
        Buffer.concat([Buffer.from('81a176', 'hex'), randomObject(next)]),
        Buffer.concat([Buffer.from([0x82]), randomObject(next), randomObject(next), randomObject(next), randomObject(next)]),
      ]
      return encodeFrame(next() % 2 === 0 ? 0 : 0xffff, bodies[next() % bodies.length])
    }
    case 4: // several objects in one control frame
      return encodeFrame(
        0,
        Buffer.concat(
          Array.from({ length: 1 + (next() % 4) }, () => (next() % 2 === 0 ? encodeChannelRequest(randomName(next), next() & 0xffff, next() % 3) : randomObject(next))),
        ),
      )
    case 5: // any object that is not a frame
      return randomObject(next)
    case 6: {
      // frames with the wrong types: channel as uint32/negative/str, data as nil/map/array, arrays of other sizes
      const forms = [
        Buffer.concat([Buffer.from([0x92, 0xce, 0, 1, 0, 0]), randomObject(next)]),
        Buffer.concat([Buffer.from([0x92, 0xd0, 0x80]), randomObject(next)]),
        Buffer.concat([Buffer.from([0x92, 0xa1, 0x41]), randomObject(next)]),
        Buffer.concat([Buffer.from([0x92]), uintBytes(channel, next), Buffer.from([0xc0])]),
        Buffer.concat([Buffer.from([0x92]), uintBytes(channel, next), randomObject(next, 2)]),
        Buffer.concat([Buffer.from([0x93]), uintBytes(channel, next), randomObject(next), randomObject(next)]),
        Buffer.from([0x91, 0x05]),
        Buffer.from([0x90]),
      ]
      return forms[next() % forms.length]!
    }
    case 7: {
      // a large frame for an unknown channel, as bin16 or bin32 (streamed, never allocated)
      const n = next() % 2 === 0 ? 65535 : 70000 + (next() % 30000)
      const head = n <= 0xffff ? Buffer.from([0x92, 0x07, 0xc5, n >> 8, n & 0xff]) : Buffer.from([0x92, 0x07, 0xc6, 0, n >> 16, (n >> 8) & 0xff, n & 0xff])
      return Buffer.concat([head, Buffer.alloc(n, 0x55)])
    }
    case 8: // an empty control frame, data as str
      return next() % 2 === 0 ? Buffer.from([0x92, 0x00, 0xc4, 0x00]) : Buffer.concat([Buffer.from([0x92, 0x09, 0xa3]), Buffer.from('abc')])
    default: // channel data in any uint form for a channel that may have been opened by a request above
      return Buffer.concat([Buffer.from([0x92]), uintBytes(1 + (next() % 8), next), Buffer.from([0xc4, 3, 1, 2, 3])])
  }
}

function chunked(bytes: Buffer, next: () => number): Buffer[] {
  const out: Buffer[] = []
  for (let off = 0; off < bytes.length;) {
    const n = Math.min(bytes.length - off, 1 + (next() % 3 === 0 ? next() % 8 : next() % 20000))
    out.push(bytes.subarray(off, off + n))
    off += n
  }
  return out
}

interface Round {
  mux: DhtnetMux
  peer: ScriptedStream
  good: DhtnetChannel
  goodData: Buffer[]
}

async function newRound(): Promise<Round> {
  const peer = new ScriptedStream()
  const mux = new DhtnetMux({
    stream: peer,
    initiator: false,
    keepaliveIntervalMs: 0,
    maxChannels: 64,
    maxPendingRequests: 16,
    // accept some, decline some, leave some pending forever (they must stay bounded)
    onChannelRequest: (name) => (name === 'good' || name.length % 3 === 0 ? true : name.length % 3 === 1 ? false : new Promise(() => {})),
  })
  mux.on('channel', (ch: DhtnetChannel) => {
    ch.on('error', () => {})
    ch.resume()
  })
  await tick()
  const accepted = new Promise<DhtnetChannel>((resolve) => mux.once('channel', resolve))
  peer.feed(encodeFrame(0, encodeChannelRequest(Buffer.from('good'), GOOD, 0)))
  const good = await accepted
  const goodData: Buffer[] = []
  good.removeAllListeners('data')
  good.on('data', (d: Buffer) => goodData.push(Buffer.from(d)))
  return { mux, peer, good, goodData }
}

test('100,000 hostile but well-formed frames: dropped, skipped or declined; the good channel and new channels still work; memory bounded', async () => {
  const next = rng(0xd47e7)
  const heapBefore = heapUsedAfterGc()
  let frames = 0
  let rounds = 0
  let dropped = 0
  let skipped = 0
  const started = performance.now()
  while (frames < 100_000) {
    const { mux, peer, good, goodData } = await newRound()
    rounds++
    const sentGood: Buffer[] = []
    const parts: Buffer[] = []
    for (let i = 0; i < 2000; i++, frames++) {
      if (i % 100 === 50) {
        const d = randomBuffer(next, 500)
        if (d.length > 0) {
          sentGood.push(d)
          parts.push(encodeFrame(GOOD, d))
        }
      }
      parts.push(hostileFrame(next))
    }
    for (const c of chunked(Buffer.concat(parts), next)) peer.feed(c)
    await tick()
    assert.equal(mux.closed, false, `round ${rounds}: still open`)
    assert.ok(Buffer.concat(goodData).equals(Buffer.concat(sentGood)), `round ${rounds}: the good channel got its bytes, in order`)
    const s = mux.stats()
    assert.ok(s.channels <= 64 && s.pendingRequests <= 16, `round ${rounds}: tables bounded (${s.channels}, ${s.pendingRequests})`)
    assert.equal(s.readPaused, false)
    // a new request is still answered (accepted: a name of length 6)
    const before = peer.written().length
    const id = 0x4242
    peer.feed(encodeFrame(0, encodeChannelRequest(Buffer.from('fresh!'), id, 0)))
    const answer = peer.written().subarray(before)
    assert.ok(answer.length > 0, 'the request was answered')
    dropped += s.droppedFrames
    skipped += s.skippedObjects
    good.destroy()
    mux.close()
    peer.destroy()
  }
  const heapAfter = heapUsedAfterGc()
  console.log(
    `# ${frames} frames in ${rounds} rounds, ${((performance.now() - started) / 1000).toFixed(1)} s: ${dropped} dropped, ${skipped} skipped; heap ${((heapAfter - heapBefore) / 1e6).toFixed(1)} MB`,
  )
  assert.ok(dropped > 1000 && skipped > 1000, 'the fuzz reached both paths')
  assert.ok(heapAfter - heapBefore < 64 * 1024 * 1024, `heap grew by ${heapAfter - heapBefore} bytes`)
})

test('mutated, truncated and random bytes: the mux survives or closes with PROTOCOL_ERROR, never throws; memory bounded', async () => {
  const next = rng(0xbadf00d)
  const heapBefore = heapUsedAfterGc()
  let processed = 0 // frames the mux read before it closed (if it did)
  let rounds = 0
  let fatal = 0
  let survived = 0
  const uncaught: unknown[] = []
  const onUncaught = (err: unknown): void => void uncaught.push(err)
  process.on('uncaughtException', onUncaught)
  try {
    while (processed < 100_000) {
      const { mux, peer, good } = await newRound()
      rounds++
      let closeErr: Error | undefined
      mux.once('close', (err?: Error) => (closeErr = err))
      const parts: Buffer[] = []
      for (let i = 0; i < 200; i++) {
        const kind = next() % 20
        if (kind < 14) parts.push(mutateBytes(hostileFrame(next), next))
        else if (kind < 17) parts.push(randomBuffer(next, 64))
        else parts.push(hostileFrame(next).subarray(0, next() % 8)) // truncated
      }
      // now and then an oversized control frame (2 GiB claimed): fatal, and nothing allocated for it
      if (rounds % 20 === 0) parts.push(Buffer.from([0x92, 0x00, 0xc6, 0x7f, 0xff, 0xff, 0xff]))
      const bytes = Buffer.concat(parts)
      for (const c of chunked(bytes, next)) peer.feed(c)
      await tick()
      // how many of the frames the mux read before it stopped
      let end = 0
      for (const p of parts) {
        end += p.length
        if (end > mux.bytesIn) break
        processed++
      }
      if (mux.closed) {
        fatal++
        assert.ok(isDhtnetError(closeErr, 'PROTOCOL_ERROR'), `closed with ${closeErr}`)
        assert.ok(good.destroyed)
      } else {
        survived++
      }
      const s = mux.stats()
      assert.ok(s.channels <= 64 && s.pendingRequests <= 16)
      good.destroy()
      mux.close()
      peer.destroy()
    }
  } finally {
    process.off('uncaughtException', onUncaught)
  }
  const heapAfter = heapUsedAfterGc()
  console.log(
    `# ${processed} mutated, random or truncated frames read in ${rounds} rounds: ${fatal} streams closed with PROTOCOL_ERROR, ${survived} still open; heap ${((heapAfter - heapBefore) / 1e6).toFixed(1)} MB`,
  )
  assert.deepEqual(uncaught, [])
  assert.ok(fatal > 0 && survived > 0)
  assert.ok(heapAfter - heapBefore < 64 * 1024 * 1024)
})
