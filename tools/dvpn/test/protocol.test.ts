// dvpn's own protocol (dvpn://v1): frames round trip whatever the chunking, malformed frames are refused with a
// reason before anything is buffered, and a bounded fuzz (random and mutated frames) never throws anything but a
// ProtocolError nor holds more than one frame. The datagram format (whole IP packets back to back) likewise.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from '../../../packages/core/test/helpers/fuzz.js'
import { batchPackets, declaredLength, splitPackets } from '../src/packets.js'
import {
  FrameDecoder,
  FrameType,
  HEADER_BYTES,
  ProtocolError,
  encodeConfig,
  encodeHello,
  encodePacket,
  encodePing,
  encodeRefuse,
  packetHeader,
  parseConfig,
  parseHello,
  type Config,
  type Frame,
} from '../src/protocol.js'

const CONFIG: Omit<Config, 'v'> = {
  token: 'a1b2c3d4e5f60718293a4b5c',
  ipv4: '10.141.80.2',
  server4: '10.141.80.1',
  ipv6: 'fd89:8fb2:d603::2',
  server6: 'fd89:8fb2:d603::1',
  routes4: ['10.141.80.0/24'],
  routes6: ['fd89:8fb2:d603::/64'],
  mtu: 65535,
  masquerade: false,
}

/** An IPv4 packet of `total` bytes (ICMP, addresses given). */
function ipv4(total: number, src = [10, 0, 0, 2], dst = [10, 0, 0, 1]): Buffer {
  const p = randomBytes(total)
  p[0] = 0x45
  p.writeUInt16BE(total, 2)
  p[9] = 1
  Buffer.from(src).copy(p, 12)
  Buffer.from(dst).copy(p, 16)
  return p
}

function ipv6(payload: number): Buffer {
  const p = randomBytes(40 + payload)
  p[0] = 0x60
  p.writeUInt16BE(payload, 4)
  return p
}

function decodeAll(chunks: Buffer[]): Frame[] {
  const frames: Frame[] = []
  const d = new FrameDecoder((f) => frames.push(structuredClone(f)))
  for (const c of chunks) d.push(c)
  return frames
}

test('frames round trip, whole, cut at every byte, and in random pieces', () => {
  const packet = ipv4(1400)
  const stream = Buffer.concat([
    encodeHello({ token: 'ab12', datagram: true, fullTunnel: false }),
    encodeConfig(CONFIG),
    encodePacket(packet),
    Buffer.concat([packetHeader(packet.length), packet]),
    encodePing(FrameType.PING, Buffer.from('01234567')),
    encodePing(FrameType.PONG, Buffer.from('76543210')),
    encodeRefuse('no room'),
  ])
  const next = rng(3)
  const random: Buffer[] = []
  for (let off = 0; off < stream.length;) {
    const n = 1 + (next() % 700)
    random.push(stream.subarray(off, off + n))
    off += n
  }
  for (const chunks of [[stream], [...stream].map((b) => Buffer.from([b])), random]) {
    const frames = decodeAll(chunks)
    assert.equal(frames.length, 7)
    assert.deepEqual(frames[0], { type: FrameType.HELLO, hello: { v: 1, token: 'ab12', datagram: true, fullTunnel: false } })
    assert.deepEqual(frames[1], { type: FrameType.CONFIG, config: { v: 1, ...CONFIG } })
    for (const f of frames.slice(2, 4)) {
      assert.equal(f.type, FrameType.PACKET)
      assert.ok(Buffer.from((f as { packet: Uint8Array }).packet).equals(packet))
    }
    assert.equal(frames[4]!.type, FrameType.PING)
    assert.equal(frames[5]!.type, FrameType.PONG)
    assert.deepEqual(frames[6], { type: FrameType.REFUSE, reason: 'no room' })
  }
})

