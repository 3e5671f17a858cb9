// DhtnetMux against the decrypted MultiplexedSocket streams of real C++ dnc, dsh and dvpn sessions
// (fixtures/dhtnet-captures): fed the bytes a C++ peer sent, it sees the same events; driven through the same
// events, it writes the bytes the C++ peer wrote.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DhtnetMux, type DhtnetChannel } from '../src/mux/dhtnet/index.js'
import { ScriptedStream } from './helpers/byte-streams.js'
import { loadCapture, loadPayload, splitBySizes, type Capture, type CapturedDirection, type Scenario } from './helpers/dhtnet-mux-captures.js'
import { rng } from './helpers/fuzz.js'

const VERSION_FRAME = Buffer.from('92cdffffc40481a17601', 'hex')
const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

const NAMES: Record<Scenario, string> = { dnc: 'nc://127.0.0.1:5602', dsh: 'sh', dvpn: 'dvpn://' }

/** The data a direction carries on its channel (frames with data on 0x8000), and whether it ends with EOF. */
function channelData(dir: CapturedDirection): { data: Buffer; writes: Buffer[]; eof: boolean } {
  const frames = dir.frames.filter((f) => f.channel === 0x8000)
  const writes = frames.filter((f) => f.data.length > 0).map((f) => f.data)
  return { data: Buffer.concat(writes), writes, eof: frames.some((f) => f.data.length === 0) }
}

/** Split a MultiplexedSocket stream into frames (an independent reader: fixarray 2, uint channel, bin8/16 data). */
function splitFrames(bytes: Buffer): Buffer[] {
  const out: Buffer[] = []
  let off = 0
  while (off < bytes.length) {
    const start = off
    assert.equal(bytes[off++], 0x92, `frame at ${start} starts with fixarray(2)`)
    const c = bytes[off]!
    off += c < 0x80 ? 1 : c === 0xcc ? 2 : c === 0xcd ? 3 : assert.fail(`channel format 0x${c.toString(16)}`)
    const b = bytes[off]!
    const len = b === 0xc4 ? bytes[off + 1]! : b === 0xc5 ? bytes.readUInt16BE(off + 1) : assert.fail(`data format 0x${b.toString(16)}`)
    off += (b === 0xc4 ? 2 : 3) + len
    out.push(bytes.subarray(start, off))
  }
  assert.equal(off, bytes.length, 'the stream ends on a frame boundary')
  return out
}

/**
 * DHTNet does not order the version message against the first request (the C++ client sent its REQUEST first in
 * every capture; ours sends the version as it starts): take the version frame out of both streams, checking it is
 * there exactly once and before any data frame, and compare the rest byte for byte.
 */
function assertSameStream(ours: Buffer, captured: Buffer, what: string): void {
  const normalise = (bytes: Buffer, who: string): Buffer => {
    const frames = splitFrames(bytes)
    const at = frames.findIndex((f) => f.equals(VERSION_FRAME))
    assert.ok(at >= 0, `${what}: ${who} sent its version`)
    assert.equal(frames.filter((f) => f.equals(VERSION_FRAME)).length, 1, `${what}: ${who} sent one version`)
    assert.ok(
      frames.slice(0, at).every((f) => f[1] === 0),
      `${what}: ${who} sent nothing but requests before its version`,
    )
    return Buffer.concat(frames.filter((_, i) => i !== at))
  }
  const a = normalise(ours, 'ours')
  const b = normalise(captured, 'C++')
  assert.equal(a.length, b.length, `${what}: same length`)
  assert.ok(a.equals(b), `${what}: identical bytes`)
}

interface Observed {
  channels: DhtnetChannel[]
  data: Buffer[]
  ended: boolean
}

function observe(mux: DhtnetMux): Observed {
  const seen: Observed = { channels: [], data: [], ended: false }
  mux.on('channel', (ch: DhtnetChannel) => {
    seen.channels.push(ch)
    ch.on('data', (d: Buffer) => seen.data.push(Buffer.from(d)))
    ch.on('end', () => (seen.ended = true))
    ch.on('error', () => {})
  })
  return seen
}

