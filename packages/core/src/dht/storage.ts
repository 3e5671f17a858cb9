/**
 * Local value storage of a DHT node: per-type expiration, quotas (per value, per key, total, per source IP),
 * OpenDHT's edit policy, and a signature check of signed values on store (SecureDht's store policy).
 * Pure data structure: the node drives expiration (`expire(now)`) and tells listeners about changes.
 *
 * Checks run cheapest first — expiration, size, the owner key policy (a DER check, microseconds), the edit policy,
 * the quotas — and the signature verification last, within a budget of verifications per second per source IP
 * and overall (values, not requests: one put may carry dozens). Expiration and eviction use indexed heaps (one by
 * expiration, one per source IP by age, one of the IPs by bytes held), so a put at the full quota costs O(log n).
 */
import { Field, type Query, type FieldFilter } from './wire.js'
import { type DhtValue, packValue, valueTypeExpirationMs, checkValueSignature, ownerKeyId } from './value-shim.js'
import { rsaSpkiProblem } from '../identity/key-policy.js'
import { PublicKeyCache } from './key-cache.js'
import { RateLimiter, type RateLimitOptions } from './rate-limiter.js'
import { IndexedHeap } from './heap.js'

export interface StorageLimits {
  /** largest packed value (default 64 KiB) */
  maxValueSize?: number
  /** values per key (default 65,536) */
  maxValuesPerKey?: number
  /** all remote values together, bytes (default 64 MiB) */
  maxTotalBytes?: number
  /** values from one source IP together, bytes (default 8 MiB) */
  maxBytesPerIp?: number
  /** distinct keys (default 262,144) */
  maxKeys?: number
}

export interface StoredValue {
  value: DhtValue
  packed: Buffer
  /** ms timestamps */
  created: number
  expiration: number
  /** source IP, undefined for our own values */
  source?: string
  permanent: boolean
}

/** A stored value with its places in the storage's heaps. */
interface Entry extends StoredValue {
  /** hex key */
  key: string
  /** insertion order, breaks ties between equal creation times */
  seq: number
  expPos: number
  agePos: number
}

/** The values of one source IP, oldest first, and its place in the "largest IP" heap. */
interface IpRecord {
  ip: string
  bytes: number
  byAge: IndexedHeap<Entry>
  pos: number
}

export interface StorageOptions {
  /** signature verifications of others' values, per second per source IP and overall (default 128 and 1024) */
  verifyLimit?: RateLimitOptions
  /** parsed owner keys (default: a cache of 4,096) */
  keys?: PublicKeyCache
  now?: () => number
}

export type StoreOutcome =
  | { stored: true; kind: 'new' | 'edit' | 'refresh'; entry: StoredValue; evicted: Array<{ key: string; entry: StoredValue }> }
  | {
      stored: false
      reason: 'too-big' | 'too-many-values' | 'ip-quota' | 'total-quota' | 'too-many-keys' | 'edit-refused' | 'bad-signature' | 'rejected-key' | 'verify-budget' | 'expired'
    }

function hex(b: Buffer): string {
  return b.toString('hex')
}

/** true when `v` satisfies every WHERE filter of the query */
export function matchesWhere(v: DhtValue, where: FieldFilter[]): boolean {
  for (const f of where) {
    switch (f.field) {
      case Field.Id:
        if (v.id !== f.value) return false
        break
      case Field.ValueType:
        if (BigInt(v.type) !== f.value) return false
        break
      case Field.SeqNum:
        if (BigInt(v.seq ?? 0) !== f.value) return false
        break
      case Field.OwnerPk: {
        const kid = ownerKeyId(v)
        if (!kid || !kid.equals(f.value as Buffer)) return false
        break
      }
      case Field.UserType:
        if (!Buffer.from(v.userType ?? '').equals(f.value as Buffer)) return false
        break
      default:
        return false
    }
  }
  return true
}

export function matchesQuery(v: DhtValue, q: Query | undefined): boolean {
  return !q || matchesWhere(v, q.where)
}

export class Storage {
  private readonly keys = new Map<string, Map<bigint, Entry>>()
  private readonly ips = new Map<string, IpRecord>()
  /** every value, soonest expiration first */
  private readonly byExpiration = new IndexedHeap<Entry>(
    (a, b) => a.expiration < b.expiration,
    (e, i) => {
      e.expPos = i
    },
    (e) => e.expPos,
  )
  /** source IPs, largest first */
  private readonly byIpBytes = new IndexedHeap<IpRecord>(
    (a, b) => a.bytes > b.bytes,
    (r, i) => {
      r.pos = i
    },
    (r) => r.pos,
  )
  private totalRemote = 0
  private totalLocal = 0
  private count = 0
  private seq = 0
  readonly limits: Required<StorageLimits>
  readonly ownerKeys: PublicKeyCache
  private readonly verifyLimiter: RateLimiter
  /** values refused, for any reason */
  rejected = 0
  /** signed values refused because their owner key is outside the key policy */
  rejectedKeys = 0
  /** signed values dropped unverified: their source was over its verification budget */
  verifyDrops = 0
  /** signed values whose signature did not verify */
  badSignatures = 0

