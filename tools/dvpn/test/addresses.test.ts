// Addresses (DHTNet's prefix form, CIDR, RFC 5952 formatting, the default networks) and the server's address pool
// (lowest free host, grace period then freed, same addresses back for a reconnecting device, pins, limits).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  defaultNetworks,
  formatIPv4,
  formatIPv6,
  formatSubnet4,
  formatSubnet6,
  hostOf,
  inSubnet6,
  parseAddressSpec4,
  parseAddressSpec6,
  parseIPv4,
  parseIPv6,
} from '../src/addresses.js'
import { AddressPool, type Lease } from '../src/pool.js'

test('IPv4 and IPv6: parse and canonical text (RFC 5952)', () => {
  assert.equal(formatIPv4(parseIPv4('10.60.78.254')), '10.60.78.254')
  assert.throws(() => parseIPv4('10.60.78.'), /not an IPv4 address/)
  const cases: Array<[string, string]> = [
    ['fd00:0:0:2::0', 'fd00:0:0:2::'],
    ['FD00:0000:0000:0001:0000:0000:0000:0001', 'fd00:0:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
  ]
  for (const [text, canonical] of cases) assert.equal(formatIPv6(parseIPv6(text)), canonical, text)
  assert.throws(() => parseIPv6('fd00::1::2'), /not an IPv6 address/)
  assert.equal(hostOf('[fd00::1]:4000'), 'fd00::1')
  assert.equal(hostOf('198.51.100.7:5000'), '198.51.100.7')
  assert.equal(hostOf(undefined), undefined)
})

test("DHTNet's prefix forms, CIDR and bare addresses", () => {
  // the captured configuration (dhtnet-captures/dvpn/vpn-config.yaml)
  const s4 = parseAddressSpec4('10.80.77.')
  assert.equal(formatSubnet4(s4.subnet), '10.80.77.0/24')
  assert.equal(s4.address, undefined)
  const s6 = parseAddressSpec6('fd00:0:0:1::')
  assert.equal(formatSubnet6(s6.subnet), 'fd00:0:0:1::/64')
  assert.equal(s6.address, undefined)
  const a = parseAddressSpec4('10.1.2.3/16')
  assert.equal(formatSubnet4(a.subnet), '10.1.0.0/16')
  assert.equal(formatIPv4(a.address!), '10.1.2.3')
  assert.equal(formatIPv4(parseAddressSpec4('192.168.7.1').address!), '192.168.7.1')
  assert.equal(formatSubnet6(parseAddressSpec6('fd12::5/120').subnet), 'fd12::/120')
  assert.throws(() => parseAddressSpec4('10.0.0.0/31'), /8 to 30/)
  assert.throws(() => parseAddressSpec6('fd00::/127'), /48 to 126/)
})

test('default networks: a private /24 and a ULA /64, stable for one id, different between ids', () => {
  const a = defaultNetworks('aa'.repeat(32))
  const b = defaultNetworks('bb'.repeat(32))
  assert.deepEqual(defaultNetworks('aa'.repeat(32)), a)
  assert.notDeepEqual(a, b)
  assert.match(formatSubnet4(a.v4), /^10\.\d+\.\d+\.0\/24$/)
  assert.ok(inSubnet6(a.v6.network, { network: 0xfdn << 120n, prefix: 8 }), 'fd00::/8 (ULA)')
  assert.equal(a.v6.prefix, 64)
})

function pool(o: Partial<ConstructorParameters<typeof AddressPool>[0]> = {}, freed: Lease[] = []): AddressPool {
  return new AddressPool({
    v4: parseAddressSpec4('10.60.78.').subnet,
    v6: parseAddressSpec6('fd00:0:0:2::').subnet,
    reserved4: [parseIPv4('10.60.78.1')],
    graceMs: 200,
    onFreed: (l) => freed.push(l),
    ...o,
  })
}

const peer = (n: number) => ({ id: n.toString(16).padStart(40, '0'), longId: n.toString(16).padStart(64, '0') })

test('pool: lowest free host, the server address skipped, IPv4 and IPv6 paired', () => {
  const p = pool()
  const a = p.acquire(peer(1))
  const b = p.acquire(peer(2))
  assert.ok(a.ok && b.ok)
  assert.equal(a.lease.describe(), '10.60.78.2, fd00:0:0:2::2')
  assert.equal(b.lease.describe(), '10.60.78.3, fd00:0:0:2::3')
  assert.equal(p.capacity, 254)
  p.close()
})

test('pool: a leaving device keeps its addresses for the grace period, then they are freed', async () => {
  const freed: Lease[] = []
  const p = pool({}, freed)
  const a = p.acquire(peer(1))
  assert.ok(a.ok)
  p.release(a.lease)
  // another device does not get them during the grace period
  const other = p.acquire(peer(2))
  assert.ok(other.ok)
  assert.notEqual(other.lease.v4, a.lease.v4)
  // the same device does, even without its token (a C++ client has none)
  const back = p.acquire(peer(1))
  assert.ok(back.ok && back.resumed && !back.replaced)
  assert.equal(back.lease, a.lease)
  p.release(back.lease)
  await new Promise((r) => setTimeout(r, 400))
  assert.deepEqual(
    freed.map((l) => l.describe()),
    ['10.60.78.2, fd00:0:0:2::2'],
  )
  const c = p.acquire(peer(3))
  assert.ok(c.ok)
  assert.equal(formatIPv4(c.lease.v4), '10.60.78.2', 'free again')
  p.close()
})

test('pool: a reconnection naming its token takes over the live lease (the old session is replaced)', () => {
  const p = pool()
  const a = p.acquire(peer(1))
  const b = p.acquire(peer(1)) // a second session of the same device: its own addresses
  assert.ok(a.ok && b.ok)
  assert.notEqual(a.lease.v4, b.lease.v4)
  const token = a.lease.token
  const again = p.acquire(peer(1), token)
  assert.ok(again.ok && again.replaced && again.resumed)
  assert.equal(again.lease, a.lease)
  assert.notEqual(again.lease.token, token, 'a new token each time')
  p.close()
})

test('pool: pins, limits, a full pool', () => {
  const pinned = peer(7)
  const p = pool({ pins: new Map([[pinned.longId, { v4: parseIPv4('10.60.78.9'), v6: parseIPv6('fd00:0:0:2::99') }]]), maxLivePerPeer: 2 })
  const a = p.acquire(pinned)
  assert.ok(a.ok)
  assert.equal(a.lease.describe(), '10.60.78.9, fd00:0:0:2::99')
  const again = p.acquire(pinned)
  assert.ok(again.ok && again.replaced, 'a pinned device has one session: the new one replaces the old')
  assert.ok(p.acquire(peer(1)).ok && p.acquire(peer(1)).ok)
  const third = p.acquire(peer(1))
  assert.ok(!third.ok && /already has 2 sessions/.test(third.reason))
  p.close()
  assert.throws(() => pool({ pins: new Map([['x', { v4: parseIPv4('10.9.9.9') }]]) }), /outside the clients' subnet/)
  assert.throws(() => pool({ pins: new Map([['x', { v4: parseIPv4('10.60.78.1') }]]) }), /the server's/)
  const small = pool({ v4: parseAddressSpec4('10.5.5.0/30').subnet, reserved4: [] })
  assert.equal(small.capacity, 2)
  assert.ok(small.acquire(peer(1)).ok && small.acquire(peer(2)).ok)
  const full = small.acquire(peer(3))
  assert.ok(!full.ok && /pool is full/.test(full.reason))
  small.close()
})

test('pool: after its lease expired, a device asking for its old address gets it back when nobody took it', async () => {
  const p = pool({ graceMs: 10 })
  const a = p.acquire(peer(1))
  const b = p.acquire(peer(2))
  assert.ok(a.ok && b.ok)
  const old4 = a.lease.v4
  p.release(a.lease)
  p.release(b.lease)
  await new Promise((r) => setTimeout(r, 50))
  assert.equal(p.size, 0, 'both freed')
  // peer 1 comes back first asking for its old address; peer 3 asks for one that is taken, and gets the lowest free
  const back = p.acquire(peer(1), 'stale-token', old4)
  assert.ok(back.ok && !back.resumed)
  assert.equal(back.lease.v4, old4)
  const other = p.acquire(peer(3), undefined, old4)
  assert.ok(other.ok)
  assert.notEqual(other.lease.v4, old4)
  // the server's own address is never given, even when asked for
  const server = p.acquire(peer(4), undefined, parseIPv4('10.60.78.1'))
  assert.ok(server.ok)
  assert.notEqual(formatIPv4(server.lease.v4), '10.60.78.1')
  p.close()
})
