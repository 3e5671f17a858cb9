import { test } from 'node:test'
import assert from 'node:assert/strict'
import { TokenManager } from '../src/dht/tokens.js'
import { RateLimiter } from '../src/dht/rate-limiter.js'
import { Reassembler } from '../src/dht/fragments.js'
import { Storage } from '../src/dht/storage.js'
import { RoutingTable, isGood } from '../src/dht/routing.js'
import { WireEncoder, decodeMessage } from '../src/dht/wire.js'
import { packValue, type DhtValue } from '../src/dht/value.js'
import { randomHash, xorCmp, commonBits, infoHash } from '../src/dht/infohash.js'
import { Field } from '../src/dht/wire.js'

test('tokens: bound to ip:port, previous secret accepted, two rotations invalidate', () => {
  let now = 0
  const t = new TokenManager(() => now)
  const tok = t.make('127.0.0.1', 4000)
  assert.equal(tok.length, 32)
  assert.ok(t.check(tok, '127.0.0.1', 4000))
  assert.ok(!t.check(tok, '127.0.0.1', 4001))
  assert.ok(!t.check(tok, '127.0.0.2', 4000))
  assert.ok(!t.check(Buffer.alloc(32), '127.0.0.1', 4000))
  assert.ok(!t.check(undefined, '127.0.0.1', 4000))
  t.rotate()
  assert.ok(t.check(tok, '127.0.0.1', 4000), 'previous secret still accepted')
  t.rotate()
  assert.ok(!t.check(tok, '127.0.0.1', 4000))
  // lazy rotation after 15–45 minutes
  const tok2 = t.make('::1', 5)
  now += 46 * 60_000
  assert.ok(t.check(tok2, '::1', 5))
  now += 46 * 60_000
  assert.ok(!t.check(tok2, '::1', 5))
})

test('rate limiter: per-IP and overall limits, windows slide, idle IPs purged', () => {
  let now = 1_000_000
  const r = new RateLimiter({ perIp: 10, overall: 25 }, () => now)
  let ok = 0
  for (let i = 0; i < 50; i++) if (r.allow('1.1.1.1')) ok++
  assert.equal(ok, 10)
  ok = 0
  for (let i = 0; i < 50; i++) if (r.allow(`2.2.2.${i % 5}`)) ok++
  assert.equal(ok, 15, 'overall limit of 25 reached')
  assert.equal(r.drops, 75)
  now += 2500
  assert.ok(r.allow('1.1.1.1'))
  now += 5000
  r.purge()
  assert.equal(r.trackedIps, 0)
  const unlimited = new RateLimiter({ perIp: -1, overall: -1 }, () => now)
  for (let i = 0; i < 10000; i++) assert.ok(unlimited.allow('3.3.3.3'))
})

function fragmentsOf(v: DhtValue, tid = 1) {
  const e = new WireEncoder({ myId: randomHash(), userAgent: 'x', network: 0, isClient: false })
  const out = e.put(tid, randomHash(), packValue(v), undefined, Buffer.alloc(32))
  return { header: decodeMessage(out.msg), parts: out.parts.map((p) => decodeMessage(p).fragments!) }
}

test('fragments: reassembled in order, out of order, with early parts before the header', () => {
  const v: DhtValue = { id: 77n, type: 0, data: Buffer.alloc(5000).fill('abc') }
  {
    const r = new Reassembler()
    const { header, parts } = fragmentsOf(v)
    assert.equal(r.header('k', header), undefined)
    let done
    for (const p of parts) done = r.fragment('k', p)
    assert.ok(done)
    assert.equal(done.values[0]!.data!.toString(), v.data!.toString())
    assert.equal(r.size, 0)
    assert.equal(r.bufferedBytes, 0)
  }
  {
    const r = new Reassembler()
    const { header, parts } = fragmentsOf(v)
    r.header('k', header)
    const rev = [...parts].reverse()
    let done
    for (const p of rev) done = r.fragment('k', p)
    assert.ok(done)
    assert.deepEqual(done.values[0]!.data, v.data)
  }
  {
    const r = new Reassembler()
    const { header, parts } = fragmentsOf(v)
    assert.equal(r.fragment('k', parts[1]!), undefined)
    assert.equal(r.fragment('k', parts[0]!), undefined)
    for (const p of parts.slice(2)) r.fragment('k', p)
    const done = r.header('k', header)
    assert.deepEqual(done!.values[0]!.data, v.data)
  }
})