  constructor(
    limits: StorageLimits = {},
    private readonly expirationOf: (type: number) => number = valueTypeExpirationMs,
    opts: StorageOptions = {},
  ) {
    this.limits = {
      maxValueSize: limits.maxValueSize ?? 64 * 1024,
      maxValuesPerKey: limits.maxValuesPerKey ?? 65536,
      maxTotalBytes: limits.maxTotalBytes ?? 64 * 1024 * 1024,
      maxBytesPerIp: limits.maxBytesPerIp ?? 8 * 1024 * 1024,
      maxKeys: limits.maxKeys ?? 262144,
    }
    this.ownerKeys = opts.keys ?? new PublicKeyCache()
    this.verifyLimiter = new RateLimiter({ perIp: 128, overall: 1024, ...opts.verifyLimit }, opts.now)
  }

  get valueCount(): number {
    return this.count
  }

  get keyCount(): number {
    return this.keys.size
  }

  get totalBytes(): number {
    return this.totalRemote + this.totalLocal
  }

  bytesFrom(ip: string): number {
    return this.ips.get(ip)?.bytes ?? 0
  }

  get(key: Buffer, query?: Query): StoredValue[] {
    if (this.keys.size === 0) return []
    const m = this.keys.get(hex(key))
    if (!m) return []
    const out: StoredValue[] = []
    for (const e of m.values()) if (matchesQuery(e.value, query)) out.push(e)
    return out
  }

  getById(key: Buffer, id: bigint): StoredValue | undefined {
    return this.keys.get(hex(key))?.get(id)
  }

  hasKey(key: Buffer): boolean {
    return this.keys.has(hex(key))
  }

  *entries(): Generator<[string, StoredValue]> {
    for (const [k, m] of this.keys) for (const e of m.values()) yield [k, e]
  }

  /**
   * Store a value. `createdMs` is capped at `now`; expiration = created + type expiration (none when permanent,
   * which only local values may be). `source` is the sender's IP, undefined for local puts (no budget applies).
   */
  store(key: Buffer, value: DhtValue, createdMs: number, now: number, source?: string, permanent = false, packed?: Buffer): StoreOutcome {
    const created = Math.min(createdMs, now)
    const expiration = permanent && source === undefined ? Infinity : created + this.expirationOf(value.type)
    if (expiration <= now) return this.reject('expired')
    const bytes = packed ?? packValue(value)
    if (bytes.length > this.limits.maxValueSize || bytes.length > this.limits.maxTotalBytes) return this.reject('too-big')
    const signed = value.owner !== undefined && value.owner.length > 0 && !value.cypher
    if (signed && rsaSpkiProblem(value.owner!)) {
      this.rejectedKeys++
      return this.reject('rejected-key')
    }
    const k = hex(key)
    let m = this.keys.get(k)
    const old = m?.get(value.id)
    if (old) {
      if (old.packed.equals(bytes)) {
        // an identical re-put refreshes: nothing to verify again
        if (expiration > old.expiration) this.setExpiration(old, expiration)
        return { stored: true, kind: 'refresh', entry: old, evicted: [] }
      }
      if (!editAllowed(old.value, value)) return this.reject('edit-refused')
    } else {
      if (!m && this.keys.size >= this.limits.maxKeys) return this.reject('too-many-keys')
      if (m && m.size >= this.limits.maxValuesPerKey) return this.reject('too-many-values')
    }
    const delta = bytes.length - (old && old.source === source ? old.packed.length : 0)
    if (source !== undefined && this.bytesFrom(source) + delta > this.limits.maxBytesPerIp) return this.reject('ip-quota')
    if (signed) {
      // the only costly check, last, within the source's budget
      if (source !== undefined && !this.verifyLimiter.allow(source)) {
        this.verifyDrops++
        return this.reject('verify-budget')
      }
      const check = checkValueSignature(value, this.ownerKeys)
      if (check !== 'ok') {
        if (check === 'rejected-key') this.rejectedKeys++
        else this.badSignatures++
        return this.reject(check)
      }
    }
    if (old) this.removeEntry(old)
    const evicted: Array<{ key: string; entry: StoredValue }> = []
    if (source !== undefined) {
      // evict the oldest values of the IP using the most storage, as OpenDHT does, until the new one fits
      while (this.totalRemote + bytes.length > this.limits.maxTotalBytes) {
        const victim = this.byIpBytes.peek()?.byAge.peek()
        if (!victim) break // cannot happen: bytes.length <= maxTotalBytes
        this.removeEntry(victim)
        evicted.push({ key: victim.key, entry: victim })
      }
    }
    m = this.keys.get(k)
    if (!m) {
      m = new Map()
      this.keys.set(k, m)
    }
    const entry: Entry = {
      value,
      packed: bytes,
      created,
      expiration,
      permanent: permanent && source === undefined,
      key: k,
      seq: this.seq++,
      expPos: -1,
      agePos: -1,
    }
    if (source !== undefined) entry.source = source
    m.set(value.id, entry)
    this.addEntry(entry)
    return { stored: true, kind: old ? 'edit' : 'new', entry, evicted }
  }

