/**
 * PortMapper pieces that need no router: the srflx candidate line, the default-gateway parser, and the NAT-PMP
 * client and PortMapper against a fake NAT-PMP gateway on loopback (answers, refusals, silence, abort, unmapping).
 * The real thing (miniupnpd in a NAT lab) is natlab-upnp.test.ts.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket } from 'node:dgram'
import { once } from 'node:events'
import { addMappedCandidate, srflxPriority } from '../src/nat/mapped-candidate.js'
import { PortMapper, defaultGatewayIpv4 } from '../src/nat/port-mapper.js'
import { natPmpMapUdp } from '../src/nat/natpmp.js'
import { isDhtnetError } from '../src/errors.js'

const SDP = [
  'v=0',
  'o=rtc 1 0 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
  'c=IN IP4 0.0.0.0',
  'a=mid:0',
  'a=candidate:1 1 UDP 2122317823 10.0.1.2 40000 typ host',
  'a=candidate:2 1 UDP 1686109951 198.51.100.101 51234 typ srflx raddr 0.0.0.0 rport 0',
  'a=end-of-candidates',
  'a=fingerprint:sha-256 AA:BB',
  '',
].join('\r\n')

test('addMappedCandidate: a valid srflx line for the mapped address, after the last candidate, priority below host', () => {
  const out = addMappedCandidate(SDP, { externalIp: '198.51.100.101', externalPort: 40000, internalPort: 40000, protocol: 'UDP', via: 'natpmp' })
  const lines = out.split('\r\n')
  const i = lines.findIndex((l) => l.includes('typ srflx raddr 10.0.1.2'))
  assert.equal(lines[i], `a=candidate:upnp40000 1 UDP ${srflxPriority()} 198.51.100.101 40000 typ srflx raddr 10.0.1.2 rport 40000`)
  assert.equal(lines[i + 1], 'a=end-of-candidates')
  assert.ok(srflxPriority() < 2122317823 && srflxPriority() > 0)
  assert.equal(out.split('\r\n').length, SDP.split('\r\n').length + 1, 'exactly one line added, CRLF kept')
  // the same address twice is not added again
  assert.equal(addMappedCandidate(out, { externalIp: '198.51.100.101', externalPort: 40000, internalPort: 40000, protocol: 'UDP', via: 'natpmp' }), out)
  // no media section: unchanged
  assert.equal(addMappedCandidate('v=0\r\n', { externalIp: '1.2.3.4', externalPort: 1, internalPort: 1, protocol: 'UDP', via: 'upnp' }), 'v=0\r\n')
})

test('defaultGatewayIpv4 reads /proc/net/route (little-endian hex, RTF_GATEWAY)', () => {
  const table = [
    'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
    'eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
    'eth0\t00000000\t0101000A\t0003\t0\t0\t0\t00000000\t0\t0\t0',
  ].join('\n')
  assert.equal(defaultGatewayIpv4(table), '10.0.1.1')
  assert.equal(defaultGatewayIpv4(table.split('\n').slice(0, 2).join('\n')), undefined)
})

/** A fake NAT-PMP gateway on 127.0.0.1: `answer(request)` returns the reply (or undefined: silence). */
async function fakeGateway(answer: (req: Buffer) => Buffer | undefined): Promise<{ port: number; requests: Buffer[]; close(): Promise<void> }> {
  const s: Socket = createSocket('udp4')
  const requests: Buffer[] = []
  s.on('message', (msg, rinfo) => {
    requests.push(msg)
    const r = answer(msg)
    if (r) s.send(r, rinfo.port, rinfo.address)
  })
  s.bind(0, '127.0.0.1')
  await once(s, 'listening')
  return { port: s.address().port, requests, close: () => new Promise<void>((r) => s.close(() => r())) }
}

