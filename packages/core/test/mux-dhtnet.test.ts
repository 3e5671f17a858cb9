// DhtnetMux protocol behaviour against a scripted peer: the test writes the peer's frames byte by byte and reads
// what the multiplexer answers.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { isDhtnetError } from '../src/errors.js'
import { DhtnetMux, type DhtnetChannel, type DhtnetMuxOptions } from '../src/mux/dhtnet/index.js'
import { encodeChannelRequest, encodeFrame, RequestState } from '../src/mux/dhtnet/wire.js'
import { ScriptedStream } from './helpers/byte-streams.js'

const VERSION = Buffer.from('81a17601', 'hex')
const VERSION_0 = Buffer.from('81a17600', 'hex')
const PING = Buffer.from('81a170c3', 'hex')
const PONG = Buffer.from('81a170c2', 'hex')
const tick = (): Promise<void> => new Promise((r) => setImmediate(r))
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
// the multiplexer's timers are unref'd (a real socket holds the loop open): hold it open while these tests run
const keepLoop = setInterval(() => {}, 1000)
after(() => clearInterval(keepLoop))

/** A mux on a scripted stream; resolves once the mux reads it (a stream starts flowing on the next tick). */
async function scripted(options: Partial<DhtnetMuxOptions> = {}): Promise<{ mux: DhtnetMux; peer: ScriptedStream }> {
  const peer = new ScriptedStream()
  const mux = new DhtnetMux({ stream: peer, initiator: false, keepaliveIntervalMs: 0, ...options })
  await tick()
  return { mux, peer }
}

/** The id of the last request we wrote. */
function lastRequestId(peer: ScriptedStream): number {
  const body = framesOut(peer)
    .filter(([c]) => c === 0)
    .at(-1)![1]
  // [name, id, state]: the state is the last byte, the id just before it (fixint, cc xx or cd xxxx)
  const end = body.length - 1
  if (body[end - 3] === 0xcd) return body.readUInt16BE(end - 2)
  if (body[end - 2] === 0xcc) return body[end - 1]!
  return body[end - 1]!
}

function request(name: string, id: number, state: number = RequestState.REQUEST): Buffer {
  return encodeFrame(0, encodeChannelRequest(Buffer.from(name), id, state))
}

/** The frames the multiplexer wrote, as [channel, data] (an independent reader of the wire format). */
function framesOut(peer: ScriptedStream): Array<[number, Buffer]> {
  const bytes = peer.written()
  const out: Array<[number, Buffer]> = []
  let off = 0
  while (off < bytes.length) {
    assert.equal(bytes[off++], 0x92)
    const c = bytes[off]!
    const channel = c < 0x80 ? c : c === 0xcc ? bytes[off + 1]! : bytes.readUInt16BE(off + 1)
    off += c < 0x80 ? 1 : c === 0xcc ? 2 : 3
    const b = bytes[off]!
    const len = b === 0xc4 ? bytes[off + 1]! : bytes.readUInt16BE(off + 1)
    off += b === 0xc4 ? 2 : 3
    out.push([channel, bytes.subarray(off, off + len)])
    off += len
  }
  return out
}

const answers = (peer: ScriptedStream): string[] =>
  framesOut(peer)
    .filter(([c]) => c === 0)
    .map(([, d]) => d.toString('hex'))

test('version first, then requests: ids from 0x0001 (responder) and 0x8000 (initiator), smallest msgpack forms', async () => {
  const { mux, peer } = await scripted()
  assert.deepEqual(framesOut(peer), [[0xffff, VERSION]], 'our version goes out at once, nothing waits for the peer')
  const opening = mux.openChannel('a')
  assert.deepEqual(framesOut(peer)[1], [0, encodeChannelRequest(Buffer.from('a'), 1, 0)])
  assert.equal(framesOut(peer)[1]![1].toString('hex'), '93a16101' + '00')
  peer.feed(request('a', 1, RequestState.ACCEPT))
  const ch = await opening
  assert.equal(ch.channelId, 1)
  assert.equal(ch.initiator, true)
  assert.deepEqual(ch.capabilities, { halfClose: false, resetReasons: false, perChannelFlowControl: false, datagrams: false })
  assert.equal(mux.peerProtocolVersion, undefined, 'the peer has not sent its version: nothing waited for it')
  mux.close()

  const init = await scripted({ initiator: true })
  const opening2 = init.mux.openChannel('b')
  init.peer.feed(encodeFrame(0xffff, VERSION))
  init.peer.feed(request('b', 0x8000, RequestState.ACCEPT))
  const ch2 = await opening2
  assert.equal(ch2.channelId, 0x8000)
  // channel 0x8000 packs as cd 80 00; data below 256 bytes as bin8, from 256 as bin16
  ch2.write(Buffer.alloc(255, 1))
  ch2.write(Buffer.alloc(256, 2))
  await tick()
  const out = init.peer.written()
  assert.ok(out.includes(Buffer.from('92cd8000c4ff0101', 'hex')))
  assert.ok(out.includes(Buffer.from('92cd8000c501000202', 'hex')))
  init.mux.close()
})

