/**
 * ConnectionManager with a PortMapper (options.portMapper) on loopback, against a fake NAT-PMP gateway: each peer
 * connection is pinned to the mapped local port, the mapping is removed when the connection closes, and a gateway
 * that refuses does not fail the connect. The real router (miniupnpd behind a symmetric NAT) is natlab-upnp.test.ts.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket } from 'node:dgram'
import { once } from 'node:events'
import type { StreamChannel } from '../src/mux/mux.js'
import type { DatagramChannel } from '../src/mux/native/datagram-channel.js'
import { PortMapper } from '../src/nat/port-mapper.js'
import { livePeerConnections } from '../src/transport/webrtc/native.js'
import { TestNet } from './helpers/testnet.js'

interface FakeGateway {
  port: number
  /** [internal port, lifetime s] of every UDP map request */
  maps: Array<[number, number]>
  close(): Promise<void>
}

/** NAT-PMP on 127.0.0.1: maps UDP P → external 127.0.0.1:P (or refuses every mapping with code 2). */
async function fakeGateway(refuse: boolean): Promise<FakeGateway> {
  const s: Socket = createSocket('udp4')
  const maps: Array<[number, number]> = []
  s.on('message', (req, rinfo) => {
    let reply: Buffer
    if (req[1] === 0) {
      reply = Buffer.from([0, 128, 0, 0, 0, 0, 0, 1, 127, 0, 0, 1])
    } else {
      const port = req.readUInt16BE(4)
      const lifetime = req.readUInt32BE(8)
      maps.push([port, lifetime])
      reply = Buffer.alloc(16)
      reply[1] = 128 + req[1]!
      reply.writeUInt16BE(refuse ? 2 : 0, 2)
      reply.writeUInt16BE(port, 8)
      reply.writeUInt16BE(lifetime === 0 ? 0 : port, 10)
      reply.writeUInt32BE(lifetime, 12)
    }
    s.send(reply, rinfo.port, rinfo.address)
  })
  s.bind(0, '127.0.0.1')
  await once(s, 'listening')
  return { port: s.address().port, maps, close: () => new Promise<void>((r) => s.close(() => r())) }
}

function echo(_peer: string, _name: string, socket: StreamChannel | DatagramChannel): void {
  if ('pipe' in socket && !socket.initiator) {
    const s = socket
    s.on('error', () => {})
    s.pipe(s)
  }
}

async function roundTrip(sock: StreamChannel, text: string): Promise<string> {
  sock.write(text)
  let got = ''
  while (got.length < text.length) got += String((await once(sock, 'data'))[0])
  return got
}

let net: TestNet
const gateways: FakeGateway[] = []
const mappers: PortMapper[] = []

before(async () => {
  net = await TestNet.create()
})

after(async () => {
  await (net as TestNet | undefined)?.close() // undefined when before() failed
  await Promise.all(mappers.map((m) => m.close()))
  await Promise.all(gateways.map((g) => g.close()))
  assert.equal(livePeerConnections(), 0)
})

test('a mapped connection: pinned to the mapped port, bytes echoed, the mapping removed when it closes', async () => {
  const gw = await fakeGateway(false)
  gateways.push(gw)
  const mapper = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false })
  mappers.push(mapper)
  const alice = await net.addDevice('alice-mapped', { portMapper: mapper, transport: 'webrtc' })
  const bob = await net.addDevice('bob-mapped', { onConnectionReady: echo, transport: 'webrtc' })
  const sock = await alice.cm.connectDevice(bob.identity.id, 'echo')
  assert.equal(await roundTrip(sock, 'through a mapped port'), 'through a mapped port')
  const info = alice.cm.connections()[0]!
  const localPort = Number(info.localAddress?.split(':').at(-1))
  assert.deepEqual(gw.maps[0], [localPort, 7200], `the connection's local port ${localPort} was mapped for 7200 s: ${JSON.stringify(gw.maps)}`)
  assert.equal(mapper.mappings.length, 1)
  assert.equal(alice.cm.closeConnectionsWith(bob.identity.id), 1)
  for (let i = 0; i < 50 && gw.maps.length < 2; i++) await new Promise((r) => setTimeout(r, 20))
  assert.deepEqual(gw.maps[1], [localPort, 0], `the mapping was removed (lifetime 0): ${JSON.stringify(gw.maps)}`)
  assert.equal(mapper.mappings.length, 0)
})

test('a gateway that refuses the mapping does not fail the connect', async () => {
  const gw = await fakeGateway(true)
  gateways.push(gw)
  const mapper = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false })
  mappers.push(mapper)
  const logs: string[] = []
  const alice = await net.addDevice('alice-refused', { portMapper: mapper, transport: 'webrtc', logger: (_l, m) => logs.push(m) })
  const bob = await net.addDevice('bob-refused', { onConnectionReady: echo, transport: 'webrtc' })
  const sock = await alice.cm.connectDevice(bob.identity.id, 'echo')
  assert.equal(await roundTrip(sock, 'no mapping, still connected'), 'no mapping, still connected')
  assert.equal(gw.maps.length, 1, 'a mapping was asked for')
  assert.ok(
    logs.some((l) => /UPnP: no mapping .*MAPPING_FAILED/.test(l)),
    `the failure was logged: ${logs.filter((l) => l.includes('UPnP')).join('\n')}`,
  )
  assert.equal(mapper.mappings.length, 0)
})