test('a frame inside one chunk is handed on as a view (no copy)', () => {
  const chunk = encodePacket(ipv4(100))
  let seen: Buffer | undefined
  new FrameDecoder((f) => {
    if (f.type === FrameType.PACKET) seen = f.packet
  }).push(chunk)
  assert.ok(seen)
  assert.equal(seen.buffer, chunk.buffer)
  assert.equal(seen.byteOffset, chunk.byteOffset + HEADER_BYTES)
})

test('malformed frames: a protocol error with a reason, before anything is buffered', () => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['unknown type', Buffer.from([9, 0, 0, 0, 0]), /unknown frame type 9/],
    ['type 0', Buffer.from([0, 0, 0, 0, 0]), /unknown frame type 0/],
    ['a PACKET over 64 KiB', Buffer.from([FrameType.PACKET, 0, 1, 0, 0]), /declares 65536 bytes/],
    ['a HELLO over 4 KiB', Buffer.from([FrameType.HELLO, 0, 0, 0x10, 1]), /declares 4097 bytes/],
    ['a 4 GiB length', Buffer.from([FrameType.CONFIG, 0xff, 0xff, 0xff, 0xff]), /declares 4294967295/],
    ['a short PING', Buffer.from([FrameType.PING, 0, 0, 0, 4, 1, 2, 3, 4]), /carries 8 bytes, not 4/],
    ['HELLO not JSON', Buffer.concat([Buffer.from([FrameType.HELLO, 0, 0, 0, 3]), Buffer.from('{{{')]), /not JSON/],
    ['HELLO an array', Buffer.concat([Buffer.from([FrameType.HELLO, 0, 0, 0, 2]), Buffer.from('[]')]), /not a JSON object/],
  ]
  for (const [what, bytes, reason] of cases) {
    const d = new FrameDecoder(() => assert.fail(`${what}: no frame expected`))
    assert.throws(
      () => d.push(bytes),
      (err: Error) => err instanceof ProtocolError && reason.test(err.message),
      what,
    )
    // and nothing afterwards
    assert.throws(() => d.push(encodePacket(ipv4(40))), ProtocolError, `${what}: refused after the error`)
  }
})

test('HELLO and CONFIG fields are checked', () => {
  const hello = (o: unknown): Buffer => Buffer.from(JSON.stringify(o))
  assert.deepEqual(parseHello(hello({ v: 2, datagram: false, fullTunnel: true, extra: 1 })), { v: 2, datagram: false, fullTunnel: true })
  assert.throws(() => parseHello(hello({ v: 0, datagram: true, fullTunnel: false })), /bad version/)
  assert.throws(() => parseHello(hello({ v: 1, datagram: 'yes', fullTunnel: false })), /datagram must be true or false/)
  assert.throws(() => parseHello(hello({ v: 1, datagram: true, fullTunnel: false, token: 'XYZ' })), /token is malformed/)
  assert.throws(() => parseHello(hello({ v: 1, datagram: true, fullTunnel: false, token: 'a'.repeat(65) })), /token is malformed/)
  assert.deepEqual(parseHello(hello({ v: 1, datagram: true, fullTunnel: false, ipv4: '10.60.78.7' })).ipv4, '10.60.78.7')
  assert.throws(() => parseHello(hello({ v: 1, datagram: true, fullTunnel: false, ipv4: '999.1.1.1' })), /ipv4 is malformed/)
  const config = (o: object): Buffer => Buffer.from(JSON.stringify({ v: 1, ...CONFIG, ...o }))
  assert.throws(() => parseConfig(config({ v: 2 })), /version 2/)
  assert.throws(() => parseConfig(config({ ipv4: '10.0.0.0/8' })), /ipv4 is malformed/)
  assert.throws(() => parseConfig(config({ mtu: 100 })), /mtu must be/)
  assert.throws(() => parseConfig(config({ routes4: Array(65).fill('10.0.0.0/8') })), /at most 64/)
  assert.throws(() => parseConfig(config({ routes6: ['fd00::/64', 'rm -rf /'] })), /routes6\[1\] is malformed/)
  assert.throws(() => parseConfig(config({ masquerade: 1 })), /masquerade must be true or false/)
  // a reason longer than its bound is cut, not refused
  assert.equal(encodeRefuse('x'.repeat(5000)).length, HEADER_BYTES + 1024)
})

