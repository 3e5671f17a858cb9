/**
 * Storage hardening (dht/storage.ts): the heap-based expiry and eviction give exactly what OpenDHT's rule gives
 * (checked against a naive reference model over thousands of random operations), and signature verification of
 * values put by others is bounded per source IP in values per second, after the cheap checks.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Storage, editAllowed } from '../src/dht/storage.js'
import { packValue, type DhtValue } from '../src/dht/value.js'
import { signValue } from '../src/dht/crypto.js'
import { randomHash } from '../src/dht/infohash.js'
import { hugeExponentKey, junkSignedValue, ordinaryKey } from './helpers/dht-attack.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

/** The storage rules written the obvious way (linear scans), as the code was before the heaps. */
class ReferenceStorage {
  values = new Map<string, { key: string; v: DhtValue; bytes: number; created: number; expiration: number; source: string; seq: number }>()
  seq = 0
  constructor(
    readonly maxTotal: number,
    readonly maxPerIp: number,
    readonly life: number,
  ) {}
  total(): number {
    let t = 0
    for (const e of this.values.values()) t += e.bytes
    return t
  }
  from(ip: string): number {
    let t = 0
    for (const e of this.values.values()) if (e.source === ip) t += e.bytes
    return t
  }
  /**
   * Apply a put; `evictedByStorage` are the victims the storage chose, each checked against the rule (the oldest
   * value of an IP holding the most bytes — ties between IPs may go either way) before it is applied here.
   */
  store(key: string, v: DhtValue, created: number, now: number, source: string, evictedByStorage: string[]): { stored: boolean; problem?: string } {
    const bytes = packValue(v).length
    const id = `${key}|${v.id}`
    const old = this.values.get(id)
    if (old && !editAllowed(old.v, v)) return { stored: false }
    const delta = bytes - (old && old.source === source ? old.bytes : 0)
    if (this.from(source) + delta > this.maxPerIp) return { stored: false }
    if (old) this.values.delete(id)
    const victims = [...evictedByStorage]
    while (this.total() + bytes > this.maxTotal) {
      const victim = victims.shift()
      if (!victim) return { stored: true, problem: 'the storage evicted too little' }
      const per = new Map<string, number>()
      for (const e of this.values.values()) per.set(e.source, (per.get(e.source) ?? 0) + e.bytes)
      const max = Math.max(...per.values())
      const e = this.values.get(victim)
      if (!e) return { stored: true, problem: `evicted ${victim}, which is not stored` }
      if (per.get(e.source) !== max) return { stored: true, problem: `evicted from ${e.source} (${per.get(e.source)} bytes), not from an IP holding ${max}` }
      for (const x of this.values.values()) {
        if (x.source === e.source && (x.created < e.created || (x.created === e.created && x.seq < e.seq)))
          return { stored: true, problem: `evicted ${victim}, not the oldest of ${e.source}` }
      }
      this.values.delete(victim)
    }
    if (victims.length) return { stored: true, problem: 'the storage evicted more than needed' }
    this.values.set(id, { key, v, bytes, created, expiration: created + this.life, source, seq: this.seq++ })
    return { stored: true }
  }
  expire(now: number): string[] {
    const out: string[] = []
    for (const [k, e] of this.values)
      if (e.expiration <= now) {
        out.push(k)
        this.values.delete(k)
      }
    return out
  }
}

test('heap eviction and expiry match the reference rules over 4,000 random puts, edits, refreshes and expiries', () => {
  const life = 20_000
  const maxTotal = 40_000,
    maxPerIp = 12_000
  const s = new Storage({ maxTotalBytes: maxTotal, maxBytesPerIp: maxPerIp, maxValueSize: 4000 }, () => life)
  const ref = new ReferenceStorage(maxTotal, maxPerIp, life)
  const keys = Array.from({ length: 30 }, () => randomHash())
  const ips = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']
  let seed = 7
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  let now = 1_000_000
  let evictions = 0,
    expiries = 0
  for (let i = 0; i < 4000; i++) {
    now += rnd(400)
    const op = rnd(20)
    if (op === 0) {
      const a = [...s.expire(now)].flatMap(([k, l]) => l.map((e) => `${k}|${e.value.id}`)).sort()
      const b = ref.expire(now).sort()
      assert.deepEqual(a, b, `expire at op ${i}`)
      expiries += a.length
      continue
    }
    const key = keys[rnd(keys.length)]!
    if (op === 1) {
      const vid = BigInt(1 + rnd(400))
      s.refresh(key, vid, now)
      const e = ref.values.get(`${key.toString('hex')}|${vid}`)
      if (e) e.expiration = Math.max(e.expiration, now + life)
      continue
    }
    const v: DhtValue = { id: BigInt(1 + rnd(400)), type: 0, data: Buffer.alloc(50 + rnd(1500), i & 0xff) }
    const created = now - rnd(5000)
    const ip = ips[rnd(ips.length)]!
    const r = s.store(key, v, created, now, ip)
    const evicted = r.stored ? r.evicted.map((e) => `${e.key}|${e.entry.value.id}`) : []
    const rr = ref.store(key.toString('hex'), v, Math.min(created, now), now, ip, evicted)
    assert.equal(r.stored, rr.stored, `store at op ${i}: ${r.stored ? '' : r.reason}`)
    assert.equal(rr.problem, undefined, `op ${i}`)
    evictions += evicted.length
    assert.equal(s.totalBytes, ref.total(), `total at op ${i}`)
    assert.equal(s.valueCount, ref.values.size)
    for (const x of ips) assert.equal(s.bytesFrom(x), ref.from(x), `bytes from ${x} at op ${i}`)
    assert.equal(s.nextExpiration(), ref.values.size ? Math.min(...[...ref.values.values()].map((e) => e.expiration)) : Infinity)
  }
  console.log(`reference check: ${evictions} evictions, ${expiries} expiries`)
  assert.ok(evictions > 200, `only ${evictions} evictions: the quota was not exercised`)
  assert.ok(expiries > 50, `only ${expiries} expiries`)
})

