// Message mode of DHTNet channels (DhtnetChannel.setMessageMode): each frame the peer sends is one 'message', whatever
// the chunking of the byte stream, checked against the captured C++ dvpn session (one IP packet per frame) and
// against frames cut at every byte; oversized frames are dropped without being buffered; EOF still ends the channel.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DhtnetMux, type DhtnetChannel } from '../src/mux/dhtnet/index.js'
import { supportsMessageMode } from '../src/mux/mux.js'
import { ScriptedStream } from './helpers/byte-streams.js'
import { loadCapture, splitBySizes } from './helpers/dhtnet-mux-captures.js'
import { rng } from './helpers/fuzz.js'

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

/** [0x8000, bin(data)] as C++ writes it (bin8 below 256 bytes, bin16 above). */
function dataFrame(data: Buffer, channel = 0x8000): Buffer {
  const head =
    data.length < 256
      ? Buffer.from([0x92, 0xcd, channel >> 8, channel & 0xff, 0xc4, data.length])
      : Buffer.from([0x92, 0xcd, channel >> 8, channel & 0xff, 0xc5, data.length >> 8, data.length & 0xff])
  return Buffer.concat([head, data])
}

async function openedInitiator(): Promise<{ stream: ScriptedStream; mux: DhtnetMux; ch: DhtnetChannel }> {
  const capture = loadCapture('dvpn')
  const stream = new ScriptedStream()
  const mux = new DhtnetMux({ stream, initiator: true, keepaliveIntervalMs: 0 })
  const opening = mux.openChannel('dvpn://')
  const frames = capture.server.frames
  for (const f of frames.slice(0, frames.findIndex((f) => f.kind === 'channel ACCEPT') + 1)) stream.feed(f.bytes)
  const ch = await opening
  return { stream, mux, ch }
}

test('dvpn capture: in message mode every frame of the C++ server is one message, however the bytes were cut', async () => {
  const capture = loadCapture('dvpn')
  const writes = capture.server.frames.filter((f) => f.channel === 0x8000 && f.data.length > 0).map((f) => f.data)
  assert.equal(writes.length, 6, 'the metadata map, then five packets (dvpn.md rows 4, 5, 8, 10, 12, 13)')
  const next = rng(5)
  const random: Buffer[] = []
  for (let off = 0; off < capture.server.bytes.length;) {
    const n = Math.min(capture.server.bytes.length - off, 1 + (next() % 23))
    random.push(capture.server.bytes.subarray(off, off + n))
    off += n
  }
  const chunkings: Array<[string, Buffer[]]> = [
    ['as the TLS records came', splitBySizes(capture.server.bytes, capture.server.recordSizes)],
    ['in random pieces', random],
    ['one byte at a time', [...capture.server.bytes].map((b) => Buffer.from([b]))],
  ]
  for (const [how, chunks] of chunkings) {
    const stream = new ScriptedStream()
    const mux = new DhtnetMux({ stream, initiator: true, keepaliveIntervalMs: 0 })
    const opening = mux.openChannel('dvpn://')
    // the ACCEPT comes in the first chunks; the channel must be in message mode before its data arrives
    const acceptEnd = capture.server.frames.slice(0, capture.server.frames.findIndex((f) => f.kind === 'channel ACCEPT') + 1).reduce((n, f) => n + f.bytes.length, 0)
    const all = Buffer.concat(chunks)
    stream.feed(all.subarray(0, acceptEnd))
    const ch = await opening
    assert.ok(supportsMessageMode(ch), 'a DHTNet channel offers message mode')
    ch.setMessageMode()
    const messages: Buffer[] = []
    ch.on('message', (m: Buffer) => messages.push(Buffer.from(m)))
    const data: Buffer[] = []
    ch.on('data', (d: Buffer) => data.push(d))
    // the rest in this chunking's pieces
    let off = 0
    for (const c of chunks) {
      const end = off + c.length
      if (end > acceptEnd) stream.feed(c.subarray(Math.max(0, acceptEnd - off)))
      off = end
    }
    for (let i = 0; i < 5; i++) await tick()
    assert.equal(messages.length, writes.length, `${how}: one message per frame`)
    for (let i = 0; i < writes.length; i++) assert.ok(messages[i]!.equals(writes[i]!), `${how}: message ${i} is the frame's data`)
    assert.equal(messages[0]![0], 0x84, `${how}: the metadata map first`)
    assert.equal(data.length, 0, `${how}: nothing on the readable side`)
    assert.equal(ch.droppedMessages, 0)
    mux.close()
  }
})

test('message mode: frames cut at every byte boundary come out whole; an oversized frame is dropped and counted', async () => {
  const { stream, mux, ch } = await openedInitiator()
  ch.setMessageMode(1500)
  const messages: Buffer[] = []
  ch.on('message', (m: Buffer) => messages.push(Buffer.from(m)))
  const small = Buffer.alloc(300, 7)
  const big = Buffer.alloc(2000, 9) // over the bound: dropped
  const last = Buffer.alloc(1500, 3)
  const bytes = Buffer.concat([dataFrame(small), dataFrame(big), dataFrame(last)])
  for (let i = 0; i < bytes.length; i++) stream.feed(bytes.subarray(i, i + 1))
  for (let i = 0; i < 5; i++) await tick()
  assert.equal(messages.length, 2)
  assert.ok(messages[0]!.equals(small))
  assert.ok(messages[1]!.equals(last))
  assert.equal(ch.droppedMessages, 1)
  // the peer's EOF still ends the channel
  let ended = false
  ch.on('end', () => (ended = true))
  ch.resume()
  stream.feed(Buffer.from('92cd8000c400', 'hex'))
  for (let i = 0; i < 5; i++) await tick()
  assert.equal(ended, true)
  mux.close()
})

test('message mode: each of our writes is one frame for the peer', async () => {
  const { stream, mux, ch } = await openedInitiator()
  ch.setMessageMode()
  const before = stream.written().length
  const packets = [Buffer.alloc(84, 1), Buffer.alloc(1400, 2), Buffer.alloc(48, 3)]
  for (const p of packets) ch.write(p)
  for (let i = 0; i < 5; i++) await tick()
  const out = stream.written().subarray(before)
  assert.ok(out.equals(Buffer.concat(packets.map((p) => dataFrame(p)))), 'frames as a C++ dvpn writes them')
  assert.throws(() => ch.setMessageMode(0), /positive integer/)
  mux.close()
})
