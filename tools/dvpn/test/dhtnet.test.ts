// DHTNet's dvpn protocol against the real C++ session captured in /work/shared/dhtnet-captures/dvpn (copied to
// packages/core/test/fixtures/dhtnet-captures/dvpn): the metadata map byte for byte, its meaning (the IPv6 swap) checked
// against the up-script arguments both C++ processes used, our server session fed the C++ client's bytes, our client
// session fed the C++ server's bytes (one packet per message either way), our client and server through two DHTNet
// multiplexers, and a bounded fuzz of the metadata parser.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DhtnetMux, type DhtnetChannel } from '../../../packages/core/src/mux/dhtnet/index.js'
import { ScriptedStream, createDuplexPair } from '../../../packages/core/test/helpers/byte-streams.js'
import { loadCapture, splitBySizes } from '../../../packages/core/test/helpers/dhtnet-mux-captures.js'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from '../../../packages/core/test/helpers/fuzz.js'
import { addressesFrom, DHTNET_CHANNEL, encodeMetadata, MetadataError, MetadataReader, metadataFor, parseMetadata } from '../src/dhtnet-protocol.js'
import { startDhtnetClientSession, startDhtnetServerSession } from '../src/dhtnet-session.js'
import { scriptArguments } from '../src/script.js'

const FIXTURES = join(import.meta.dirname, '../../../packages/core/test/fixtures/dhtnet-captures/dvpn')
const capture = loadCapture('dvpn')
const tick = (): Promise<void> => new Promise((r) => setImmediate(r))
const dataOf = (sender: 'client' | 'server'): Buffer[] => capture[sender].frames.filter((f) => f.channel === 0x8000 && f.data.length > 0).map((f) => f.data)
const serverMessages = dataOf('server') // the metadata, then 5 packets
const clientPackets = dataOf('client') // 5 packets
const CAPTURED_METADATA = { addrClient: '10.60.78.0', addrServer: '10.80.77.0', addrClientIpv6: 'fd00:0:0:2::0', addrServerIpv6: 'fd00:0:0:1::0' }

test('the metadata map: the captured bytes decode to the captured values, and encode back byte for byte', () => {
  const captured = serverMessages[0]!
  assert.equal(captured.length, 103)
  const parsed = parseMetadata(captured)
  assert.ok(parsed)
  assert.deepEqual(parsed.metadata, CAPTURED_METADATA)
  assert.equal(parsed.used, 103)
  assert.ok(encodeMetadata(CAPTURED_METADATA).equals(captured), 'msgpack-c packing: fixmap, keys in MetaData order, fixstr')
})