function pmpReply(req: Buffer, result = 0, externalPortDelta = 1000): Buffer {
  if (req[1] === 0) {
    const b = Buffer.alloc(12)
    b[1] = 128
    b.writeUInt16BE(result, 2)
    Buffer.from([198, 51, 100, 7]).copy(b, 8)
    return b
  }
  const b = Buffer.alloc(16)
  b[1] = 128 + req[1]!
  b.writeUInt16BE(result, 2)
  b.writeUInt16BE(req.readUInt16BE(4), 8)
  const lifetime = req.readUInt32BE(8)
  b.writeUInt16BE(lifetime === 0 ? 0 : req.readUInt16BE(4) + externalPortDelta, 10)
  b.writeUInt32BE(lifetime, 12)
  return b
}

test('PortMapper over NAT-PMP: maps (gateway-chosen port, lease in seconds), unmaps UDP with lifetime 0, close() leaves nothing', async () => {
  const gw = await fakeGateway((req) => pmpReply(req))
  const pm = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false, leaseS: 600 })
  try {
    const m = await pm.mapUdp(40000)
    assert.deepEqual(m, { externalIp: '198.51.100.7', externalPort: 41000, internalPort: 40000, protocol: 'UDP', via: 'natpmp' })
    const mapReq = gw.requests.find((r) => r[1] === 1)!
    assert.equal(mapReq.readUInt32BE(8), 600, 'the lease goes out in seconds')
    await pm.mapUdp(40001)
    await pm.unmapUdp(40000)
    const unmap = gw.requests.at(-1)!
    assert.deepEqual([unmap[1], unmap.readUInt16BE(4), unmap.readUInt16BE(6), unmap.readUInt32BE(8)], [1, 40000, 0, 0], 'UDP opcode, port, external 0, lifetime 0')
    await pm.close()
    const last = gw.requests.at(-1)!
    assert.deepEqual([last[1], last.readUInt16BE(4), last.readUInt32BE(8)], [1, 40001, 0], 'close() unmapped the other one')
    assert.equal(pm.mappings.length, 0)
    await assert.rejects(pm.mapUdp(40002), (e) => isDhtnetError(e, 'ABORTED'))
  } finally {
    await pm.close()
    await gw.close()
  }
})

test('NAT-PMP errors are typed: refusal → MAPPING_FAILED, silence → TIMEOUT, abort → ABORTED, no gateway → NO_GATEWAY', async () => {
  const refusing = await fakeGateway((req) => pmpReply(req, 2))
  const silent = await fakeGateway(() => undefined)
  try {
    await assert.rejects(
      natPmpMapUdp('127.0.0.1', 40000, 40000, 60, { timeoutMs: 2000, port: refusing.port }),
      (e) => isDhtnetError(e, 'MAPPING_FAILED') && /refused/.test((e as Error).message),
    )
    await assert.rejects(natPmpMapUdp('127.0.0.1', 40000, 40000, 60, { timeoutMs: 600, port: silent.port }), (e) => isDhtnetError(e, 'TIMEOUT'))
    assert.ok(silent.requests.length >= 2, 'the request was retransmitted')
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 50)
    await assert.rejects(natPmpMapUdp('127.0.0.1', 40000, 40000, 60, { timeoutMs: 5000, port: silent.port, signal: ac.signal }), (e) => isDhtnetError(e, 'ABORTED'))
    const pm = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: silent.port, upnp: false, natPmpDiscoveryTimeoutMs: 300 })
    await assert.rejects(pm.mapUdp(40000), (e) => isDhtnetError(e, 'NO_GATEWAY') && /NAT-PMP/.test((e as Error).message))
    await pm.close()
    const pm2 = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: silent.port, upnp: false, natPmpDiscoveryTimeoutMs: 3000, mapTimeoutMs: 300 })
    await assert.rejects(pm2.mapUdp(40000), (e) => isDhtnetError(e, 'TIMEOUT'))
    await pm2.close()
  } finally {
    await refusing.close()
    await silent.close()
  }
})
