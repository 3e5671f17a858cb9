/**
 * PortMapper's TCP mappings against a fake NAT-PMP gateway on loopback: opcode 2, the lease in seconds, the local
 * address the mapping forwards to, renewal at half the granted lease, unmapping with lifetime 0, UDP and TCP
 * mappings of the same port held apart, close() removing both, the map timeout. The real gateway (miniupnpd, NAT-PMP
 * and UPnP IGD) is natlab-upnp-tcp.test.ts.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket } from 'node:dgram'
import { once } from 'node:events'
import { PortMapper } from '../src/nat/port-mapper.js'
import { natPmpMapTcp } from '../src/nat/natpmp.js'
import { tcpMappedCandidate } from '../src/nat/mapped-candidate.js'
import { isDhtnetError } from '../src/errors.js'

/** A fake NAT-PMP gateway: external address 198.51.100.7, external port = internal + 1000, lifetime min(asked, max). */
async function fakeGateway(options: { maxLifetimeS?: number; silentForTcp?: boolean } = {}): Promise<{ port: number; requests: Buffer[]; close(): Promise<void> }> {
  const s: Socket = createSocket('udp4')
  const requests: Buffer[] = []
  s.on('message', (req, rinfo) => {
    requests.push(req)
    let reply: Buffer
    if (req[1] === 0) {
      reply = Buffer.alloc(12)
      reply[1] = 128
      Buffer.from([198, 51, 100, 7]).copy(reply, 8)
    } else {
      if (options.silentForTcp && req[1] === 2) return
      const asked = req.readUInt32BE(8)
      const lifetime = Math.min(asked, options.maxLifetimeS ?? asked)
      reply = Buffer.alloc(16)
      reply[1] = 128 + req[1]!
      reply.writeUInt16BE(req.readUInt16BE(4), 8)
      reply.writeUInt16BE(asked === 0 ? 0 : req.readUInt16BE(4) + 1000, 10)
      reply.writeUInt32BE(lifetime, 12)
    }
    s.send(reply, rinfo.port, rinfo.address)
  })
  s.bind(0, '127.0.0.1')
  await once(s, 'listening')
  return { port: s.address().port, requests, close: () => new Promise<void>((r) => s.close(() => r())) }
}

const tcpRequests = (reqs: Buffer[]) => reqs.filter((r) => r[1] === 2)
const udpRequests = (reqs: Buffer[]) => reqs.filter((r) => r[1] === 1)

test('mapTcp over NAT-PMP: opcode 2, lease in seconds, the local address, the ICE-TCP candidate; unmapTcp with lifetime 0', async () => {
  const gw = await fakeGateway()
  const lines: string[] = []
  const pm = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false, leaseS: 600, log: (l, m) => lines.push(`${l} ${m}`) })
  try {
    const m = await pm.mapTcp(40000)
    assert.deepEqual(m, { externalIp: '198.51.100.7', externalPort: 41000, internalPort: 40000, protocol: 'TCP', via: 'natpmp', internalIp: '127.0.0.1' })
    const req = tcpRequests(gw.requests)[0]!
    assert.deepEqual([req[0], req[1], req.readUInt16BE(4), req.readUInt16BE(6), req.readUInt32BE(8)], [0, 2, 40000, 40000, 600])
    assert.deepEqual(tcpMappedCandidate(m), { address: '198.51.100.7', port: 41000, localAddress: '127.0.0.1' })
    assert.ok(
      lines.some((l) => l.includes('UPnP: TCP 198.51.100.7:41000 → local port 40000 (natpmp)')),
      lines.join('\n'),
    )
    assert.equal(await pm.mapTcp(40000), m, 'a second call returns the mapping held')
    await pm.unmapTcp(40000)
    const unmap = tcpRequests(gw.requests).at(-1)!
    assert.deepEqual([unmap[1], unmap.readUInt16BE(4), unmap.readUInt16BE(6), unmap.readUInt32BE(8)], [2, 40000, 0, 0], 'TCP opcode, port, external 0, lifetime 0')
    assert.equal(pm.mappings.length, 0)
    assert.equal(udpRequests(gw.requests).length, 0, 'no UDP request for a TCP mapping')
  } finally {
    await pm.close()
    await gw.close()
  }
})

test('UDP and TCP mappings of the same port are held apart; close() removes both with their own opcodes', async () => {
  const gw = await fakeGateway()
  const pm = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false })
  try {
    const udp = await pm.mapUdp(40010)
    const tcp = await pm.mapTcp(40010)
    assert.equal(udp.protocol, 'UDP')
    assert.equal(tcp.protocol, 'TCP')
    assert.equal(udp.internalIp, undefined, 'UDP mappings are unchanged')
    assert.equal(pm.mappings.length, 2)
    await pm.unmapUdp(40010)
    assert.deepEqual(
      pm.mappings.map((x) => x.protocol),
      ['TCP'],
      'unmapping UDP leaves the TCP mapping',
    )
    await pm.mapUdp(40011)
    await pm.close()
    const removals = gw.requests.filter((r) => r[1] !== 0 && r.readUInt32BE(8) === 0).map((r) => `${r[1] === 2 ? 'TCP' : 'UDP'}:${r.readUInt16BE(4)}`)
    assert.deepEqual(removals.sort(), ['TCP:40010', 'UDP:40010', 'UDP:40011'])
    assert.equal(pm.mappings.length, 0)
    await assert.rejects(pm.mapTcp(40012), (e) => isDhtnetError(e, 'ABORTED'))
  } finally {
    await pm.close()
    await gw.close()
  }
})

test('a TCP mapping is renewed at half the lease the gateway granted; close() stops the renewals', { timeout: 30_000 }, async () => {
  const gw = await fakeGateway({ maxLifetimeS: 2 })
  const pm = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false, leaseS: 7200 })
  try {
    await pm.mapTcp(40020)
    await new Promise((r) => setTimeout(r, 2600))
    const renewals = tcpRequests(gw.requests).filter((r) => r.readUInt32BE(8) === 7200)
    assert.ok(renewals.length >= 3, `${renewals.length} requests in 2.6 s with a granted lease of 2 s (1 + renewals every 1 s)`)
    await pm.close()
    const after = gw.requests.length
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal(gw.requests.length, after, 'no renewal after close()')
  } finally {
    await pm.close()
    await gw.close()
  }
})

test('mapTcp is bounded by mapTimeoutMs (TIMEOUT), aborts with the signal (ABORTED), checks its port', async () => {
  const gw = await fakeGateway({ silentForTcp: true })
  const pm = new PortMapper({ natPmpGateway: '127.0.0.1', natPmpPort: gw.port, upnp: false, mapTimeoutMs: 500 })
  try {
    const t0 = Date.now()
    await assert.rejects(pm.mapTcp(40030), (e) => isDhtnetError(e, 'TIMEOUT') && /TCP port 40030/.test((e as Error).message))
    assert.ok(Date.now() - t0 < 3000)
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 50)
    await assert.rejects(pm.mapTcp(40031, { signal: ac.signal }), (e) => isDhtnetError(e, 'ABORTED'))
    await assert.rejects(pm.mapTcp(0), (e) => isDhtnetError(e, 'INVALID_ARGUMENT'))
    await assert.rejects(natPmpMapTcp('127.0.0.1', 40032, 40032, 60, { timeoutMs: 300, port: gw.port }), (e) => isDhtnetError(e, 'TIMEOUT'))
    assert.equal(pm.mappings.length, 0)
  } finally {
    await pm.close()
    await gw.close()
  }
})