test("channel ids wrap at 0xffff and skip 0, 0xffff and ids in use (ours and the peer's)", async () => {
  const { mux, peer } = await scripted({ initiator: true })
  peer.feed(encodeFrame(0xffff, VERSION))
  mux.on('channel', (ch: DhtnetChannel) => ch.on('error', () => {}))
  // the peer takes 0x8001 first
  peer.feed(request('theirs', 0x8001))
  await tick()
  const opened: number[] = []
  for (let i = 0; i < 3; i++) {
    const p = mux.openChannel(`ours-${i}`)
    const id = lastRequestId(peer)
    peer.feed(request(`ours-${i}`, id, RequestState.ACCEPT))
    opened.push((await p).channelId)
  }
  assert.deepEqual(opened, [0x8000, 0x8002, 0x8003])
  mux.close()

  // wrap-around: a responder whose counter reaches 0xfffe goes on with 1, 2... skipping 0 and 0xffff
  const r = await scripted()
  ;(r.mux as unknown as { nextChannelId: number }).nextChannelId = 0xfffe
  const ids: number[] = []
  for (let i = 0; i < 3; i++) {
    void r.mux.openChannel(`w${i}`).catch(() => {})
    ids.push(lastRequestId(r.peer))
  }
  assert.deepEqual(ids, [0xfffe, 1, 2])
  r.mux.close()
})

test('requests: accepted with a listener, declined without; reserved and existing ids declined; async decisions', async () => {
  const { mux, peer } = await scripted({
    onChannelRequest: (name) => (name === 'later' ? new Promise((r) => setTimeout(() => r(true), 5)) : name !== 'nope'),
  })
  const accepted: DhtnetChannel[] = []
  mux.on('channel', (ch: DhtnetChannel) => accepted.push(ch))
  peer.feed(request('yes', 0x8000))
  peer.feed(request('nope', 0x8001))
  peer.feed(request('reserved', 0))
  peer.feed(request('reserved', 0xffff))
  peer.feed(request('again', 0x8000)) // exists already
  peer.feed(request('later', 0x8002))
  await sleep(20)
  assert.deepEqual(answers(peer), [
    encodeChannelRequest(Buffer.from('yes'), 0x8000, 1).toString('hex'),
    encodeChannelRequest(Buffer.from('nope'), 0x8001, 2).toString('hex'),
    encodeChannelRequest(Buffer.from('reserved'), 0, 2).toString('hex'),
    encodeChannelRequest(Buffer.from('reserved'), 0xffff, 2).toString('hex'),
    encodeChannelRequest(Buffer.from('again'), 0x8000, 2).toString('hex'),
    encodeChannelRequest(Buffer.from('later'), 0x8002, 1).toString('hex'),
  ])
  assert.deepEqual(
    accepted.map((c) => [c.name, c.channelId, c.initiator]),
    [
      ['yes', 0x8000, false],
      ['later', 0x8002, false],
    ],
  )
  mux.close()

  // no handler and no listener: declined
  const bare = await scripted()
  bare.peer.feed(request('x', 5))
  assert.deepEqual(answers(bare.peer), [encodeChannelRequest(Buffer.from('x'), 5, 2).toString('hex')])
  bare.mux.close()
})

