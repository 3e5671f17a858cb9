/**
 * Local value storage of a DHT node: per-type expiration, quotas (per value, per key, total, per source IP),
 * OpenDHT's edit policy, and a signature check of signed values on store (SecureDht's store policy).
 * Pure data structure: the node drives expiration (`expire(now)`) and tells listeners about changes.
 */
import { Field, type Query, type FieldFilter } from './wire.js'
import { type DhtValue, packValue, valueTypeExpirationMs, verifyValueSignature, ownerKeyId } from './value-shim.js'

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

export type StoreOutcome =
  | { stored: true; kind: 'new' | 'edit' | 'refresh'; entry: StoredValue; evicted: Array<{ key: string; entry: StoredValue }> }
  | { stored: false; reason: 'too-big' | 'too-many-values' | 'ip-quota' | 'total-quota' | 'too-many-keys' | 'edit-refused' | 'bad-signature' | 'expired' }

function hex(b: Buffer): string {
  return b.toString('hex')
}

/** true when `v` satisfies every WHERE filter of the query */
export function matchesWhere(v: DhtValue, where: FieldFilter[]): boolean {
  for (const f of where) {
    switch (f.field) {
      case Field.Id: if (v.id !== f.value) return false; break
      case Field.ValueType: if (BigInt(v.type) !== f.value) return false; break
      case Field.SeqNum: if (BigInt(v.seq ?? 0) !== f.value) return false; break
      case Field.OwnerPk: {
        const kid = ownerKeyId(v)
        if (!kid || !kid.equals(f.value as Buffer)) return false
        break
      }
      case Field.UserType: if (!Buffer.from(v.userType ?? '').equals(f.value as Buffer)) return false; break
      default: return false
    }
  }
  return true
}

export function matchesQuery(v: DhtValue, q: Query | undefined): boolean {
  return !q || matchesWhere(v, q.where)
}

export class Storage {
  private readonly keys = new Map<string, Map<bigint, StoredValue>>()
  private readonly perIp = new Map<string, number>()
  private totalRemote = 0
  private totalLocal = 0
  private count = 0
  readonly limits: Required<StorageLimits>
  rejected = 0

  constructor(limits: StorageLimits = {}, private readonly expirationOf: (type: number) => number = valueTypeExpirationMs) {
    this.limits = {
      maxValueSize: limits.maxValueSize ?? 64 * 1024,
      maxValuesPerKey: limits.maxValuesPerKey ?? 65536,
      maxTotalBytes: limits.maxTotalBytes ?? 64 * 1024 * 1024,
      maxBytesPerIp: limits.maxBytesPerIp ?? 8 * 1024 * 1024,
      maxKeys: limits.maxKeys ?? 262144,
    }
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
    return this.perIp.get(ip) ?? 0
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
   * which only local values may be). `source` is the sender's IP, undefined for local puts.
   */
  store(key: Buffer, value: DhtValue, createdMs: number, now: number, source?: string, permanent = false, packed?: Buffer): StoreOutcome {
    const created = Math.min(createdMs, now)
    const expiration = permanent && source === undefined ? Infinity : created + this.expirationOf(value.type)
    if (expiration <= now) return this.reject('expired')
    const bytes = packed ?? packValue(value)
    if (bytes.length > this.limits.maxValueSize) return this.reject('too-big')
    if (value.owner && value.owner.length > 0 && !value.cypher && !verifyValueSignature(value)) return this.reject('bad-signature')
    const k = hex(key)
    let m = this.keys.get(k)
    const old = m?.get(value.id)
    if (old) {
      if (old.packed.equals(bytes)) {
        old.expiration = Math.max(old.expiration, expiration)
        return { stored: true, kind: 'refresh', entry: old, evicted: [] }
      }
      if (!editAllowed(old.value, value)) return this.reject('edit-refused')
    } else {
      if (!m && this.keys.size >= this.limits.maxKeys) return this.reject('too-many-keys')
      if (m && m.size >= this.limits.maxValuesPerKey) return this.reject('too-many-values')
    }
    const delta = bytes.length - (old && old.source === source ? old.packed.length : 0)
    if (source !== undefined && this.bytesFrom(source) + delta > this.limits.maxBytesPerIp) return this.reject('ip-quota')
    const evicted: Array<{ key: string; entry: StoredValue }> = []
    if (source !== undefined && this.totalRemote + delta > this.limits.maxTotalBytes) {
      // evict the oldest values of the IP using the most storage, as OpenDHT does, until the new one fits
      while (this.totalRemote + delta > this.limits.maxTotalBytes) {
        const victim = this.oldestOfLargestIp(source)
        if (!victim) return this.reject('total-quota')
        this.removeEntry(victim.key, victim.entry)
        evicted.push(victim)
      }
    }
    if (!m) {
      m = new Map()
      this.keys.set(k, m)
    }
    if (old) this.account(old, -1)
    const entry: StoredValue = { value, packed: bytes, created, expiration, permanent: permanent && source === undefined }
    if (source !== undefined) entry.source = source
    m.set(value.id, entry)
    this.account(entry, +1)
    return { stored: true, kind: old ? 'edit' : 'new', entry, evicted }
  }

