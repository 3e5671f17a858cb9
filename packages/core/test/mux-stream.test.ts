// StreamMessageTransport: length-prefixed messages over a byte stream (the framing our native Multiplexer needs
// over a TLS socket), against a scripted stream, an in-memory pair and real loopback TLS.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { isDhtnetError } from '../src/errors.js'
import { StreamMessageTransport } from '../src/mux/native/stream-transport.js'
import { createDuplexPair, ScriptedStream } from './helpers/byte-streams.js'
import { createTlsPair } from './helpers/tls-pair.js'
import { rng } from './helpers/fuzz.js'

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const keepLoop = setInterval(() => {}, 1000)
after(() => clearInterval(keepLoop))

function framed(...messages: Buffer[]): Buffer {
  return Buffer.concat(
    messages.flatMap((m) => {
      const p = Buffer.alloc(4)
      p.writeUInt32BE(m.length)
      return [p, m]
    }),
  )
}

test('messages of every size come out whole, however the stream is cut; a message inside one chunk is a view', async () => {
  const messages = [Buffer.alloc(0), Buffer.from('a'), randomBytes(3), randomBytes(16383), randomBytes(16384), randomBytes(70000), randomBytes(262144)]
  const bytes = framed(...messages)
  const next = rng(42)
  const cuts: Array<[string, Buffer[]]> = [
    ['whole', [bytes]],
    ['one byte at a time (small part)', [...bytes.subarray(0, 40)].map((b): Buffer => Buffer.from([b])).concat([bytes.subarray(40)])],
    [
      'random pieces',
      (() => {
        const out: Buffer[] = []
        for (let off = 0; off < bytes.length;) {
          const n = Math.min(bytes.length - off, 1 + (next() % 9000))
          out.push(bytes.subarray(off, off + n))
          off += n
        }
        return out
      })(),
    ],
  ]
  for (const [how, chunks] of cuts) {
    const stream = new ScriptedStream()
    const t = new StreamMessageTransport(stream)
    const got: Buffer[] = []
    t.on('message', (m: Buffer) => got.push(Buffer.from(m)))
    await tick()
    for (const c of chunks) stream.feed(c)
    await tick()
    assert.equal(got.length, messages.length, how)
    messages.forEach((m, i) => assert.ok(got[i]!.equals(m), `${how}: message ${i}`))
    assert.equal(t.messagesIn, messages.length)
    assert.equal(t.bytesIn, bytes.length)
    t.close()
  }
  // zero copy: a message whole inside a chunk is a view of that chunk
  const stream = new ScriptedStream()
  const t = new StreamMessageTransport(stream)
  await tick()
  const chunk = framed(Buffer.from('view me'))
  const seen = new Promise<Buffer>((r) => t.once('message', r))
  stream.feed(chunk)
  assert.equal((await seen).buffer, chunk.buffer)
  t.close()
})

test('what send() writes: u32 BE length then the body; a tick of sends leaves in one stream write', async () => {
  const stream = new ScriptedStream()
  const t = new StreamMessageTransport(stream)
  assert.equal(t.reliable, true)
  assert.equal(t.maxMessageSize, 262144)
  t.send(Buffer.from('hi'))
  t.send(Buffer.alloc(0))
  t.send(Buffer.alloc(20000, 7))
  await tick()
  assert.ok(stream.written().equals(framed(Buffer.from('hi'), Buffer.alloc(0), Buffer.alloc(20000, 7))))
  assert.equal(stream.batches, 1, 'corked: the four buffers left in one writev')
  assert.equal(t.bytesOut, 4 + 2 + 4 + 4 + 20000)
  assert.throws(
    () => t.send(Buffer.alloc(262145)),
    (err) => isDhtnetError(err, 'MESSAGE_TOO_LARGE'),
  )
  t.close()
  assert.throws(
    () => t.send(Buffer.from('x')),
    (err) => isDhtnetError(err, 'TRANSPORT_CLOSED'),
  )
})

test('a message over maxMessageSize closes with PROTOCOL_ERROR before anything is allocated; the stream is destroyed', async () => {
  const stream = new ScriptedStream()
  const t = new StreamMessageTransport({ stream, maxMessageSize: 1000 })
  await tick()
  const closed = new Promise<Error | undefined>((r) => t.once('close', r))
  let messages = 0
  t.on('message', () => messages++)
  stream.feed(framed(Buffer.alloc(1000)))
  stream.feed(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]))
  const err = await closed
  assert.ok(isDhtnetError(err, 'PROTOCOL_ERROR'), String(err))
  assert.equal(messages, 1)
  await tick()
  assert.equal(stream.destroyed, true)
})