test('the IPv6 swap: what the maps mean gives the up-script arguments both C++ processes used', () => {
  const lines = readFileSync(join(FIXTURES, 'vpn-up-args.txt'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.replace(/^\S+ args: /, '').split(' '))
  const [serverArgs, clientArgs] = lines as [string[], string[]]
  const a = addressesFrom(CAPTURED_METADATA)
  // our client calls its script as dvpn's client did
  assert.deepEqual(scriptArguments({ peer4: a.server4, local4: a.client4, tun: 'tun0', remote: '10.254.0.1', isClient: true, local6: a.client6, peer6: a.server6 }), clientArgs)
  // our server calls its script as dvpn's server did
  assert.deepEqual(scriptArguments({ peer4: a.client4, local4: a.server4, tun: 'tun0', remote: '10.254.0.2', isClient: false, local6: a.server6, peer6: a.client6 }), serverArgs)
  // and the map our server sends for those addresses is the C++ server's
  assert.deepEqual(metadataFor(a), CAPTURED_METADATA)
})

test("our server session, fed the C++ client's bytes: the metadata map first, then each packet one message", async () => {
  const cfr = capture.client.frames
  const firstData = cfr.findIndex((f) => f.channel === 0x8000)
  for (const how of ['whole frames', 'one byte at a time'] as const) {
    const stream = new ScriptedStream()
    const mux = new DhtnetMux({ stream, initiator: false, keepaliveIntervalMs: 0 })
    const received: Buffer[][] = []
    const accepted = new Promise<DhtnetChannel>((resolve) => mux.once('channel', resolve))
    for (const f of cfr.slice(0, firstData)) stream.feed(f.bytes)
    const ch = await accepted
    assert.equal(ch.name, DHTNET_CHANNEL)
    const before = stream.written().length
    const link = startDhtnetServerSession(ch, addressesFrom(CAPTURED_METADATA), (packets) => received.push(packets.map((p) => Buffer.from(p))))
    for (let i = 0; i < 3; i++) await tick()
    // what we wrote is the C++ server's metadata frame
    const metaFrame = capture.server.frames.find((f) => f.channel === 0x8000)!.bytes
    assert.ok(stream.written().subarray(before).equals(metaFrame), `${how}: the captured metadata frame`)
    const rest = Buffer.concat(
      cfr
        .slice(firstData)
        .filter((f) => f.data.length > 0)
        .map((f) => f.bytes),
    )
    if (how === 'whole frames') stream.feed(rest)
    else for (const b of rest) stream.feed(Buffer.from([b]))
    for (let i = 0; i < 5; i++) await tick()
    assert.deepEqual(
      received.map((r) => r.length),
      [1, 1, 1, 1, 1],
      `${how}: one packet per message`,
    )
    for (let i = 0; i < clientPackets.length; i++) assert.ok(received[i]![0]!.equals(clientPackets[i]!), `${how}: packet ${i}`)
    assert.equal(link.stats.packetsIn, 5)
    // our packets towards the client: one frame each, as the C++ server wrote them
    const mark = stream.written().length
    link.send(serverMessages.slice(1))
    for (let i = 0; i < 3; i++) await tick()
    const expected = Buffer.concat(
      capture.server.frames
        .filter((f) => f.channel === 0x8000 && f.data.length > 0)
        .slice(1)
        .map((f) => f.bytes),
    )
    assert.ok(stream.written().subarray(mark).equals(expected), `${how}: the C++ server's packet frames`)
    mux.close()
  }
})

test("our client session, fed the C++ server's bytes (as its TLS records came): metadata, addresses, one packet per message", async () => {
  const stream = new ScriptedStream()
  const mux = new DhtnetMux({ stream, initiator: true, keepaliveIntervalMs: 0 })
  const opening = mux.openChannel(DHTNET_CHANNEL)
  const chunks = splitBySizes(capture.server.bytes, capture.server.recordSizes)
  // up to the ACCEPT
  const acceptEnd = capture.server.frames.slice(0, capture.server.frames.findIndex((f) => f.kind === 'channel ACCEPT') + 1).reduce((n, f) => n + f.bytes.length, 0)
  const all = Buffer.concat(chunks)
  stream.feed(all.subarray(0, acceptEnd))
  const ch = await opening
  const received: Buffer[] = []
  const starting = startDhtnetClientSession(ch, (packets) => received.push(...packets.map((p) => Buffer.from(p))), 5000)
  stream.feed(all.subarray(acceptEnd))
  const s = await starting
  for (let i = 0; i < 5; i++) await tick()
  assert.deepEqual(s.metadata, CAPTURED_METADATA)
  assert.deepEqual(
    s.addresses,
    { client4: '10.60.78.0', server4: '10.80.77.0', client6: 'fd00:0:0:1::0', server6: 'fd00:0:0:2::0' },
    "the capture's interfaces: client tun0 10.60.78.0 and fd00:0:0:1::0",
  )
  assert.equal(received.length, 5)
  for (let i = 0; i < 5; i++) assert.ok(received[i]!.equals(serverMessages[i + 1]!), `packet ${i}`)
  // our packets: the C++ client's frames byte for byte
  const mark = stream.written().length
  s.link.send(clientPackets)
  for (let i = 0; i < 3; i++) await tick()
  const expected = Buffer.concat(capture.client.frames.filter((f) => f.channel === 0x8000 && f.data.length > 0).map((f) => f.bytes))
  assert.ok(stream.written().subarray(mark).equals(expected))
  mux.close()
})

test('our DHTNet client and server through two DHTNet multiplexers: addresses agree, packets both ways, 64 KiB ones too', async () => {
  const [a, b] = createDuplexPair()
  const serverMux = new DhtnetMux({ stream: a, initiator: false, keepaliveIntervalMs: 0 })
  const clientMux = new DhtnetMux({ stream: b, initiator: true, keepaliveIntervalMs: 0 })
  const atServer: Buffer[] = []
  const atClient: Buffer[] = []
  const addresses = { client4: '10.60.78.1', server4: '10.80.77.1', client6: 'fd00:0:0:2::1', server6: 'fd00:0:0:1::1' }
  let serverLink: ReturnType<typeof startDhtnetServerSession> | undefined
  serverMux.on('channel', (ch: DhtnetChannel) => {
    serverLink = startDhtnetServerSession(ch, addresses, (p) => atServer.push(...p.map((x) => Buffer.from(x))))
  })
  const ch = await clientMux.openChannel(DHTNET_CHANNEL)
  const s = await startDhtnetClientSession(ch, (p) => atClient.push(...p.map((x) => Buffer.from(x))), 5000)
  assert.deepEqual(s.addresses, addresses)
  const packet = (n: number, fill: number): Buffer => {
    const p = Buffer.alloc(n, fill)
    p[0] = 0x45
    p.writeUInt16BE(n, 2)
    return p
  }
  const up = [packet(84, 1), packet(1500, 2), packet(65535, 3)]
  const down = [packet(60, 4), packet(65535, 5)]
  s.link.send(up)
  serverLink!.send(down)
  for (let i = 0; i < 50 && (atServer.length < 3 || atClient.length < 2); i++) await new Promise((r) => setTimeout(r, 10))
  assert.deepEqual(
    atServer.map((p) => p.length),
    [84, 1500, 65535],
  )
  assert.ok(atServer.every((p, i) => p.equals(up[i]!)))
  assert.deepEqual(
    atClient.map((p) => p.length),
    [60, 65535],
  )
  clientMux.close()
  serverMux.close()
})

test('the client gives up on a server that closes without metadata, or sends something else', async () => {
  const [a, b] = createDuplexPair()
  const serverMux = new DhtnetMux({ stream: a, initiator: false, keepaliveIntervalMs: 0 })
  const clientMux = new DhtnetMux({ stream: b, initiator: true, keepaliveIntervalMs: 0 })
  serverMux.on('channel', (ch: DhtnetChannel) => ch.write(Buffer.from([0x93, 1, 2, 3])))
  const ch = await clientMux.openChannel(DHTNET_CHANNEL)
  await assert.rejects(
    startDhtnetClientSession(ch, () => {}, 5000),
    /metadata is malformed: the metadata is not a map/,
  )
  serverMux.removeAllListeners('channel')
  serverMux.on('channel', (c: DhtnetChannel) => c.end())
  const ch2 = await clientMux.openChannel(DHTNET_CHANNEL)
  await assert.rejects(
    startDhtnetClientSession(ch2, () => {}, 5000),
    /closed the dvpn:\/\/ channel before sending its metadata/,
  )
  clientMux.close()
  serverMux.close()
})

test('metadata: split across messages is joined (as the C++ unpacker does), a map in pieces is waited for', () => {
  const bytes = encodeMetadata(CAPTURED_METADATA)
  const r = new MetadataReader()
  assert.equal(r.push(bytes.subarray(0, 10)), undefined)
  assert.equal(r.push(bytes.subarray(10, 50)), undefined)
  assert.deepEqual(r.push(Buffer.concat([bytes.subarray(50), Buffer.from([0x45, 0])])), CAPTURED_METADATA, 'bytes after the map are dropped')
  // keys in another order, unknown keys, a missing key, bin values: as msgpack-c converts them
  const other = Buffer.from('83a7756e6b6e6f776e93010203aa61646472536572766572c403313233aa61646472436c69656e74a131', 'hex')
  assert.deepEqual(parseMetadata(other)?.metadata, { addrClient: '1', addrServer: '123', addrClientIpv6: '', addrServerIpv6: '' })
  assert.throws(() => parseMetadata(Buffer.from('81aa61646472436c69656e7401', 'hex')), /addrClient is not a string/)
  assert.throws(() => new MetadataReader().push(Buffer.alloc(5000, 0xdc)), MetadataError)
})

test('fuzz: the metadata parser only ever returns a map, waits, or throws MetadataError; memory stays bounded', () => {
  const next = rng(99)
  const valid = encodeMetadata(CAPTURED_METADATA)
  const before = heapUsedAfterGc()
  let maps = 0
  let errors = 0
  const started = Date.now()
  for (let i = 0; i < 50_000 && Date.now() - started < 20_000; i++) {
    const input = i % 3 === 0 ? randomBuffer(next, 300) : mutateBytes(valid, next)
    try {
      const r = new MetadataReader().push(input)
      if (r) {
        maps++
        for (const v of Object.values(r)) assert.ok(typeof v === 'string' && Buffer.byteLength(v) <= 255)
      }
    } catch (err) {
      assert.ok(err instanceof MetadataError, `only MetadataError: ${(err as Error).stack}`)
      errors++
    }
  }
  assert.ok(maps > 100 && errors > 100, `both outcomes (${maps} maps, ${errors} errors)`)
  assert.ok(heapUsedAfterGc() - before < 32 * 1024 * 1024)
})