test('openChannel: CHANNEL_DECLINED, TIMEOUT, ABORTED, BAD_CHANNEL_NAME, TOO_MANY_CHANNELS, CONNECTION_CLOSED; datagrams unsupported', async () => {
  const { mux, peer } = await scripted({ maxChannels: 3 })
  const declined = mux.openChannel('no')
  peer.feed(request('no', 1, RequestState.DECLINE))
  await assert.rejects(declined, (err) => isDhtnetError(err, 'CHANNEL_DECLINED') && /"no"/.test((err as Error).message))

  await assert.rejects(mux.openChannel('slow', { timeoutMs: 30 }), (err) => isDhtnetError(err, 'TIMEOUT'))
  const ac = new AbortController()
  const aborted = mux.openChannel('aborted', { signal: ac.signal })
  ac.abort()
  await assert.rejects(aborted, (err) => isDhtnetError(err, 'ABORTED'))
  assert.equal(mux.stats().abandonedOpens, 2)
  // the peer accepts the channel we gave up on: it is closed at once with an EOF; a late DECLINE just frees the id
  peer.feed(request('slow', 2, RequestState.ACCEPT))
  peer.feed(request('aborted', 3, RequestState.DECLINE))
  assert.deepEqual(framesOut(peer).at(-1), [2, Buffer.alloc(0)])
  assert.equal(mux.stats().abandonedOpens, 0)

  await assert.rejects(mux.openChannel('x'.repeat(4097)), (err) => isDhtnetError(err, 'BAD_CHANNEL_NAME'))
  const ok = mux.openChannel('é'.repeat(2048)) // 4096 bytes of UTF-8
  const p2 = mux.openChannel('p2')
  const p3 = mux.openChannel('p3')
  await assert.rejects(mux.openChannel('p4'), (err) => isDhtnetError(err, 'TOO_MANY_CHANNELS'))
  await assert.rejects(mux.openDatagramChannel('dgram'), (err) => isDhtnetError(err, 'UNSUPPORTED_TRANSPORT'))
  mux.close()
  for (const p of [ok, p2, p3]) await assert.rejects(p, (err) => isDhtnetError(err, 'CONNECTION_CLOSED'))
  await assert.rejects(mux.openChannel('after'), (err) => isDhtnetError(err, 'CONNECTION_CLOSED'))
})

test('bounds on the peer: long names, too many channels, too many pending requests are declined', async () => {
  const { mux, peer } = await scripted({ maxChannels: 300, maxPendingRequests: 8, onChannelRequest: () => new Promise(() => {}) })
  peer.feed(request('n'.repeat(5000), 7))
  assert.deepEqual(answers(peer), [encodeChannelRequest(Buffer.from('n'.repeat(5000)), 7, 2).toString('hex')])
  for (let id = 100; id < 120; id++) peer.feed(request(`q${id}`, id))
  assert.equal(mux.stats().pendingRequests, 8)
  assert.equal(answers(peer).length, 1 + 12, 'the requests beyond the bound were declined at once')
  mux.close()

  const small = await scripted({ maxChannels: 2 })
  small.mux.on('channel', (ch: DhtnetChannel) => ch.on('error', () => {}))
  for (let id = 1; id <= 4; id++) small.peer.feed(request(`c${id}`, id))
  assert.deepEqual(
    answers(small.peer).map((h) => Buffer.from(h, 'hex').at(-1)),
    [1, 1, 2, 2],
  )
  small.mux.close()
})