test("backpressure: send() is false above the high-water mark, 'drain' follows; a peer that does not read stops our reading", async () => {
  const [x, y] = createDuplexPair(64 * 1024)
  const a = new StreamMessageTransport({ stream: x, highWaterMark: 256 * 1024, maxBufferedBytes: 1024 * 1024 })
  const b = new StreamMessageTransport(y)
  let got = 0
  b.on('message', (m: Buffer) => (got += m.length))
  const msg = Buffer.alloc(64 * 1024, 1)
  let sent = 0
  while (a.send(msg)) sent += msg.length
  sent += msg.length
  assert.ok(a.bufferedAmount >= 256 * 1024, `bufferedAmount ${a.bufferedAmount}`)
  await once(a, 'drain')
  assert.ok(a.bufferedAmount < 256 * 1024)
  await sleep(20)
  assert.equal(got, sent)

  // b's application stops taking messages: here, b's stream is paused, so a's buffer grows beyond maxBufferedBytes
  y.pause()
  y.removeAllListeners('data')
  for (let i = 0; i < 40; i++) a.send(msg)
  await tick()
  x.push(framed(Buffer.from('incoming')))
  const incoming: Buffer[] = []
  a.on('message', (m: Buffer) => incoming.push(m))
  await sleep(20)
  assert.equal(incoming.length, 0, 'while the peer reads nothing, nothing is read from it')
  assert.equal(x.isPaused(), true)
  a.close()
  b.close()
})

test("close: once; the peer's end closes quietly, an end in the middle of a message with TRANSPORT_CLOSED; the stream ends", async () => {
  const stream = new ScriptedStream()
  const t = new StreamMessageTransport(stream)
  await tick()
  let closes = 0
  const closed = new Promise<Error | undefined>((r) => t.on('close', (e?: Error) => (closes++, r(e))))
  stream.feedEnd()
  assert.equal(await closed, undefined)
  t.close()
  assert.equal(closes, 1)
  await tick()
  assert.equal(stream.writableEnded, true)

  const s2 = new ScriptedStream()
  const t2 = new StreamMessageTransport(s2)
  await tick()
  const closed2 = new Promise<Error | undefined>((r) => t2.once('close', r))
  s2.feed(Buffer.from([0, 0, 0, 10, 1, 2]))
  s2.feedEnd()
  assert.ok(isDhtnetError(await closed2, 'TRANSPORT_CLOSED'))

  const dead = new ScriptedStream()
  dead.destroy()
  const t3 = new StreamMessageTransport(dead)
  assert.ok(isDhtnetError(await new Promise<Error | undefined>((r) => t3.once('close', r)), 'TRANSPORT_CLOSED'))
})

test('over real TLS: 10,000 messages of random sizes each way arrive whole and in order', async () => {
  const tls = await createTlsPair()
  const a = new StreamMessageTransport(tls.server)
  const b = new StreamMessageTransport(tls.client)
  const next = rng(7)
  const sizes = Array.from({ length: 10000 }, () => (next() % 10 === 0 ? next() % 262145 : next() % 2000))
  const expect = (t: StreamMessageTransport): Promise<void> =>
    new Promise((resolve, reject) => {
      let i = 0
      t.on('message', (m: Buffer) => {
        try {
          assert.equal(m.length, sizes[i])
          if (m.length >= 4) assert.equal(m.readUInt32BE(0), i)
          if (++i === sizes.length) resolve()
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)))
        }
      })
    })
  const done = Promise.all([expect(a), expect(b)])
  const pump = async (t: StreamMessageTransport): Promise<void> => {
    for (let i = 0; i < sizes.length; i++) {
      const m = Buffer.alloc(sizes[i]!, i & 0xff)
      if (m.length >= 4) m.writeUInt32BE(i, 0)
      if (!t.send(m)) await once(t, 'drain')
    }
  }
  await Promise.all([pump(a), pump(b), done])
  a.close()
  b.close()
  await Promise.all([tls.client, tls.server].filter((s) => !s.closed).map((s) => once(s, 'close')))
  assert.equal(a.timers + b.timers, 0)
  tls.close()
})