test('fuzz: random and mutated streams only ever give ProtocolErrors, the decoder holds one frame at most', () => {
  const next = rng(20240611)
  const valid = [
    encodeHello({ datagram: true, fullTunnel: true, token: 'feed' }),
    encodeConfig(CONFIG),
    encodePacket(ipv4(60)),
    encodePing(FrameType.PING, Buffer.alloc(8, 1)),
    encodeRefuse('full'),
  ]
  const before = heapUsedAfterGc()
  const started = Date.now()
  let frames = 0
  let errors = 0
  for (let i = 0; i < 30_000 && Date.now() - started < 20_000; i++) {
    const input = i % 3 === 0 ? randomBuffer(next, 200) : mutateBytes(Buffer.concat([valid[next() % valid.length]!, valid[next() % valid.length]!]), next)
    const d = new FrameDecoder(() => frames++)
    try {
      for (let off = 0; off < input.length;) {
        const n = 1 + (next() % 32)
        d.push(input.subarray(off, off + n))
        off += n
      }
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `only protocol errors: ${(err as Error).stack}`)
      errors++
    }
  }
  assert.ok(frames > 1000 && errors > 1000, `both outcomes happen (${frames} frames, ${errors} errors)`)
  assert.ok(heapUsedAfterGc() - before < 32 * 1024 * 1024, 'memory stays bounded')
})

test('datagrams: whole packets back to back, split by their own headers; batching stays under the bound', () => {
  const a = ipv4(84)
  const b = ipv6(1200)
  const c = ipv4(1500)
  assert.equal(declaredLength(a, 0), 84)
  assert.equal(declaredLength(b, 0), 1240)
  const out: Buffer[] = []
  assert.equal(splitPackets(Buffer.concat([a, b, c]), out), 0)
  assert.deepEqual(
    out.map((p) => p.length),
    [84, 1240, 1500],
  )
  // a cut packet: what came before it is kept, the rest counted
  const cut: Buffer[] = []
  assert.equal(splitPackets(Buffer.concat([a, b.subarray(0, 100)]), cut), 100)
  assert.equal(cut.length, 1)
  // a version that is not IP, or an IPv4 length below its header
  assert.equal(splitPackets(Buffer.from([0x30, 0, 0, 0]), []), 4)
  const bad = ipv4(40)
  bad.writeUInt16BE(10, 2)
  assert.equal(splitPackets(bad, []), 40)

  const sent: Array<[Buffer, number]> = []
  const { tooLarge } = batchPackets([a, b, c, ipv4(3000)], 2000, (d, n) => sent.push([d, n]))
  assert.equal(tooLarge, 1)
  assert.deepEqual(
    sent.map(([d, n]) => [d.length, n]),
    [
      [84 + 1240, 2],
      [1500, 1],
    ],
  )
  assert.equal(sent[1]![0], c, 'a packet alone is not copied')
  const again: Buffer[] = []
  splitPackets(sent[0]![0], again)
  assert.ok(again[0]!.equals(a) && again[1]!.equals(b))
})

test('fuzz: splitPackets never reads outside the datagram and accounts for every byte', () => {
  const next = rng(77)
  const valid = Buffer.concat([ipv4(84), ipv6(100), ipv4(20)])
  for (let i = 0; i < 50_000; i++) {
    const d = i % 2 ? randomBuffer(next, 300) : mutateBytes(valid, next)
    const out: Buffer[] = []
    const rest = splitPackets(d, out)
    const used = out.reduce((n, p) => n + p.length, 0)
    assert.equal(used + rest, d.length)
    for (const p of out) assert.equal(declaredLength(p, 0), p.length)
  }
})