test('EOF: an empty frame ends both directions; writes afterwards fail with CHANNEL_CLOSED; end() sends EOF after the data', async () => {
  const { mux, peer } = await scripted()
  const accepted = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('x', 0x8000))
  const ch = await accepted
  const got: Buffer[] = []
  ch.on('data', (d: Buffer) => got.push(d))
  const ended = new Promise((r) => ch.once('end', r))
  const finished = new Promise((r) => ch.once('finish', r))
  const closed = new Promise((r) => ch.once('close', r))
  peer.feed(encodeFrame(0x8000, Buffer.from('hello')))
  peer.feed(encodeFrame(0x8000))
  await ended
  await finished
  await closed
  assert.equal(Buffer.concat(got).toString(), 'hello')
  assert.equal(mux.stats().channels, 0)
  const before = peer.writeCount
  // the channel has closed by now ('close' came after 'end'): the write callback says why
  const err = await new Promise<Error | null | undefined>((resolve) => ch.write('too late', resolve))
  assert.ok(isDhtnetError(err, 'CHANNEL_CLOSED'), `write after the peer's EOF: ${err}`)
  await tick()
  assert.equal(peer.writeCount, before, 'nothing was sent, not even an EOF back (DHTNet answers none)')
  // data for the forgotten channel is dropped and counted
  peer.feed(encodeFrame(0x8000, Buffer.from('ghost')))
  assert.equal(mux.stats().droppedFrames, 1)
  assert.equal(mux.stats().droppedBytes, 5)

  // our end(): data, then EOF; the readable side ends too
  const accepted2 = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('y', 0x8001))
  const ch2 = await accepted2
  const ended2 = new Promise((r) => ch2.once('end', r))
  ch2.resume()
  ch2.write('abc')
  ch2.end('def')
  await ended2
  const out = framesOut(peer).filter(([c]) => c === 0x8001)
  assert.deepEqual(
    out.map(([, d]) => d.toString()),
    ['abc', 'def', ''],
  )
  peer.feed(encodeFrame(0x8001, Buffer.from('after our EOF')))
  assert.equal(mux.stats().droppedFrames, 2, "the peer's late data is dropped")

  // a write still queued when the peer's EOF arrives errors (after the reader had the data before the EOF)
  const accepted3 = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('z', 0x8002))
  const ch3 = await accepted3
  const errored = new Promise<Error>((r) => ch3.once('error', r))
  ch3.write(Buffer.alloc(100)) // pumped on a microtask: the EOF below arrives first
  peer.feed(encodeFrame(0x8002))
  assert.ok(isDhtnetError(await errored, 'CHANNEL_CLOSED'))
  assert.equal(framesOut(peer).filter(([c]) => c === 0x8002).length, 0, 'nothing sent after the EOF')

  // destroy() sends EOF (DHTNet has no reset)
  const accepted4 = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('w', 0x8003))
  const ch4 = await accepted4
  ch4.destroy(new Error('local failure'))
  ch4.on('error', () => {})
  assert.deepEqual(framesOut(peer).at(-1), [0x8003, Buffer.alloc(0)])
  mux.close()
})

test('writes are split at 65535 bytes per write and never merged; empty writes send nothing', async () => {
  const { mux, peer } = await scripted()
  const accepted = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('bulk', 0x8000))
  const ch = await accepted
  ch.cork()
  ch.write(Buffer.alloc(3, 1))
  ch.write(Buffer.alloc(0))
  ch.write(Buffer.alloc(65535 * 2 + 10, 2))
  ch.write(Buffer.alloc(65535, 3))
  ch.uncork()
  await new Promise((r) => ch.write(Buffer.alloc(1, 4), r))
  const sizes = framesOut(peer)
    .filter(([c]) => c === 0x8000)
    .map(([, d]) => d.length)
  assert.deepEqual(sizes, [3, 65535, 65535, 10, 65535, 1])
  assert.equal(ch.bytesWritten, 3 + 65535 * 3 + 10 + 1)
  mux.close()
})

test('beacons: pings are answered; probe() measures a round trip; no pong closes with PEER_UNREACHABLE; version 0 means no beacons', async () => {
  const { mux, peer } = await scripted()
  peer.feed(encodeFrame(0xffff, PING))
  peer.feed(encodeFrame(0, PING)) // protocol messages are accepted on channel 0 too
  assert.deepEqual(framesOut(peer).slice(1), [
    [0xffff, PONG],
    [0xffff, PONG],
  ])
  assert.ok(Number.isNaN(await mux.probe(100)), 'no version from the peer yet: no beacon, as DHTNet')
  peer.feed(encodeFrame(0xffff, VERSION))
  const probing = mux.probe(5000)
  assert.deepEqual(framesOut(peer).at(-1), [0xffff, PING])
  peer.feed(encodeFrame(0xffff, PONG))
  const rtt = await probing
  assert.ok(rtt >= 0 && rtt < 5000)
  const closed = new Promise<Error | undefined>((r) => mux.once('close', r))
  await assert.rejects(mux.probe(50), (err) => isDhtnetError(err, 'PEER_UNREACHABLE'))
  assert.ok(isDhtnetError(await closed, 'PEER_UNREACHABLE'))
  assert.equal(mux.closed, true)

  const old = await scripted()
  old.peer.feed(encodeFrame(0xffff, VERSION_0))
  const n = old.peer.writeCount
  assert.ok(Number.isNaN(await old.mux.probe(50)))
  assert.equal(old.peer.writeCount, n, 'nothing sent to a version-0 peer')
  assert.equal(old.mux.closed, false)
  old.mux.close()
})