test('refresh and setExpiration re-order the expiry heap', () => {
  const s = new Storage({}, () => 1000)
  const k = randomHash()
  s.store(k, { id: 1n, type: 0, data: Buffer.from('a') }, 0, 0, '1.1.1.1')
  s.store(k, { id: 2n, type: 0, data: Buffer.from('b') }, 0, 0, '1.1.1.1')
  assert.equal(s.nextExpiration(), 1000)
  s.refresh(k, 1n, 500)
  s.setExpiration(s.getById(k, 2n)!, 3000)
  assert.equal(s.nextExpiration(), 1500)
  assert.deepEqual(
    s
      .expire(1500)
      .get(k.toString('hex'))!
      .map((e) => e.value.id),
    [1n],
  )
  assert.equal(s.nextExpiration(), 3000)
})

test('verification budget: one source gets 128 verifications a second, counted in values; others are still served', () => {
  let clock = 10_000_000
  const s = new Storage({}, undefined, { now: () => clock })
  const owner = ordinaryKey(2048)
  const alice = makeTestIdentity('alice', 2048)
  // 300 junk-signed values from one IP in one instant (a few put datagrams)
  const reasons = new Map<string, number>()
  for (let i = 0; i < 300; i++) {
    const r = s.store(randomHash(), junkSignedValue(BigInt(i + 1), owner, 256), clock, clock, '10.0.0.66')
    assert.equal(r.stored, false)
    reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1)
  }
  assert.deepEqual(Object.fromEntries(reasons), { 'bad-signature': 128, 'verify-budget': 172 })
  assert.equal(s.badSignatures, 128)
  assert.equal(s.verifyDrops, 172)
  // a genuine signed value from another source is verified and stored during the flood
  const good = signValue({ id: 9999n, type: 0, data: Buffer.from('legit') }, alice)
  assert.ok(s.store(randomHash(), good, clock, clock, '10.0.0.7').stored)
  // the flooder's own genuine value is over budget too, until its window has passed
  const own = signValue({ id: 10_000n, type: 0, data: Buffer.from('later') }, alice)
  const early = s.store(randomHash(), own, clock, clock, '10.0.0.66')
  assert.ok(!early.stored && early.reason === 'verify-budget')
  clock += 2100
  assert.ok(s.store(randomHash(), own, clock, clock, '10.0.0.66').stored)
  // an identical re-put refreshes without a verification; local puts have no budget
  const before = s.verifyDrops + s.badSignatures
  assert.equal((s.store(randomHash(), own, clock, clock, undefined) as { stored: boolean }).stored, true)
  assert.equal(s.verifyDrops + s.badSignatures, before)
})

test('keys outside the policy are refused before the budget and before any verification', () => {
  const clock = 5_000_000
  const s = new Storage({}, undefined, { now: () => clock })
  for (let i = 0; i < 300; i++) {
    const r = s.store(randomHash(), junkSignedValue(BigInt(i + 1), hugeExponentKey()), clock, clock, '10.0.0.66')
    assert.ok(!r.stored && r.reason === 'rejected-key')
  }
  assert.equal(s.rejectedKeys, 300)
  assert.equal(s.verifyDrops, 0)
  assert.equal(s.badSignatures, 0)
  // the budget of that source is untouched: its genuine value is verified at once
  const alice = makeTestIdentity('alice2', 2048)
  assert.ok(s.store(randomHash(), signValue({ id: 1n, type: 0, data: randomBytes(10) }, alice), clock, clock, '10.0.0.66').stored)
})
