/**
 * The UDP check behind UDP_BLOCKED (transport/webrtc/udp-check.ts): a real coturn on loopback with its UDP listener
 * off answers over TCP only → 'blocked'; a STUN responder over UDP → 'open'; nothing at that address → 'unknown';
 * results are shared and cached. And peerOnOurSubnet, which keeps WebRTC alive for a peer on our own LAN.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { once } from 'node:events'
import { networkInterfaces } from 'node:os'
import { UdpReachability } from '../src/transport/webrtc/udp-check.js'
import { peerOnOurSubnet } from '../src/transport/webrtc/webrtc-transport.js'
import { StunMessage } from '../src/transport/stun/message.js'
import { StunMessageBuilder } from '../src/transport/stun/builder.js'
import { StunAttr } from '../src/transport/stun/constants.js'
import { type Coturn, coturnUnavailableReason, freeTcpPort, startLoopbackCoturn } from './helpers/coturn.js'
import { mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'

const skip = coturnUnavailableReason()
const log = (): void => {}

describe('UDP check (STUN over UDP and over TCP to the same server)', () => {
  let coturn: Coturn | undefined
  let responder: UdpSocket | undefined

  before(async () => {
    if (!skip) coturn = await startLoopbackCoturn() // --no-udp: TCP only
    responder = createSocket('udp4')
    responder.on('message', (msg, from) => {
      const req = StunMessage.decode(msg)
      const answer = StunMessageBuilder.responseTo(req, 'success')
        .addXorAddress(StunAttr.XOR_MAPPED_ADDRESS, { address: from.address, port: from.port })
        .build({ fingerprint: false })
      responder!.send(answer, from.port, from.address)
    })
    responder.bind(0, '127.0.0.1')
    await once(responder, 'listening')
  })

  after(async () => {
    responder?.close()
    await coturn?.stop()
  })

  test('a server that answers over TCP but not over UDP: blocked, with what answered', { skip }, async () => {
    const check = new UdpReachability({ hostname: '127.0.0.1', port: coturn!.port }, { udpTimeoutMs: 800, log })
    const t0 = performance.now()
    const r = await check.check()
    assert.equal(r.verdict, 'blocked', r.detail)
    assert.equal(r.server, `stun:127.0.0.1:${coturn!.port}`)
    assert.match(r.detail, /answered a STUN request over TCP but none over UDP within 800 ms/)
    assert.ok(performance.now() - t0 < 3000)
    assert.equal(check.check(), check.check(), 'one probe serves concurrent calls')
  })

  test('a server that answers over UDP: open, at once', async () => {
    const port = (responder!.address() as { port: number }).port
    const check = new UdpReachability({ hostname: '127.0.0.1', port }, { udpTimeoutMs: 6000, log })
    const t0 = performance.now()
    const r = await check.check()
    assert.equal(r.verdict, 'open', r.detail)
    assert.ok(performance.now() - t0 < 5000, 'on the answer, not at the UDP timeout')
  })

  test('nothing at that address: unknown (no conclusion about UDP)', async () => {
    const port = await freeTcpPort()
    const r = await new UdpReachability({ hostname: '127.0.0.1', port }, { udpTimeoutMs: 500, log }).check()
    assert.equal(r.verdict, 'unknown', r.detail)
    assert.match(r.detail, /answered neither over UDP nor over TCP/)
  })

  test('an unresolvable name: unknown', async () => {
    const r = await new UdpReachability({ hostname: 'no-such-host.invalid', port: 3478 }, { udpTimeoutMs: 500, log }).check()
    assert.equal(r.verdict, 'unknown')
  })

  test('a cached verdict expires', async () => {
    const port = (responder!.address() as { port: number }).port
    const check = new UdpReachability({ hostname: '127.0.0.1', port }, { udpTimeoutMs: 500, cacheMs: 50, log })
    const first = check.check()
    await first
    await new Promise((r) => setTimeout(r, 80))
    assert.notEqual(check.check(), first)
  })
})

test('peerOnOurSubnet: a host candidate in one of our subnets, not a public or foreign one', () => {
  const ours = Object.values(networkInterfaces())
    .flatMap((l) => l ?? [])
    .find((i) => !i.internal && i.family === 'IPv4')
  const line = (ip: string, type = 'host') => `a=candidate:1 1 UDP 2122317823 ${ip} 40000 typ ${type}`
  assert.equal(peerOnOurSubnet(`v=0\r\n${line('203.0.113.9')}\r\n`), false)
  assert.equal(peerOnOurSubnet(`v=0\r\n${line('127.0.0.1')}\r\n`), false, 'loopback is not a LAN')
  if (ours) {
    assert.equal(peerOnOurSubnet(`v=0\r\n${line(ours.address)}\r\n`), true)
    assert.equal(peerOnOurSubnet(`v=0\r\n${line(ours.address, 'srflx')}\r\n`), false, 'only host candidates count')
  }
})

test('fuzz: peerOnOurSubnet never throws on 20,000 random and mutated SDPs', () => {
  const next = rng(0x51c7)
  const base = Buffer.from('v=0\r\na=candidate:1 1 UDP 2122317823 192.168.1.7 40000 typ host\r\na=candidate:2 1 UDP 1 2001:db8::7 9 typ host\r\n')
  for (let i = 0; i < 20_000; i++) {
    const sdp = (next() % 3 === 0 ? randomBuffer(next, 300) : mutateBytes(base, next)).toString('latin1')
    assert.equal(typeof peerOnOurSubnet(sdp), 'boolean')
  }
})