test('keepalive: beacons while idle, answered pongs keep the connection; silence closes it with PEER_UNREACHABLE', async () => {
  const { mux, peer } = await scripted({ keepaliveIntervalMs: 40, deadPeerTimeoutMs: 400 })
  peer.feed(encodeFrame(0xffff, VERSION))
  // an answering peer: 600 ms, longer than the dead-peer timeout
  const answering = setInterval(() => {
    const pings = framesOut(peer).filter(([c, d]) => c === 0xffff && d.equals(PING)).length
    const pongsSent = (answering as unknown as { sent?: number }).sent ?? 0
    for (let i = pongsSent; i < pings; i++) peer.feed(encodeFrame(0xffff, PONG))
    ;(answering as unknown as { sent?: number }).sent = pings
  }, 10)
  await sleep(600)
  clearInterval(answering)
  assert.equal(mux.closed, false)
  const pings = framesOut(peer).filter(([c, d]) => c === 0xffff && d.equals(PING)).length
  assert.ok(pings >= 2, `${pings} keepalive pings`)
  const closed = new Promise<Error | undefined>((r) => mux.once('close', r))
  const err = await closed
  assert.ok(isDhtnetError(err, 'PEER_UNREACHABLE'), String(err))
  assert.equal(mux.stats().timers, 0)
})

test('control messages: several in one frame, maps by first key, unknown ones skipped, requests after a bad object not read', async () => {
  const { mux, peer } = await scripted()
  mux.on('channel', (ch: DhtnetChannel) => ch.on('error', () => {}))
  // one channel-0 frame: version, two requests
  peer.feed(encodeFrame(0, Buffer.concat([VERSION, encodeChannelRequest(Buffer.from('a'), 10, 0), encodeChannelRequest(Buffer.from('b'), 11, 0)])))
  assert.equal(mux.peerProtocolVersion, 1)
  assert.equal(mux.stats().channels, 2)
  // an unknown map on channel 0 ends that frame (C++ then fails to read it as a request)
  peer.feed(encodeFrame(0, Buffer.concat([Buffer.from('81a17801', 'hex'), encodeChannelRequest(Buffer.from('c'), 12, 0)])))
  assert.equal(mux.stats().channels, 2)
  // on 0xffff, only the first protocol message of a frame counts; a map key that is not a string is skipped
  peer.feed(encodeFrame(0xffff, Buffer.concat([Buffer.from('810101', 'hex'), PING, PING])))
  assert.equal(framesOut(peer).filter(([, d]) => d.equals(PONG)).length, 1)
  // bin names, extra request fields, negative state (treated as decline, which answers nothing for an unknown id)
  peer.feed(encodeFrame(0, Buffer.from('94c401' + '64' + '0d' + '00' + 'c0', 'hex')))
  assert.equal(mux.channels().find((c) => c.id === 13)?.name, 'd')
  peer.feed(encodeFrame(0, Buffer.from('93a165' + '0e' + 'ff', 'hex')))
  assert.ok(mux.stats().ignoredMessages >= 2)
  assert.equal(mux.closed, false)
  mux.close()
})

test('objects that are not frames are skipped (as C++); the byte 0xc1 or an oversized one closes with PROTOCOL_ERROR', async () => {
  const { mux, peer } = await scripted()
  const accepted = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('x', 0x8000))
  const ch = await accepted
  const got: Buffer[] = []
  ch.on('data', (d: Buffer) => got.push(d))
  const junk = [
    '93010203', // an array of 3
    'a3616263', // a string
    '92ce00010000c401ff', // channel over 0xffff (uint32 65536), data bin8 1 byte
    '92cd8000c0', // data nil
    '92cd800081a16101', // data a map
    'dc0003c0c0c0', // array16 of nils
    'c70400deadbeef', // ext8
    '92d0ffc400', // negative channel
  ]
  for (const hex of junk) {
    peer.feed(Buffer.from(hex, 'hex'))
    peer.feed(encodeFrame(0x8000, Buffer.from('|')))
  }
  // data as str is accepted, as C++'s vector<uint8_t> does
  peer.feed(Buffer.from('92cd8000a3737472', 'hex'))
  await tick()
  assert.equal(Buffer.concat(got).toString(), '|'.repeat(junk.length) + 'str')
  assert.equal(mux.stats().skippedObjects, junk.length)
  assert.equal(mux.closed, false)

  const closed = new Promise<Error | undefined>((r) => mux.once('close', r))
  const chError = new Promise<Error>((r) => ch.once('error', r))
  peer.feed(Buffer.from('92cd8000c1', 'hex'))
  assert.ok(isDhtnetError(await closed, 'PROTOCOL_ERROR'))
  assert.ok(isDhtnetError(await chError, 'PROTOCOL_ERROR'))

  // a non-frame object claiming more than the skip bound: fatal at once, nothing allocated for it
  const big = await scripted()
  const closed2 = new Promise<Error | undefined>((r) => big.mux.once('close', r))
  big.peer.feed(Buffer.from('dbffffffff', 'hex')) // str32 of 4 GiB
  assert.ok(isDhtnetError(await closed2, 'PROTOCOL_ERROR'))
  const big2 = await scripted()
  const closed3 = new Promise<Error | undefined>((r) => big2.mux.once('close', r))
  big2.peer.feed(Buffer.from('ddffffffff', 'hex')) // array32 of 4 billion elements
  assert.ok(isDhtnetError(await closed3, 'PROTOCOL_ERROR'))
})

