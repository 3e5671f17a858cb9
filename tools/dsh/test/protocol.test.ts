/**
 * dsh's session protocol: every frame round-trips; malformed input is a ProtocolError (never a crash, never more
 * than one frame buffered); a fuzz of random and mutated valid streams keeps the decoder bounded in time and memory.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import {
  FrameDecoder,
  FrameType,
  HEADER_BYTES,
  MAX_PAYLOAD,
  ProtocolError,
  encodeAccept,
  encodeData,
  encodeEof,
  encodeExit,
  encodeHello,
  encodeRefuse,
  encodeResize,
  encodeSignal,
  type Frame,
  type SessionHello,
} from '../src/protocol.js'

const hello: SessionHello = { v: 1, binary: 'sh', args: ['-c', 'echo "a b"; exit 3'], env: { LANG: 'C.UTF-8' }, pty: { term: 'xterm-256color', rows: 30, cols: 100 } }

function decodeAll(bytes: Buffer, chunk = bytes.length): Frame[] {
  const d = new FrameDecoder()
  const out: Frame[] = []
  for (let i = 0; i < bytes.length; i += chunk) out.push(...d.push(bytes.subarray(i, i + chunk)))
  assert.equal(d.pendingBytes, 0)
  return out
}

test('every frame round-trips, whole or one byte at a time', () => {
  const stream = Buffer.concat([
    encodeHello(hello),
    encodeHello({ ...hello, binary: '', args: [], env: {}, pty: null }),
    encodeAccept({ v: 1, pid: 4242, ignoredEnv: ['FOO'] }),
    encodeRefuse('"ls" is not in this server\'s authorized_binaries'),
    ...encodeData(FrameType.STDIN, Buffer.from('input')),
    ...encodeData(FrameType.STDOUT, Buffer.alloc(100_000, 7)),
    ...encodeData(FrameType.STDERR, Buffer.from([0, 255, 10])),
    encodeEof(1),
    encodeResize(50, 200),
    encodeSignal('INT'),
    encodeExit({ kind: 'exited', code: 3 }),
    encodeExit({ kind: 'signal', signal: 9, name: 'KILL' }),
  ])
  for (const chunk of [stream.length, 1, 7, 4096]) {
    const frames = decodeAll(stream, chunk)
    assert.deepEqual(frames[0], { type: FrameType.HELLO, hello })
    assert.equal(frames[1]!.type, FrameType.HELLO)
    assert.deepEqual(frames[2], { type: FrameType.ACCEPT, accept: { v: 1, pid: 4242, ignoredEnv: ['FOO'] } })
    assert.deepEqual(frames[3], { type: FrameType.REFUSE, reason: '"ls" is not in this server\'s authorized_binaries' })
    assert.deepEqual(frames[4], { type: FrameType.STDIN, data: Buffer.from('input') })
    // 100,000 bytes cut into 32 KiB data frames, bytes intact
    const out = frames.filter((f) => f.type === FrameType.STDOUT).map((f) => (f as { data: Buffer }).data)
    assert.equal(out.length, 4)
    assert.deepEqual(Buffer.concat(out), Buffer.alloc(100_000, 7))
    const rest = frames.slice(9)
    assert.deepEqual(rest, [
      { type: FrameType.STDERR, data: Buffer.from([0, 255, 10]) },
      { type: FrameType.EOF, stream: 1 },
      { type: FrameType.RESIZE, rows: 50, cols: 200 },
      { type: FrameType.SIGNAL, signal: 'INT' },
      { type: FrameType.EXIT, status: { kind: 'exited', code: 3 } },
      { type: FrameType.EXIT, status: { kind: 'signal', signal: 9, name: 'KILL' } },
    ])
  }
})

test('malformed frames are protocol errors that say what is wrong', () => {
  const frame = (type: number, payload: Buffer | string): Buffer => {
    const p = Buffer.from(payload)
    const h = Buffer.alloc(HEADER_BYTES)
    h[0] = type
    h.writeUInt32BE(p.length, 1)
    return Buffer.concat([h, p])
  }
  const json = (o: unknown): Buffer => frame(FrameType.HELLO, JSON.stringify(o))
  const cases: Array<[Buffer, RegExp]> = [
    [Buffer.from([0, 0, 0, 0, 0]), /unknown frame type 0/],
    [Buffer.from([99, 0, 0, 0, 0]), /unknown frame type 99/],
    [Buffer.from([5, 0xff, 0xff, 0xff, 0xff]), /exceeds 65536/],
    [frame(FrameType.HELLO, '{not json'), /not valid JSON/],
    [json([1, 2]), /must be a JSON object/],
    [json({ ...hello, v: 2 }), /unsupported dsh protocol version 2/],
    [json({ ...hello, binary: 5 }), /HELLO.binary/],
    [json({ ...hello, binary: 'a\0b' }), /without NUL/],
    [json({ ...hello, args: 'ls' }), /HELLO.args must be a list/],
    [json({ ...hello, args: Array(5000).fill('x') }), /at most 4096/],
    [json({ ...hello, env: { 'BAD-NAME': 'x' } }), /not a variable name/],
    [json({ ...hello, env: { A: 1 } }), /HELLO.env.A must be a string/],
    [json({ ...hello, pty: { term: 'x; rm -rf /', rows: 1, cols: 1 } }), /pty.term must be a terminal name/],
    [json({ ...hello, pty: { term: 'xterm', rows: 0, cols: 80 } }), /pty.rows must be an integer/],
    [json({ ...hello, pty: { term: 'xterm', rows: 24, cols: 1e9 } }), /pty.cols must be an integer/],
    [frame(FrameType.EOF, Buffer.from([3])), /EOF must name stream/],
    [frame(FrameType.RESIZE, Buffer.from([1, 2, 3])), /RESIZE must be 4 bytes/],
    [frame(FrameType.SIGNAL, 'SEGV'), /not a signal a client may send/],
    [frame(FrameType.EXIT, Buffer.from([2, 0])), /EXIT: unknown kind/],
    [frame(FrameType.ACCEPT, '{}'), /ACCEPT must be/],
  ]
  for (const [bytes, message] of cases) {
    const d = new FrameDecoder()
    assert.throws(
      () => d.push(bytes),
      (err: unknown) => err instanceof ProtocolError && message.test(err.message),
      message.source,
    )
    // a failed decoder stays failed
    assert.throws(() => d.push(Buffer.from([1])), ProtocolError)
  }
})

test('a declared length over the bound fails before the payload is buffered', () => {
  const d = new FrameDecoder()
  const head = Buffer.alloc(HEADER_BYTES)
  head[0] = FrameType.STDOUT
  head.writeUInt32BE(MAX_PAYLOAD + 1, 1)
  assert.throws(() => d.push(head), /exceeds/)
  // the largest legal frame decodes; one byte short waits
  const ok = new FrameDecoder()
  const big = Buffer.alloc(HEADER_BYTES + MAX_PAYLOAD)
  big[0] = FrameType.STDOUT
  big.writeUInt32BE(MAX_PAYLOAD, 1)
  assert.equal(ok.push(big.subarray(0, big.length - 1)).length, 0)
  assert.equal(ok.pendingBytes, big.length - 1)
  assert.equal(ok.push(big.subarray(big.length - 1)).length, 1)
})

test('fuzz: 20,000 random and mutated streams never crash the decoder, stay bounded in memory and time', () => {
  const valid = Buffer.concat([
    encodeHello(hello),
    encodeAccept({ v: 1, pid: 1, ignoredEnv: [] }),
    ...encodeData(FrameType.STDOUT, randomBytes(3000)),
    encodeResize(10, 20),
    encodeSignal('TERM'),
    encodeEof(0),
    encodeExit({ kind: 'signal', signal: 15, name: 'TERM' }),
  ])
  const started = Date.now()
  const heapBefore = process.memoryUsage().heapUsed
  let frames = 0
  let errors = 0
  for (let i = 0; i < 20_000 && Date.now() - started < 60_000; i++) {
    let input: Buffer
    if (i % 2 === 0) {
      input = randomBytes(1 + (i % 700))
    } else {
      input = Buffer.from(valid)
      const flips = 1 + (i % 8)
      for (let k = 0; k < flips; k++) input[(i * 7919 + k * 104729) % input.length] = (i * 31 + k) & 0xff
      if (i % 3 === 0) input = input.subarray(0, (i * 13) % input.length)
    }
    const d = new FrameDecoder()
    try {
      for (let off = 0; off < input.length; off += 97) {
        frames += d.push(input.subarray(off, off + 97)).length
        assert.ok(d.pendingBytes <= HEADER_BYTES + MAX_PAYLOAD + 97)
      }
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `unexpected ${(err as Error).stack}`)
      errors++
    }
  }
  assert.ok(frames > 0 && errors > 0, `frames ${frames}, errors ${errors}`)
  const growth = process.memoryUsage().heapUsed - heapBefore
  assert.ok(growth < 64 * 1024 * 1024, `heap grew ${growth} bytes`)
})
