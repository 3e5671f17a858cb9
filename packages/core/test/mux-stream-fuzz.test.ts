// Hostile bytes into StreamMessageTransport: over 100,000 length-prefixed frames, valid, mutated, truncated and
// oversized, cut at random places. A reference parser says what must come out: exactly those messages, then a
// PROTOCOL_ERROR close at the first oversized length; the process stays up and memory bounded.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { isDhtnetError } from '../src/errors.js'
import { StreamMessageTransport } from '../src/mux/native/stream-transport.js'
import { ScriptedStream } from './helpers/byte-streams.js'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))
const keepLoop = setInterval(() => {}, 1000)
after(() => clearInterval(keepLoop))

const MAX = 4096

/** The reference: messages up to the first oversized length, and whether one was found. */
function reference(bytes: Buffer): { messages: Buffer[]; oversized: boolean } {
  const messages: Buffer[] = []
  let off = 0
  while (bytes.length - off >= 4) {
    const n = bytes.readUInt32BE(off)
    if (n > MAX) return { messages, oversized: true }
    if (bytes.length - off - 4 < n) break
    messages.push(bytes.subarray(off + 4, off + 4 + n))
    off += 4 + n
  }
  return { messages, oversized: false }
}

function frame(next: () => number): Buffer {
  const body = randomBuffer(next, next() % 8 === 0 ? MAX : 200)
  const prefix = Buffer.alloc(4)
  prefix.writeUInt32BE(body.length)
  const f = Buffer.concat([prefix, body])
  switch (next() % 150) {
    case 0:
      return mutateBytes(f, next) // flipped bytes, truncation, garbage appended, a u16 overwritten
    case 1: {
      const big = Buffer.alloc(4)
      big.writeUInt32BE(MAX + 1 + (next() % 0xffff0000)) // oversized
      return big
    }
    default:
      return f
  }
}

test('100,000 frames, valid, mutated, truncated and oversized: exactly the reference messages, then PROTOCOL_ERROR; memory bounded', async () => {
  const next = rng(0x5eed)
  const heapBefore = heapUsedAfterGc()
  let frames = 0
  let rounds = 0
  let protocolErrors = 0
  let delivered = 0
  while (frames < 100_000) {
    rounds++
    const parts: Buffer[] = []
    for (let i = 0; i < 100; i++, frames++) parts.push(frame(next))
    const bytes = Buffer.concat(parts)
    const expected = reference(bytes)
    const stream = new ScriptedStream()
    const t = new StreamMessageTransport({ stream, maxMessageSize: MAX })
    const got: Buffer[] = []
    t.on('message', (m: Buffer) => got.push(Buffer.from(m)))
    let closeErr: Error | undefined
    let closed = false
    t.on('close', (err?: Error) => ((closed = true), (closeErr = err)))
    await tick()
    for (let off = 0; off < bytes.length;) {
      const n = Math.min(bytes.length - off, 1 + (next() % 3 === 0 ? next() % 6 : next() % 9000))
      stream.feed(bytes.subarray(off, off + n))
      off += n
    }
    await tick()
    assert.equal(got.length, expected.messages.length, `round ${rounds}: message count`)
    for (let i = 0; i < got.length; i++) assert.ok(got[i]!.equals(expected.messages[i]!), `round ${rounds}: message ${i}`)
    assert.equal(closed, expected.oversized, `round ${rounds}: closed iff an oversized length came`)
    if (expected.oversized) {
      assert.ok(isDhtnetError(closeErr, 'PROTOCOL_ERROR'))
      protocolErrors++
    }
    delivered += got.length
    t.close()
    stream.destroy()
  }
  const heapAfter = heapUsedAfterGc()
  console.log(
    `# ${frames} frames in ${rounds} rounds: ${delivered} messages delivered, ${protocolErrors} PROTOCOL_ERROR closes; heap ${((heapAfter - heapBefore) / 1e6).toFixed(1)} MB`,
  )
  assert.ok(protocolErrors > 0 && delivered > 10_000)
  assert.ok(heapAfter - heapBefore < 64 * 1024 * 1024)
})