test('a data frame claiming 4 GiB (bin32) is streamed, not allocated', async () => {
  const { mux, peer } = await scripted()
  const accepted = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('x', 0x8000))
  const ch = await accepted
  let got = 0
  ch.on('data', (d: Buffer) => (got += d.length))
  const heapBefore = process.memoryUsage().arrayBuffers
  peer.feed(Buffer.from('92cd8000c6ffffffff', 'hex'))
  for (let i = 0; i < 64; i++) peer.feed(Buffer.alloc(16384, i))
  await tick()
  assert.equal(got, 64 * 16384)
  assert.ok(process.memoryUsage().arrayBuffers - heapBefore < 64 * 1024 * 1024)
  mux.close()
})

test('close(err): channels error with it, then close; close(): quietly; the stream is ended; close once', async () => {
  const { mux, peer } = await scripted()
  const accepted: DhtnetChannel[] = []
  mux.on('channel', (ch: DhtnetChannel) => accepted.push(ch))
  peer.feed(request('a', 0x8000))
  peer.feed(request('b', 0x8001))
  const events: string[] = []
  for (const ch of accepted) {
    ch.on('error', (e) => events.push(`${ch.name}:error:${(e as { code?: string }).code}`))
    ch.on('close', () => events.push(`${ch.name}:close`))
  }
  let closes = 0
  mux.on('close', () => closes++)
  const streamEnded = new Promise((r) => peer.once('finish', r))
  mux.close(new Error('bye'))
  mux.close()
  await streamEnded
  await tick()
  assert.deepEqual(events.sort(), ['a:close', 'a:error:undefined', 'b:close', 'b:error:undefined'])
  assert.equal(closes, 1)
  peer.destroy()
  await tick()
  assert.equal(mux.stats().timers, 0)

  const quiet = await scripted()
  const got: DhtnetChannel[] = []
  quiet.mux.on('channel', (ch: DhtnetChannel) => got.push(ch))
  quiet.peer.feed(request('q', 0x8000))
  const errors: unknown[] = []
  got[0]!.on('error', (e) => errors.push(e))
  const chClosed = new Promise((r) => got[0]!.once('close', r))
  quiet.mux.close()
  await chClosed
  assert.deepEqual(errors, [])
  quiet.peer.destroy()
})

test('the peer closing the stream closes the mux: open channels error with CONNECTION_CLOSED', async () => {
  const { mux, peer } = await scripted()
  const accepted = new Promise<DhtnetChannel>((r) => mux.once('channel', r))
  peer.feed(request('x', 0x8000))
  const ch = await accepted
  const err = new Promise<Error>((r) => ch.once('error', r))
  const closed = new Promise<Error | undefined>((r) => mux.once('close', r))
  peer.feedEnd()
  assert.ok(isDhtnetError(await closed, 'CONNECTION_CLOSED'))
  assert.ok(isDhtnetError(await err, 'CONNECTION_CLOSED'))
  peer.destroy()

  // on a stream that is already gone: closes asynchronously, never throws
  const dead = new ScriptedStream()
  dead.destroy()
  const m = new DhtnetMux({ stream: dead, initiator: true })
  const c = await new Promise<Error | undefined>((r) => m.once('close', r))
  assert.ok(isDhtnetError(c, 'CONNECTION_CLOSED'))
})