test('fragments: overlapping or out-of-range parts ignored, timeouts drop partial messages, budget bounded', () => {
  let now = 0
  const v: DhtValue = { id: 78n, type: 0, data: Buffer.alloc(4000, 1) }
  const r = new Reassembler({ maxBytes: 10_000 }, () => now)
  const { header, parts } = fragmentsOf(v)
  r.header('a', header)
  r.fragment('a', parts[0]!)
  const dup = r.bufferedBytes
  r.fragment('a', parts[0]!)
  assert.equal(r.bufferedBytes, dup, 'duplicate ignored')
  r.fragment('a', new Map([[0, { offset: 999_999, data: Buffer.alloc(10) }]]))
  r.fragment('a', new Map([[5, { offset: 0, data: Buffer.alloc(10) }]]))
  assert.equal(r.bufferedBytes, dup)
  now += 3500 // more than 3 s since the last part
  r.sweep(true)
  assert.equal(r.size, 0)
  assert.equal(r.bufferedBytes, 0)
  // total timeout: 10 s even when parts keep trickling
  r.header('b', fragmentsOf(v).header)
  for (let i = 0; i < 5; i++) {
    now += 2500
    r.sweep(true)
  }
  assert.equal(r.size, 0)
  // early parts without a header are bounded
  const r2 = new Reassembler({ maxEarlyParts: 4 }, () => now)
  for (let i = 0; i < 10; i++) r2.fragment('c', new Map([[0, { offset: i * 10, data: Buffer.alloc(10) }]]))
  assert.ok(r2.bufferedBytes <= 40)
  // many partial messages: bounded count
  const r3 = new Reassembler({ maxPartials: 8 }, () => now)
  for (let i = 0; i < 100; i++) r3.header(`m${i}`, fragmentsOf(v, i).header)
  assert.equal(r3.size, 8)
})

const val = (id: bigint, size = 100, type = 0): DhtValue => ({ id, type, data: Buffer.alloc(size, Number(id % 200n)) })

test('storage: per-type expiration, refresh, quotas per value, per key, per IP, total (evicting the largest IP)', () => {
  const now = 1_000_000
  const key = randomHash()
  const s = new Storage({ maxValueSize: 1000, maxValuesPerKey: 3, maxBytesPerIp: 1500, maxTotalBytes: 2500 })
  assert.equal(s.store(key, val(1n, 2000), now, now, '1.1.1.1').stored, false)
  assert.ok(s.store(key, val(1n), now, now, '1.1.1.1').stored)
  assert.ok(s.store(key, val(2n), now, now, '1.1.1.1').stored)
  assert.ok(s.store(key, val(3n), now, now, '1.1.1.1').stored)
  const r = s.store(key, val(4n), now, now, '1.1.1.1')
  assert.ok(!r.stored && r.reason === 'too-many-values')
  // per-IP quota
  for (let i = 0; i < 20; i++) s.store(randomHash(), val(BigInt(100 + i), 200), now + i, now + i, '2.2.2.2')
  assert.ok(s.bytesFrom('2.2.2.2') <= 1500)
  // total quota: a third IP's values evict the oldest of the largest IP
  for (let i = 0; i < 10; i++) s.store(randomHash(), val(BigInt(200 + i), 200), now, now, '3.3.3.3')
  assert.ok(s.totalBytes <= 2500, `total ${s.totalBytes}`)
  assert.ok(s.bytesFrom('3.3.3.3') > 0)
  // expiration by type: USER_DATA 10 min, ICE_CANDIDATES 1 min
  const s2 = new Storage()
  s2.store(key, val(1n, 10, 0), now, now, '1.1.1.1')
  s2.store(key, val(2n, 10, 5), now, now, '1.1.1.1')
  assert.equal(s2.expire(now + 61_000).get(key.toString('hex'))?.length, 1)
  assert.equal(s2.refresh(key, 1n, now + 9 * 60_000).keyKnown, true)
  assert.equal(s2.expire(now + 11 * 60_000).size, 0, 'refreshed value survives its first expiration')
  assert.equal(s2.expire(now + 20 * 60_000).get(key.toString('hex'))?.length, 1)
  assert.equal(s2.refresh(randomHash(), 1n, now).keyKnown, false)
  // created in the future is capped at now; too old is refused
  assert.equal(s2.store(key, val(3n), now - 11 * 60_000, now, '1.1.1.1').stored, false)
})

test('storage: edit policy (unsigned values cannot be edited), WHERE filters', () => {
  const now = 5_000
  const key = randomHash()
  const s = new Storage()
  assert.ok(s.store(key, { id: 9n, type: 0, data: Buffer.from('a'), userType: 'text/plain' }, now, now, '1.1.1.1').stored)
  const same = s.store(key, { id: 9n, type: 0, data: Buffer.from('a'), userType: 'text/plain' }, now, now, '1.1.1.1')
  assert.ok(same.stored && same.kind === 'refresh')
  const edit = s.store(key, { id: 9n, type: 0, data: Buffer.from('b') }, now, now, '1.1.1.1')
  assert.ok(!edit.stored && edit.reason === 'edit-refused')
  s.store(key, { id: 10n, type: 3, data: Buffer.from('c') }, now, now, '1.1.1.1')
  assert.equal(s.get(key, { select: [], where: [{ field: Field.Id, value: 10n }] }).length, 1)
  assert.equal(s.get(key, { select: [], where: [{ field: Field.ValueType, value: 3n }] }).length, 1)
  assert.equal(s.get(key, { select: [], where: [{ field: Field.UserType, value: Buffer.from('text/plain') }] }).length, 1)
  assert.equal(s.get(key).length, 2)
  // a "signed" value whose owner is not even a key is refused before any verification
  const forged = s.store(key, { id: 11n, type: 0, data: Buffer.from('x'), owner: Buffer.alloc(300, 1), seq: 1, signature: Buffer.alloc(256) }, now, now, '1.1.1.1')
  assert.ok(!forged.stored && forged.reason === 'rejected-key')
  assert.equal(s.rejectedKeys, 1)
})