  private reject(reason: Exclude<StoreOutcome, { stored: true }>['reason']): StoreOutcome {
    this.rejected++
    return { stored: false, reason }
  }

  private addEntry(e: Entry): void {
    const n = e.packed.length
    this.count++
    this.byExpiration.push(e)
    if (e.source === undefined) {
      this.totalLocal += n
      return
    }
    this.totalRemote += n
    let r = this.ips.get(e.source)
    if (!r) {
      r = {
        ip: e.source,
        bytes: 0,
        pos: -1,
        byAge: new IndexedHeap<Entry>(
          (a, b) => a.created < b.created || (a.created === b.created && a.seq < b.seq),
          (x, i) => {
            x.agePos = i
          },
          (x) => x.agePos,
        ),
      }
      this.ips.set(e.source, r)
      this.byIpBytes.push(r)
    }
    r.bytes += n
    r.byAge.push(e)
    this.byIpBytes.update(r)
  }

  private removeEntry(e: Entry): void {
    if (!this.byExpiration.has(e)) return // not stored (any more)
    const m = this.keys.get(e.key)
    if (m && m.get(e.value.id) === e) {
      m.delete(e.value.id)
      if (m.size === 0) this.keys.delete(e.key)
    }
    const n = e.packed.length
    this.count--
    this.byExpiration.remove(e)
    if (e.source === undefined) {
      this.totalLocal -= n
      return
    }
    this.totalRemote -= n
    const r = this.ips.get(e.source)!
    r.bytes -= n
    r.byAge.remove(e)
    if (r.byAge.size === 0) {
      this.byIpBytes.remove(r)
      this.ips.delete(e.source)
    } else this.byIpBytes.update(r)
  }

  /** Change a stored value's expiration (e.g. a permanent local put cancelled: it now expires normally). */
  setExpiration(e: StoredValue, expiration: number): void {
    const entry = e as Entry
    entry.expiration = expiration
    this.byExpiration.update(entry)
  }

  /** Extend a value's life by its type's expiration from now. False when the key is unknown (→ 404). */
  refresh(key: Buffer, id: bigint, now: number): { keyKnown: boolean; entry?: StoredValue } {
    const m = this.keys.get(hex(key))
    if (!m) return { keyKnown: false }
    const e = m.get(id)
    if (!e) return { keyKnown: true }
    const next = now + this.expirationOf(e.value.type)
    if (e.expiration !== Infinity && next > e.expiration) this.setExpiration(e, next)
    return { keyKnown: true, entry: e }
  }

  remove(key: Buffer, id: bigint): StoredValue | undefined {
    const e = this.keys.get(hex(key))?.get(id)
    if (e) this.removeEntry(e)
    return e
  }

  /** Remove expired values; returns them grouped by key (hex). */
  expire(now: number): Map<string, StoredValue[]> {
    const out = new Map<string, StoredValue[]>()
    for (let e = this.byExpiration.peek(); e && e.expiration <= now; e = this.byExpiration.peek()) {
      this.removeEntry(e)
      let l = out.get(e.key)
      if (!l) out.set(e.key, (l = []))
      l.push(e)
    }
    return out
  }

  /** Earliest expiration among stored values (Infinity when none). */
  nextExpiration(): number {
    return this.byExpiration.peek()?.expiration ?? Infinity
  }

  clear(): void {
    this.keys.clear()
    this.ips.clear()
    this.byExpiration.clear()
    this.byIpBytes.clear()
    this.totalLocal = this.totalRemote = this.count = 0
  }
}

/** OpenDHT's default edit policy: only signed values, by the same owner, with a higher seq. */
export function editAllowed(old: DhtValue, next: DhtValue): boolean {
  if (!old.owner || old.owner.length === 0 || !next.owner) return false
  if (!old.owner.equals(next.owner)) return false
  return (next.seq ?? 0) > (old.seq ?? 0)
}