function chunkings(dir: CapturedDirection, seed: number): Array<[string, Buffer[]]> {
  const next = rng(seed)
  const random: Buffer[] = []
  for (let off = 0; off < dir.bytes.length;) {
    const n = Math.min(dir.bytes.length - off, 1 + (next() % 40000 < 20000 ? next() % 16 : next() % 40000))
    random.push(dir.bytes.subarray(off, off + n))
    off += n
  }
  const bytewise = dir.bytes.length <= 2000 ? [...dir.bytes].map((b) => Buffer.from([b])) : random
  return [
    ['as the TLS records came', splitBySizes(dir.bytes, dir.recordSizes)],
    ['in random pieces', random],
    ['one byte at a time', bytewise],
  ]
}

for (const scenario of ['dnc', 'dsh', 'dvpn'] as const) {
  const capture: Capture = loadCapture(scenario)
  const fromClient = channelData(capture.client)
  const fromServer = channelData(capture.server)

  test(`${scenario}: fed the C++ client's bytes, our responder sees its version, the request, the data and the EOF`, async () => {
    if (scenario === 'dnc') assert.ok(fromClient.data.equals(loadPayload()), 'dnc carried payload.bin')
    if (scenario === 'dsh') assert.equal(fromClient.data.toString(), 'echo hello-dsh; exit\n')
    for (const [how, chunks] of chunkings(capture.client, 7)) {
      const stream = new ScriptedStream()
      const mux = new DhtnetMux({ stream, initiator: false, keepaliveIntervalMs: 0 })
      const seen = observe(mux)
      const names: string[] = []
      mux.on('channel', (ch: DhtnetChannel) => names.push(ch.name))
      for (const c of chunks) stream.feed(c)
      for (let i = 0; i < 5; i++) await tick()
      assert.equal(mux.peerProtocolVersion, 1, `${how}: version seen`)
      assert.deepEqual(names, [NAMES[scenario]], `${how}: one request, with its name`)
      assert.equal(seen.channels[0]!.channelId, 0x8000)
      assert.equal(seen.channels[0]!.initiator, false)
      assert.ok(Buffer.concat(seen.data).equals(fromClient.data), `${how}: the channel's bytes`)
      assert.equal(seen.ended, fromClient.eof, `${how}: EOF ${fromClient.eof ? 'seen' : 'not sent'}`)
      const s = mux.stats()
      assert.equal(s.droppedFrames + s.skippedObjects + s.ignoredMessages, 0, `${how}: nothing dropped`)
      assert.equal(mux.bytesIn, capture.client.bytes.length)
      // what we answered: our version and the ACCEPT, the bytes the C++ server wrote
      const answer = splitFrames(stream.written())
      assert.ok(answer[0]!.equals(VERSION_FRAME))
      assert.ok(answer[1]!.equals(capture.server.frames.find((f) => f.kind === 'channel ACCEPT')!.bytes), `${how}: our ACCEPT`)
      mux.close()
    }
  })

  test(`${scenario}: fed the C++ server's bytes, our initiator's request is accepted and gets the data and the EOF`, async () => {
    for (const [how, chunks] of chunkings(capture.server, 11)) {
      const stream = new ScriptedStream()
      const mux = new DhtnetMux({ stream, initiator: true, keepaliveIntervalMs: 0 })
      const opening = mux.openChannel(NAMES[scenario])
      // our REQUEST is the C++ client's, byte for byte
      assert.ok(splitFrames(stream.written()).some((f) => f.equals(capture.client.frames.find((x) => x.kind === 'channel REQUEST')!.bytes)))
      for (const c of chunks) stream.feed(c)
      const ch = await opening
      assert.equal(ch.channelId, 0x8000)
      assert.equal(ch.name, NAMES[scenario])
      const data: Buffer[] = []
      let ended = false
      ch.on('data', (d: Buffer) => data.push(Buffer.from(d)))
      ch.on('end', () => (ended = true))
      for (let i = 0; i < 5; i++) await tick()
      assert.equal(mux.peerProtocolVersion, 1)
      assert.ok(Buffer.concat(data).equals(fromServer.data), `${how}: the channel's bytes`)
      assert.equal(ended, fromServer.eof, `${how}: EOF ${fromServer.eof ? 'seen' : 'not sent'}`)
      if (scenario === 'dvpn') assert.equal(data.length >= 1 && Buffer.concat(data).subarray(0, 1)[0], 0x84, 'the metadata map comes first')
      const s = mux.stats()
      assert.equal(s.droppedFrames + s.skippedObjects + s.ignoredMessages, 0)
      mux.close()
    }
  })

  test(`${scenario}: driven through the same events, our initiator writes the C++ client's bytes`, async () => {
    const stream = new ScriptedStream()
    const mux = new DhtnetMux({ stream, initiator: true, keepaliveIntervalMs: 0 })
    const opening = mux.openChannel(NAMES[scenario])
    // the server's version and ACCEPT
    const serverFrames = capture.server.frames
    const acceptAt = serverFrames.findIndex((f) => f.kind === 'channel ACCEPT')
    for (const f of serverFrames.slice(0, acceptAt + 1)) stream.feed(f.bytes)
    const ch = await opening
    ch.on('data', () => {})
    // the client's writes: dnc read its stdin in 64 KiB pieces (65536 + 34464); dsh and dvpn one write per frame
    const writes = scenario === 'dnc' ? [fromClient.data.subarray(0, 65536), fromClient.data.subarray(65536)] : fromClient.writes
    for (const w of writes) ch.write(w)
    await tick() // the writes leave before the server's answer arrives, as in the capture
    for (const f of serverFrames.slice(acceptAt + 1)) stream.feed(f.bytes)
    for (let i = 0; i < 5; i++) await tick()
    if (fromClient.eof) ch.end()
    for (let i = 0; i < 5; i++) await tick()
    assertSameStream(stream.written(), capture.client.bytes, `${scenario} client → server`)
    assert.equal(mux.bytesOut, capture.client.bytes.length)
    mux.close()
  })

  test(`${scenario}: driven through the same events, our responder writes the C++ server's bytes`, async () => {
    const stream = new ScriptedStream()
    const mux = new DhtnetMux({ stream, initiator: false, keepaliveIntervalMs: 0 })
    const accepted = new Promise<DhtnetChannel>((resolve) => mux.once('channel', resolve))
    const clientFrames = capture.client.frames
    const firstData = clientFrames.findIndex((f) => f.channel === 0x8000)
    for (const f of clientFrames.slice(0, firstData)) stream.feed(f.bytes)
    const ch = await accepted
    const received: Buffer[] = []
    ch.on('data', (d: Buffer) => received.push(d))
    ch.on('error', () => {})
    for (const f of clientFrames.slice(firstData)) if (f.data.length > 0) stream.feed(f.bytes)
    for (let i = 0; i < 5; i++) await tick()
    // the dnc server echoed what its TCP service returned, read in 64 KiB pieces
    const writes = scenario === 'dnc' ? [fromServer.data.subarray(0, 65536), fromServer.data.subarray(65536)] : fromServer.writes
    for (const w of writes) ch.write(w)
    for (let i = 0; i < 5; i++) await tick()
    if (fromServer.eof) ch.end()
    // the client's EOF, when it sent one, comes last (the dnc server answers none)
    if (fromClient.eof) stream.feed(clientFrames.at(-1)!.bytes)
    for (let i = 0; i < 5; i++) await tick()
    assertSameStream(stream.written(), capture.server.bytes, `${scenario} server → client`)
    // the responder's order is the C++ server's too (version, then ACCEPT): no normalisation was needed
    assert.ok(stream.written().equals(capture.server.bytes))
    mux.close()
  })
}
