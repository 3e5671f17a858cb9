import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { FrameDecoder, encodeFrame, frameHeader, MAX_FRAME_PAYLOAD } from '../src/transport/ice-tcp/framing.js'
import { isDhtnetError } from '../src/errors.js'

function frames(sizes: number[]): { payloads: Buffer[]; wire: Buffer } {
  const payloads = sizes.map((n) => randomBytes(n))
  return { payloads, wire: Buffer.concat(payloads.map((p) => encodeFrame(p))) }
}

function drain(d: FrameDecoder): Buffer[] {
  const out: Buffer[] = []
  for (let f = d.next(); f; f = d.next()) out.push(f)
  return out
}

test('RFC 4571: frames come out whole whatever the chunking (1-byte chunks, random cuts, one big chunk)', () => {
  const { payloads, wire } = frames([0, 1, 2, 116, 84, 341, 16406, 65535, 3, 0])
  // one chunk
  let d = new FrameDecoder()
  d.push(wire)
  assert.deepEqual(drain(d), payloads)
  assert.equal(d.bufferedBytes, 0)
  // byte by byte
  d = new FrameDecoder()
  const got: Buffer[] = []
  for (let i = 0; i < wire.length; i++) {
    d.push(wire.subarray(i, i + 1))
    got.push(...drain(d))
  }
  assert.deepEqual(got, payloads)
  // random cuts
  for (let round = 0; round < 50; round++) {
    d = new FrameDecoder()
    const out: Buffer[] = []
    let at = 0
    while (at < wire.length) {
      const n = 1 + Math.floor(Math.random() * 40000)
      d.push(wire.subarray(at, at + n))
      at += n
      out.push(...drain(d))
    }
    assert.deepEqual(out, payloads)
    assert.equal(d.bufferedBytes, 0)
  }
})

test('RFC 4571: a frame inside one chunk is a view of it (no copy)', () => {
  const { wire } = frames([100, 200, 300])
  const d = new FrameDecoder()
  d.push(wire)
  for (const f of drain(d)) assert.equal(f.buffer, wire.buffer)
})

test('RFC 4571: a declared length above the limit is refused before the payload arrives; the limit can be raised', () => {
  const d = new FrameDecoder(2048)
  d.push(Buffer.from([0x08, 0x01])) // 2049
  assert.throws(
    () => d.next(),
    (e: unknown) => isDhtnetError(e, 'TRANSPORT_ERROR') && /2049 bytes/.test((e as Error).message),
  )
  d.maxFrameBytes = MAX_FRAME_PAYLOAD
  assert.equal(d.next(), undefined)
  d.push(Buffer.alloc(2049, 7))
  assert.equal(d.next()!.length, 2049)
})

test('RFC 4571: takeRemaining returns the bytes after the last frame (for the switch to unframed data)', () => {
  const d = new FrameDecoder()
  const tail = randomBytes(1000)
  d.push(Buffer.concat([encodeFrame(Buffer.from('stun')), tail.subarray(0, 10)]))
  d.push(tail.subarray(10))
  assert.deepEqual(d.next(), Buffer.from('stun'))
  assert.deepEqual(d.takeRemaining(), tail)
  assert.equal(d.bufferedBytes, 0)
  assert.equal(d.next(), undefined)
})

test('RFC 4571: encoders', () => {
  assert.deepEqual(frameHeader(341), Buffer.from([0x01, 0x55]))
  assert.deepEqual(encodeFrame(Buffer.from([1, 2, 3])), Buffer.from([0, 3, 1, 2, 3]))
  assert.throws(
    () => encodeFrame(Buffer.alloc(65536)),
    (e: unknown) => isDhtnetError(e, 'INVALID_ARGUMENT'),
  )
})

test('TLS record framer: one record per frame, whatever the write boundaries', async () => {
  const { TlsRecordFramer } = await import('../src/transport/ice-tcp/record-framer.js')
  const record = (type: number, n: number) => Buffer.concat([Buffer.from([type, 3, 3, n >> 8, n & 0xff]), randomBytes(n)])
  const records = [record(22, 336), record(20, 1), record(23, 16401), record(23, 0), record(23, 29), record(21, 19)]
  const stream = Buffer.concat(records)
  const expected = Buffer.concat(records.map((r) => encodeFrame(r)))
  for (const cut of [1, 2, 3, 5, 7, 100, 4096, stream.length]) {
    const framer = new TlsRecordFramer()
    const out: Buffer[] = []
    for (let i = 0; i < stream.length; i += cut) out.push(framer.frame(stream.subarray(i, i + cut)))
    assert.deepEqual(Buffer.concat(out), expected, `cut ${cut}`)
  }
  // and the decoder gets the records back one per frame
  const d = new FrameDecoder()
  d.push(expected)
  assert.deepEqual(drain(d), records)
})

test('TLS record framer: a record longer than a frame (not produced by TLS) is split at 65535', async () => {
  const { TlsRecordFramer } = await import('../src/transport/ice-tcp/record-framer.js')
  const big = Buffer.concat([Buffer.from([23, 3, 3, 0xff, 0xff]), randomBytes(65535)])
  const d = new FrameDecoder()
  d.push(new TlsRecordFramer().frame(big))
  const out = drain(d)
  assert.deepEqual(
    out.map((f) => f.length),
    [65535, 5],
  )
  assert.deepEqual(Buffer.concat(out), big)
})
