/**
 * SecureDht: OpenDHT's secure layer over a DHT node (`securedht.cpp`).
 *
 * - publishes our certificate (type 8, id 1) at both keys OpenDHT versions use: the SHA-1 key id (2.4 – 3.7.1) and
 *   SHA1(PkId) (3.5 and later, DHTNet); permanent puts;
 * - `putSigned` (bumps `seq` past what the network and we already hold), `putEncrypted` (to a key, a certificate or
 *   an id looked up on the DHT);
 * - `get`/`listen` verify signed values and decrypt values addressed to us; forged or undecryptable values are
 *   dropped and counted, never thrown at the caller. Owner keys are checked against the RSA key policy first;
 *   verifications are budgeted per source IP; decryptions run in a worker thread within budgets per listen (or
 *   get), per source and overall, each value once (decrypt-queue.ts);
 * - `findCertificate`/`findPublicKey` by 40-hex key id or 64-hex PkId, with a bounded local cache.
 */
import { X509Certificate, type KeyObject } from 'node:crypto'
import { DhtnetError, throwIfAborted } from '../errors.js'
import type { Identity } from '../identity/types.js'
import { parsePeerId } from '../identity/ids.js'
import { certificateLocations, certificateValue, certificatesFromValue, checkValueSignature, encryptValue, keyId, longKeyId, publicKeyDer, sha1, signValue } from './crypto.js'
import { PublicKeyCache } from './key-cache.js'
import { DecryptScheduler, type DecryptLane, type DecryptLimits, type DecryptOutcome } from './decrypt-queue.js'
import { RateLimiter, type RateLimitOptions } from './rate-limiter.js'
import { type DhtValue, ValueType, isEncryptedValue, isSignedValue, randomValueId } from './value.js'
import type { Logger, LogLevel } from '../util/log.js'

/** What SecureDht needs from the DHT engine (DhtNode implements it). Keys are 20-byte hashes. */
export interface SecureDhtEngine {
  /** `onValues` (optional for an engine) tells where values came from: the IP of the node that sent them */
  get(key: Buffer, options: { signal?: AbortSignal; filter?: (v: DhtValue) => boolean; onValues?: (values: DhtValue[], from?: string) => void }): Promise<DhtValue[]>
  put(key: Buffer, value: DhtValue, options: { permanent?: boolean; signal?: AbortSignal }): Promise<boolean>
  /** `from` (optional for an engine): the IP of the node that sent the values, undefined when unknown or ours */
  listen(key: Buffer, cb: (values: DhtValue[], expired: boolean, from?: string) => void): { cancel(): void }
}

/** A DHT key: 20 bytes, 40 hex characters, or any other text (hashed with SHA-1 like OpenDHT's InfoHash::get). */
export type DhtKey = Buffer | Uint8Array | string

/** A value to publish: id and type may be left out (random id, type 0). */
export type NewDhtValue = Omit<DhtValue, 'id' | 'type'> & { id?: bigint; type?: number }

export interface SecureDhtStats {
  /** Signed values whose signature verified. */
  verified: number
  /** Encrypted values addressed to us that decrypted and verified. */
  decrypted: number
  /** Signed values with a bad signature (dropped). */
  droppedForged: number
  /** Encrypted values we could not decrypt or whose inner signature/recipient was wrong (dropped). */
  droppedUndecryptable: number
  /** Encrypted values dropped undecrypted: over the decryption budgets with the queues full. */
  droppedDecryptions: number
  /** Signed values dropped unverified: their source was over the verification budget. */
  droppedVerifications: number
  /** Signed values whose owner key is outside the key policy (RSA, e = 65537, 2048–4096 bits). */
  rejectedKeys: number
  /** RSA private-key operations done (in the worker thread). */
  decryptions: number
  /** Encrypted values waiting for a decryption now. */
  decryptQueue: number
  /** Failed decryptions remembered (not tried again). */
  rememberedFailures: number
  /** Certificates in the local cache. */
  cachedCertificates: number
}

export interface SecureDhtOptions {
  /** Local certificate lookup tried before the DHT (e.g. a certificate store). Gets a 40- or 64-hex id. */
  localCertificateLookup?: (id: string) => readonly X509Certificate[] | null | undefined
  /** Bounded cache sizes (certificates/keys, decrypted values). */
  cacheSize?: number
  /** Budgets and bounds of decryptions (see decrypt-queue.ts for the defaults). */
  decryptLimits?: DecryptLimits
  /** Verifications of signed values received, per second per source IP and overall (defaults 128 and 1024). */
  verifyLimit?: RateLimitOptions
  log?: Logger
}