test('routing table version: changes with every change closest() can show, not when a known node is heard again', () => {
  let now = 10_000_000
  const t = new RoutingTable(randomHash(), 4, () => now)
  const ids = Array.from({ length: 40 }, () => randomHash())
  let v = t.version
  const changed = (what: string) => {
    assert.notEqual(t.version, v, what)
    v = t.version
  }
  const same = (what: string) => assert.equal(t.version, v, what)
  t.heard(ids[0]!, '127.0.0.1', 1000, false)
  changed('a new node')
  now += 1000
  t.heard(ids[0]!, '127.0.0.1', 1000, false)
  t.heard(ids[0]!, '127.0.0.1', 1000, true)
  same('a known node heard again at the same address')
  t.heard(ids[0]!, '127.0.0.1', 1001, true)
  changed('a node that moved')
  for (let i = 1; i < ids.length; i++) t.heard(ids[i]!, '127.0.0.2', 2000 + i, false)
  changed('new nodes and bucket splits')
  // a full bucket refusing a newcomer again and again: closest() cannot change
  const refused = ids.filter((id) => !t.get(id))
  assert.ok(refused.length > 0)
  v = t.version
  for (let i = 0; i < 5; i++) t.heard(refused[0]!, '127.0.0.3', 3000, false)
  same('a refused newcomer')
  t.remove(ids[1]!)
  changed('a removed node')
  t.learned(ids[1]!, '127.0.0.4', 4000) // back where there is room now
  assert.ok(t.get(ids[1]!))
  changed('a learned node')
  // expiry and revival (a small table: no replacement takes the expired node's place)
  const small = new RoutingTable(randomHash(), 4, () => now)
  small.heard(ids[0]!, '127.0.0.1', 1000, true)
  v = small.version
  small.failed(ids[0]!)
  assert.notEqual(small.version, v, 'an expired node')
  assert.equal(small.closest(ids[0]!, 8).length, 0)
  v = small.version
  small.heard(ids[0]!, '127.0.0.1', 1000, true)
  assert.notEqual(small.version, v, 'an expired node that answers again')
  assert.equal(small.closest(ids[0]!, 8).length, 1)
})

test('routing table: buckets of 8, only our bucket splits, good/dubious/expired nodes, replacements', () => {
  let now = 10_000_000
  const me = randomHash()
  const t = new RoutingTable(me, 4, () => now)
  const pings: string[] = []
  t.onPingNeeded = (n) => pings.push(n.id.toString('hex'))
  for (let i = 0; i < 300; i++) t.heard(randomHash(), '127.0.0.1', 1000 + i, true)
  const buckets = t.buckets()
  assert.ok(buckets.every((b) => b.nodes.length <= 8))
  assert.ok(buckets.length > 3)
  assert.ok(t.size < 300 && t.size >= 8 * 3)
  const target = randomHash()
  const c = t.closest(target, 8)
  for (let i = 1; i < c.length; i++) assert.ok(xorCmp(target, c[i - 1]!.id, c[i]!.id) < 0)
  assert.ok(t.all().every((n) => isGood(n, now)))
  now += 11 * 60_000 // not heard for 10 minutes: dubious
  assert.ok(t.all().every((n) => !isGood(n, now)))
  // a full far bucket with dubious nodes asks for a ping instead of taking the newcomer
  const far = buckets[0]!
  const newcomer = Buffer.from(far.nodes[0]!.id)
  newcomer[19]! ^= 0xff
  assert.equal(far.nodes.length, 8)
  {
    t.heard(newcomer, '127.0.0.9', 9, true)
    assert.ok(pings.length > 0)
    // the dubious node fails 3 times: the replacement takes its place
    const dub = t.get(Buffer.from(pings[0]!, 'hex'))!
    t.failed(dub.id)
    assert.equal(t.get(dub.id), undefined)
    assert.ok(t.get(newcomer))
  }
  // learned (unconfirmed) nodes never evict anything
  const before = t.size
  for (let i = 0; i < 50; i++) t.learned(randomHash(), '127.0.0.1', 5)
  assert.ok(t.size >= before)
  assert.equal(commonBits(me, me), 160)
  assert.equal(infoHash('node:256c44').length, 20)
})