  private reject(reason: Exclude<StoreOutcome, { stored: true }>['reason']): StoreOutcome {
    this.rejected++
    return { stored: false, reason }
  }

  private account(e: StoredValue, sign: 1 | -1): void {
    const n = e.packed.length * sign
    this.count += sign
    if (e.source === undefined) this.totalLocal += n
    else {
      this.totalRemote += n
      const v = (this.perIp.get(e.source) ?? 0) + n
      if (v <= 0) this.perIp.delete(e.source)
      else this.perIp.set(e.source, v)
    }
  }

  private oldestOfLargestIp(exceptNew?: string): { key: string; entry: StoredValue } | undefined {
    let ip: string | undefined
    let max = -1
    for (const [i, n] of this.perIp) if (n > max) { max = n; ip = i }
    if (ip === undefined) return undefined
    void exceptNew
    let best: { key: string; entry: StoredValue } | undefined
    for (const [k, m] of this.keys) {
      for (const e of m.values()) {
        if (e.source === ip && (!best || e.created < best.entry.created)) best = { key: k, entry: e }
      }
    }
    return best
  }

  private removeEntry(k: string, e: StoredValue): void {
    const m = this.keys.get(k)
    if (!m || m.get(e.value.id) !== e) return
    m.delete(e.value.id)
    this.account(e, -1)
    if (m.size === 0) this.keys.delete(k)
  }

  /** Extend a value's life by its type's expiration from now. False when the key is unknown (→ 404). */
  refresh(key: Buffer, id: bigint, now: number): { keyKnown: boolean; entry?: StoredValue } {
    const m = this.keys.get(hex(key))
    if (!m) return { keyKnown: false }
    const e = m.get(id)
    if (!e) return { keyKnown: true }
    if (e.expiration !== Infinity) e.expiration = Math.max(e.expiration, now + this.expirationOf(e.value.type))
    return { keyKnown: true, entry: e }
  }

  remove(key: Buffer, id: bigint): StoredValue | undefined {
    const k = hex(key)
    const e = this.keys.get(k)?.get(id)
    if (e) this.removeEntry(k, e)
    return e
  }

  /** Remove expired values; returns them grouped by key (hex). */
  expire(now: number): Map<string, StoredValue[]> {
    const out = new Map<string, StoredValue[]>()
    for (const [k, m] of this.keys) {
      for (const e of m.values()) {
        if (e.expiration <= now) {
          let l = out.get(k)
          if (!l) out.set(k, (l = []))
          l.push(e)
        }
      }
    }
    for (const [k, l] of out) for (const e of l) this.removeEntry(k, e)
    return out
  }

  /** Earliest expiration among stored values (Infinity when none). */
  nextExpiration(): number {
    let t = Infinity
    for (const m of this.keys.values()) for (const e of m.values()) if (e.expiration < t) t = e.expiration
    return t
  }

  clear(): void {
    this.keys.clear()
    this.perIp.clear()
    this.totalLocal = this.totalRemote = this.count = 0
  }
}

/** OpenDHT's default edit policy: only signed values, by the same owner, with a higher seq. */
export function editAllowed(old: DhtValue, next: DhtValue): boolean {
  if (!old.owner || old.owner.length === 0 || !next.owner) return false
  if (!old.owner.equals(next.owner)) return false
  return (next.seq ?? 0) > (old.seq ?? 0)
}