/** A 20-byte key from a DhtKey. */
export function toDhtKey(key: DhtKey): Buffer {
  if (typeof key === 'string') return /^[0-9a-fA-F]{40}$/.test(key) ? Buffer.from(key, 'hex') : sha1(key)
  if (key.length !== 20) throw new DhtnetError('BAD_KEY', `a DHT key is 20 bytes, got ${key.length}`, { hint: 'pass 40 hex characters, 20 bytes, or a text to hash' })
  return Buffer.from(key)
}

/** A small insertion-ordered LRU. */
class Lru<K, V> {
  private readonly map = new Map<K, V>()
  constructor(private readonly max: number) {}
  get(k: K): V | undefined {
    const v = this.map.get(k)
    if (v !== undefined) {
      this.map.delete(k)
      this.map.set(k, v)
    }
    return v
  }
  set(k: K, v: V): void {
    this.map.delete(k)
    this.map.set(k, v)
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K)
  }
  get size(): number {
    return this.map.size
  }
}

/** The outcome of checking one value: the value to hand out, or why it is dropped. */
export type CheckedValue = { ok: true; value: DhtValue } | { ok: false; reason: 'forged' | 'rejected-key' | 'undecryptable' | 'dropped' }

export class SecureDht {
  readonly identity: Identity
  /** 20-byte SHA-1 key id of our public key. */
  readonly keyId: Buffer
  /** 32-byte PkId. */
  readonly longId: Buffer
  private readonly dht: SecureDhtEngine
  private readonly options: SecureDhtOptions
  /** chains by 40-hex key id and by 64-hex long id */
  private readonly certificates: Lru<string, X509Certificate[]>
  /** public keys seen on verified values, by 40-hex and 64-hex ids */
  private readonly publicKeys: Lru<string, KeyObject>
  /** parsed owner keys, checked against the key policy */
  private readonly ownerKeys = new PublicKeyCache()
  private readonly decrypts: DecryptScheduler
  private readonly verifyLimiter: RateLimiter
  /** last seq we signed per key and value id */
  private readonly lastSeq: Lru<string, number>
  private readonly listens = new Set<{ cancel(): void }>()
  private readonly closing = new AbortController()
  private certificatePublication: Promise<{ keyIdKey: boolean; longIdKey: boolean }> | undefined
  private readonly counters = { verified: 0, decrypted: 0, droppedForged: 0, droppedUndecryptable: 0, droppedVerifications: 0 }

  constructor(dht: SecureDhtEngine, identity: Identity, options: SecureDhtOptions = {}) {
    if (!identity.publicKeyDer.equals(publicKeyDer(identity.certificate))) {
      throw new DhtnetError('BAD_IDENTITY', 'SecureDht: the certificate does not match the private key')
    }
    this.dht = dht
    this.identity = identity
    this.options = options
    this.keyId = keyId(identity.publicKeyDer)
    this.longId = longKeyId(identity.publicKeyDer)
    const size = options.cacheSize ?? 1024
    this.certificates = new Lru(size)
    this.publicKeys = new Lru(size)
    this.decrypts = new DecryptScheduler(identity, this.ownerKeys, options.decryptLimits, (m) => this.log('debug', m))
    this.verifyLimiter = new RateLimiter({ perIp: 128, overall: 1024, ...options.verifyLimit })
    this.lastSeq = new Lru(size * 4)
    this.registerCertificate(identity.chain)
  }

  /** SHA1("peer:" + hex id): the key where DHTNet peers listen for connection requests. */
  static peerKey(hexId: string): Buffer {
    return sha1('peer:' + parsePeerId(hexId).hex)
  }

  /** Publish our certificate at both keys (permanent puts). Resolves with the outcome at each key. The decryption
   *  thread boots meanwhile: the first answer to one of our requests is decrypted without waiting for it. */
  start(): Promise<{ keyIdKey: boolean; longIdKey: boolean }> {
    if (!this.certificatePublication) {
      this.decrypts.prewarm()
      this.certificatePublication = this.publishCertificate()
    }
    return this.certificatePublication
  }

  private async publishCertificate(): Promise<{ keyIdKey: boolean; longIdKey: boolean }> {
    const value = certificateValue(this.identity.chain)
    const { keyIdKey, longIdKey } = certificateLocations(this.identity.publicKeyDer)
    const put = (key: Buffer) =>
      this.dht.put(key, value, { permanent: true, signal: this.closing.signal }).catch((err: unknown) => {
        this.log('warn', `publishing our certificate at ${key.toString('hex')} failed: ${String((err as Error | undefined)?.message ?? err)}`)
        return false
      })
    const [a, b] = await Promise.all([put(keyIdKey), put(longIdKey)])
    this.log('debug', `certificate published: key id ${a ? 'ok' : 'failed'}, SHA1(PkId) ${b ? 'ok' : 'failed'}`)
    return { keyIdKey: a, longIdKey: b }
  }

  /** Cancel our listens and pending operations. The DHT node itself is not stopped. */
  close(): void {
    this.closing.abort()
    for (const l of this.listens) l.cancel()
    this.listens.clear()
    void this.decrypts.close()
  }

  stats(): SecureDhtStats {
    const d = this.decrypts.stats()
    return {
      ...this.counters,
      droppedDecryptions: d.droppedDecryptions,
      rejectedKeys: this.ownerKeys.rejected,
      decryptions: d.decryptions,
      decryptQueue: d.queued,
      rememberedFailures: d.rememberedFailures,
      cachedCertificates: this.certificates.size,
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Values

  /**
   * Verify or decrypt one value received from `source` (an IP address): the value to hand out, or why it is
   * dropped. Decryptions go through the budgets of `lane` (a new one-off lane when absent).
   */
  async checkValue(v: DhtValue, source?: string, lane?: DecryptLane): Promise<CheckedValue> {
    if (isEncryptedValue(v)) {
      const own = lane ?? this.decrypts.lane()
      try {
        return this.fromDecryption(await this.decrypts.submit(v, own, source))
      } finally {
        if (!lane) this.decrypts.closeLane(own)
      }
    }
    return this.checkClear(v, source)
  }

  /** Signed values: owner key policy, then the signature within the source's budget. Plain values pass. */
  private checkClear(v: DhtValue, source: string | undefined): CheckedValue {
    if (!isSignedValue(v)) return { ok: true, value: v }
    if (!this.verifyLimiter.allow(source ?? '?')) {
      this.log('debug', `dropping value ${v.id.toString(16)}: verification budget of ${source ?? 'an unknown source'} exhausted`)
      return { ok: false, reason: 'dropped' }
    }
    const check = checkValueSignature(v, this.ownerKeys)
    if (check === 'ok') {
      this.rememberOwner(v.owner!)
      return { ok: true, value: v }
    }
    this.log('debug', `dropping value ${v.id.toString(16)}: ${check === 'rejected-key' ? 'owner key outside the key policy' : 'bad signature'}`)
    return { ok: false, reason: check === 'rejected-key' ? 'rejected-key' : 'forged' }
  }

  private fromDecryption(o: DecryptOutcome): CheckedValue {
    if (!o.ok) return o
    this.rememberOwner(o.value.owner!)
    return o
  }

  /** Count one checked value; the value to hand out (undefined when dropped). */
  private tally(v: DhtValue, c: CheckedValue): DhtValue | undefined {
    if (!c.ok) {
      if (c.reason === 'forged' || c.reason === 'rejected-key') this.counters.droppedForged++
      else if (c.reason === 'undecryptable') this.counters.droppedUndecryptable++
      else if (!isEncryptedValue(v)) this.counters.droppedVerifications++
      return undefined
    }
    if (isEncryptedValue(v)) this.counters.decrypted++
    else if (isSignedValue(v)) this.counters.verified++
    return c.value
  }

  /** Values at `key`: signed ones verified, ours decrypted, the rest dropped. `filter` sees the checked values. */
  async get(key: DhtKey, options: { signal?: AbortSignal; filter?: (v: DhtValue) => boolean } = {}): Promise<DhtValue[]> {
    const signal = this.withClosing(options.signal)
    throwIfAborted(signal)
    const sources = new Map<DhtValue, string | undefined>()
    const values = await this.dht.get(toDhtKey(key), {
      signal,
      onValues: (vals, from) => {
        for (const v of vals) if (!sources.has(v)) sources.set(v, from)
      },
    })
    const lane = this.decrypts.lane()
    const onAbort = () => this.decrypts.closeLane(lane)
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      const checked = await Promise.all(values.map((v) => this.checkValue(v, sources.get(v), lane)))
      throwIfAborted(signal)
      const out: DhtValue[] = []
      values.forEach((v, i) => {
        const c = this.tally(v, checked[i]!)
        if (c && (!options.filter || options.filter(c))) out.push(c)
      })
      return out
    } finally {
      signal.removeEventListener('abort', onAbort)
      this.decrypts.closeLane(lane)
    }
  }

  /**
   * Listen at `key`; the callback gets checked values only (never an empty batch). Plain and signed values come
   * at once, decrypted ones as their decryption ends (in a worker, within this listen's budget). Expiry notices
   * for encrypted values are passed on only for values this SecureDht decrypted (no decryption for them).
   */
  listen(key: DhtKey, cb: (values: DhtValue[], expired: boolean) => void, options: { filter?: (v: DhtValue) => boolean } = {}): { cancel(): void } {
    const lane = this.decrypts.lane()
    const hand = (values: DhtValue[], expired: boolean) => {
      if (lane.closed || values.length === 0) return
      try {
        cb(values, expired)
      } catch (err) {
        this.log('warn', `listen callback threw: ${(err as Error).message}`)
      }
    }
    const pass = (v: DhtValue | undefined): v is DhtValue => v !== undefined && (!options.filter || options.filter(v))
    const inner = this.dht.listen(toDhtKey(key), (values, expired, from) => {
      const ready: DhtValue[] = []
      for (const v of values) {
        if (!isEncryptedValue(v)) {
          const c = this.tally(v, this.checkClear(v, from))
          if (pass(c)) ready.push(c)
        } else if (expired) {
          const known = this.decrypts.known(v)
          if (known?.ok && pass(known.value)) ready.push(known.value)
        } else {
          void this.decrypts.submit(v, lane, from).then((o) => {
            if (lane.closed) return
            const c = this.tally(v, this.fromDecryption(o))
            if (pass(c)) hand([c], false)
          })
        }
      }
      hand(ready, expired)
    })
    const handle = {
      cancel: () => {
        if (this.listens.delete(handle)) {
          this.decrypts.closeLane(lane)
          inner.cancel()
        }
      },
    }
    this.listens.add(handle)
    return handle
  }

  /** Put a plain (unsigned) value. */
  async put(key: DhtKey, value: NewDhtValue, options: { permanent?: boolean; signal?: AbortSignal } = {}): Promise<boolean> {
    const signal = this.withClosing(options.signal)
    return this.dht.put(toDhtKey(key), completeValue(value), { permanent: options.permanent, signal })
  }

  /**
   * Sign and put (OpenDHT `putSigned`): looks up the same value id at `key` first and bumps `seq` above any version
   * signed by us, so storage nodes accept the edit. Resolves with the put outcome; the signed value is returned too.
   */
  async putSigned(key: DhtKey, value: NewDhtValue, options: { permanent?: boolean; signal?: AbortSignal } = {}): Promise<{ ok: boolean; value: DhtValue }> {
    const signal = this.withClosing(options.signal)
    const k = toDhtKey(key)
    const v = completeValue(value)
    delete v.cypher
    const seqKey = `${k.toString('hex')}:${v.id}`
    let seq = v.seq ?? 0
    const last = this.lastSeq.get(seqKey)
    if (last !== undefined && seq <= last) seq = last + 1
    try {
      const existing = await this.dht.get(k, { signal, filter: (x) => x.id === v.id })
      for (const x of existing) {
        if (x.id !== v.id || !isSignedValue(x) || x.seq === undefined) continue
        if (!keyId(x.owner!).equals(this.keyId)) {
          this.log('warn', `a value ${v.id.toString(16)} signed by someone else exists at ${k.toString('hex')}`)
          continue
        }
        if (seq <= x.seq) seq = x.seq + 1
      }
    } catch (err) {
      throwIfAborted(signal)
      this.log('debug', `putSigned: looking up the previous version failed: ${(err as Error).message}`)
    }
    if (seq > 0xffff) throw new DhtnetError('SEQ_EXHAUSTED', `value ${v.id.toString(16)} reached the last sequence number`, { hint: 'publish under a new value id' })
    v.seq = seq
    const signed = signValue(v, this.identity)
    this.lastSeq.set(seqKey, seq)
    const ok = await this.dht.put(k, signed, { permanent: options.permanent, signal })
    return { ok, value: signed }
  }

  /**
   * Encrypt to a recipient (public key, certificate, or a 40/64-hex id looked up on the DHT), sign and put.
   * Throws DhtnetError('CERT_NOT_FOUND') when an id cannot be resolved to a key.
   */
  async putEncrypted(
    key: DhtKey,
    to: KeyObject | X509Certificate | string,
    value: NewDhtValue,
    options: { permanent?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ ok: boolean; value: DhtValue }> {
    const signal = this.withClosing(options.signal)
    let toKey: KeyObject | X509Certificate
    if (typeof to === 'string') {
      const found = await this.findPublicKey(to, { signal })
      if (!found) {
        throw new DhtnetError('CERT_NOT_FOUND', `no certificate found on the DHT for ${to}`, {
          hint: 'the peer must be online (it publishes its certificate) or its certificate must be known locally',
        })
      }
      toKey = found
    } else toKey = to
    const encrypted = encryptValue(completeValue(value), toKey, this.identity)
    const ok = await this.dht.put(toDhtKey(key), encrypted, { permanent: options.permanent, signal })
    return { ok, value: encrypted }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Certificates

  /** Add a chain (leaf first) to the local cache. Returns the leaf's ids. */
  registerCertificate(chain: readonly X509Certificate[]): { id: string; longId: string } {
    if (chain.length === 0) throw new DhtnetError('BAD_CERTIFICATE', 'empty certificate chain')
    const der = publicKeyDer(chain[0]!)
    const ids = { id: keyId(der).toString('hex'), longId: longKeyId(der).toString('hex') }
    const copy = [...chain]
    this.certificates.set(ids.id, copy)
    this.certificates.set(ids.longId, copy)
    return ids
  }

  /** The chain of a 40-hex key id or 64-hex PkId from the local cache only (no network, no waiting). */
  knownCertificate(id: string): X509Certificate[] | undefined {
    const cached = this.certificates.get(parsePeerId(id).hex)
    return cached ? [...cached] : undefined
  }

  /**
   * The certificate chain (leaf first) of a 40-hex key id or 64-hex PkId: local cache, local lookup, then the DHT
   * (SHA1(PkId) for a long id; the key id itself for a short one, as OpenDHT 2.4 publishes there). Only a
   * certificate whose key matches the asked id is accepted. null when none is found.
   */
  async findCertificate(id: string, options: { signal?: AbortSignal } = {}): Promise<X509Certificate[] | null> {
    const { kind, hex } = parsePeerId(id)
    const cached = this.knownCertificate(hex)
    if (cached) return cached
    const local = this.options.localCertificateLookup?.(hex)
    if (local && local.length > 0 && this.certificateMatches(local[0]!, kind, hex)) {
      this.registerCertificate(local)
      return [...local]
    }
    const signal = this.withClosing(options.signal)
    const where = kind === 'longId' ? sha1(Buffer.from(hex, 'hex')) : Buffer.from(hex, 'hex')
    const values = await this.dht.get(where, { signal, filter: (v) => v.type === ValueType.CERTIFICATE })
    for (const v of values) {
      if (v.type !== ValueType.CERTIFICATE || isEncryptedValue(v)) continue
      let chain: X509Certificate[]
      try {
        chain = certificatesFromValue(v)
      } catch (err) {
        this.log('debug', `ignoring a malformed certificate value at ${where.toString('hex')}: ${(err as Error).message}`)
        continue
      }
      if (!this.certificateMatches(chain[0]!, kind, hex)) {
        this.log('warn', `a certificate at ${where.toString('hex')} does not match the id ${hex}`)
        continue
      }
      this.registerCertificate(chain)
      return chain
    }
    return null
  }

  /** The public key of a 40-hex key id or 64-hex PkId (from verified values seen, or its certificate). */
  async findPublicKey(id: string, options: { signal?: AbortSignal } = {}): Promise<KeyObject | null> {
    const { hex } = parsePeerId(id)
    const known = this.publicKeys.get(hex)
    if (known) return known
    const chain = await this.findCertificate(hex, options)
    return chain ? chain[0]!.publicKey : null
  }

  private certificateMatches(cert: X509Certificate, kind: 'id' | 'longId', hex: string): boolean {
    try {
      const der = publicKeyDer(cert)
      return (kind === 'id' ? keyId(der) : longKeyId(der)).toString('hex') === hex
    } catch {
      return false
    }
  }

  private rememberOwner(owner: Buffer): void {
    const short = keyId(owner).toString('hex')
    if (this.publicKeys.get(short)) return
    const k = this.ownerKeys.get(owner)
    if (!k.ok) return // a verified signature implies an acceptable key; nothing to remember otherwise
    this.publicKeys.set(short, k.key)
    this.publicKeys.set(longKeyId(owner).toString('hex'), k.key)
  }

  private withClosing(signal: AbortSignal | undefined): AbortSignal {
    return signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal
  }

  private log(level: LogLevel, message: string): void {
    this.options.log?.(level, message)
  }
}

function completeValue(v: NewDhtValue): DhtValue {
  const out = { ...v, id: v.id !== undefined && v.id !== 0n ? v.id : randomValueId(), type: v.type ?? ValueType.USER_DATA }
  return out
}
