/**
 * Decryptions of values addressed to us, bounded. Anyone can put "encrypted" values at the keys we listen to (a
 * device's connection-request key SHA1("peer:" + id)), and each one costs an RSA private-key operation (~7.5 ms at
 * 4096 bits): without bounds, 400 junk values stalled a node for 1.6 s and a storage node's quota held a minute of
 * CPU per source IP (issue 12). Here:
 *
 * - a value is decrypted once: outcomes are remembered by value id + SHA-256 of the cypher (failures in a bounded
 *   set, successes in a small LRU), and a value already waiting or in progress is shared, not queued again;
 * - a cypher of the wrong shape for our key fails at once, without RSA work;
 * - decryptions are paid from three token buckets — the lane's (one per listen, one per get), the source's (the IP
 *   the value came from) and an overall one — and run one at a time in a worker thread (rsa-worker.ts);
 * - waiting values are queued per source and served round-robin, so one flooding source cannot push another
 *   source's value back; the queues are bounded (per source, in all, in bytes) and what does not fit is dropped and
 *   counted (a dropped value is not remembered: it may be tried again if it comes back).
 */
import { createHash } from 'node:crypto'
import type { Identity } from '../identity/types.js'
import { cypherShapeProblem, finishRsaDecrypt, openDecryptedValue, rsaBlockBytes } from './crypto.js'
import type { PublicKeyCache } from './key-cache.js'
import { RsaWorker } from './rsa-worker.js'
import type { DhtValue } from './value.js'

export interface DecryptLimits {
  /** decryptions per second per listen and per get (default 16, bursts of 32) */
  perLane?: number
  /** decryptions per second per source IP (default 8, bursts of 16) */
  perSource?: number
  /** decryptions per second in all (default 32, bursts of 64): at most ~25% of a core at RSA-4096 */
  overall?: number
  /** values waiting to be decrypted, per source (default 64) and in all (default 1,024) */
  maxQueuedPerSource?: number
  maxQueued?: number
  /** cypher bytes waiting in all (default 16 MiB) */
  maxQueuedBytes?: number
  /** failed decryptions remembered (default 16,384) */
  rememberFailures?: number
  /** decrypted values remembered (default 256) */
  rememberValues?: number
}

export type DecryptOutcome = { ok: true; value: DhtValue } | { ok: false; reason: 'undecryptable' | 'dropped' }

const UNDECRYPTABLE: DecryptOutcome = Object.freeze({ ok: false, reason: 'undecryptable' })
const DROPPED: DecryptOutcome = Object.freeze({ ok: false, reason: 'dropped' })
const UNKNOWN_SOURCE = '?'
const MAX_SOURCES = 4096

class TokenBucket {
  private tokens: number
  private last: number

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst
    this.last = now
  }

  private refill(now: number): void {
    if (this.rate < 0) return
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000)
    this.last = now
  }

  ready(now: number): boolean {
    if (this.rate < 0) return true
    this.refill(now)
    return this.tokens >= 1
  }

  take(): void {
    if (this.rate >= 0) this.tokens -= 1
  }

  /** ms until a token is there */
  waitMs(now: number): number {
    if (this.rate <= 0) return this.rate < 0 ? 0 : Infinity
    this.refill(now)
    return this.tokens >= 1 ? 0 : ((1 - this.tokens) * 1000) / this.rate
  }

  full(now: number): boolean {
    this.refill(now)
    return this.rate < 0 || this.tokens >= this.burst
  }
}

/** A listen or a get: its own budget; closing it drops what it still waits for. */
export class DecryptLane {
  closed = false
  constructor(readonly bucket: TokenBucket) {}
}

interface Item {
  key: string
  v: DhtValue
  lane: DecryptLane
  source: string
  bytes: number
  promise: Promise<DecryptOutcome>
  resolve(o: DecryptOutcome): void
}

export interface DecryptStats {
  /** RSA private-key operations done (in the worker) */
  decryptions: number
  /** values dropped undecrypted: over a budget with a full queue */
  droppedDecryptions: number
  /** values that failed before any RSA work (wrong cypher size) */
  rejectedShapes: number
  /** values answered from memory (seen before) */
  remembered: number
  /** values waiting now */
  queued: number
  rememberedFailures: number
}

export class DecryptScheduler {
  private readonly worker: RsaWorker
  private readonly k: number
  private readonly limits: Required<DecryptLimits>
  private readonly overall: TokenBucket
  private readonly sourceBuckets = new Map<string, TokenBucket>()
  /** waiting values per source, and the round-robin order of sources with waiting values */
  private readonly queues = new Map<string, Item[]>()
  private rotation: string[] = []
  private queued = 0
  private queuedBytes = 0
  private readonly inflight = new Map<string, Item>()
  private readonly failures = new Set<string>()
  private readonly values = new Map<string, DhtValue>()
  private running = false
  private timer: NodeJS.Timeout | undefined
  private closed = false
  private readonly counters = { droppedDecryptions: 0, rejectedShapes: 0, remembered: 0 }

  constructor(
    private readonly identity: Pick<Identity, 'privateKey' | 'publicKeyDer'>,
    private readonly keys: PublicKeyCache,
    limits: DecryptLimits = {},
    private readonly log: (message: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {
    this.limits = {
      perLane: limits.perLane ?? 16,
      perSource: limits.perSource ?? 8,
      overall: limits.overall ?? 32,
      maxQueuedPerSource: limits.maxQueuedPerSource ?? 64,
      maxQueued: limits.maxQueued ?? 1024,
      maxQueuedBytes: limits.maxQueuedBytes ?? 16 * 1024 * 1024,
      rememberFailures: limits.rememberFailures ?? 16384,
      rememberValues: limits.rememberValues ?? 256,
    }
    this.worker = new RsaWorker(identity.privateKey)
    this.k = rsaBlockBytes(identity.privateKey)
    this.overall = new TokenBucket(this.limits.overall, Math.max(1, this.limits.overall * 2), this.now())
  }

  /** Boot the decryption thread ahead of the first value (see RsaWorker.prewarm). */
  prewarm(): void {
    if (!this.closed) this.worker.prewarm()
  }

  /** A new budget for one listen or one get. */
  lane(): DecryptLane {
    return new DecryptLane(new TokenBucket(this.limits.perLane, Math.max(1, this.limits.perLane * 2), this.now()))
  }

  /** Stop a lane: its waiting values are dropped (not counted: nobody wants them any more). */
  closeLane(lane: DecryptLane): void {
    lane.closed = true
  }

  private memoKey(v: DhtValue): string {
    return `${v.id}:${createHash('sha256').update(v.cypher!).digest('base64')}`
  }

  /** What we already know about an encrypted value, without any work (for expiry notices). */
  known(v: DhtValue): DecryptOutcome | undefined {
    const key = this.memoKey(v)
    const value = this.values.get(key)
    if (value) return { ok: true, value }
    return this.failures.has(key) ? UNDECRYPTABLE : undefined
  }

  /** Decrypt `v` within the budgets of `lane` and `source` (an IP address; undefined: unknown). */
  submit(v: DhtValue, lane: DecryptLane, source: string | undefined): Promise<DecryptOutcome> {
    if (this.closed || lane.closed) return Promise.resolve(DROPPED)
    const key = this.memoKey(v)
    const done = this.values.get(key)
    if (done) {
      this.counters.remembered++
      this.touch(key, done)
      return Promise.resolve({ ok: true, value: done })
    }
    if (this.failures.has(key)) {
      this.counters.remembered++
      return Promise.resolve(UNDECRYPTABLE)
    }
    const pending = this.inflight.get(key)
    if (pending) return pending.promise
    const shape = cypherShapeProblem(v.cypher!, this.k)
    if (shape) {
      this.counters.rejectedShapes++
      this.rememberFailure(key)
      return Promise.resolve(UNDECRYPTABLE)
    }
    const src = source ?? UNKNOWN_SOURCE
    const q = this.queues.get(src)
    const bytes = v.cypher!.length
    if ((q?.length ?? 0) >= this.limits.maxQueuedPerSource || this.queued >= this.limits.maxQueued || this.queuedBytes + bytes > this.limits.maxQueuedBytes) {
      this.counters.droppedDecryptions++
      return Promise.resolve(DROPPED)
    }
    let resolve!: (o: DecryptOutcome) => void
    const promise = new Promise<DecryptOutcome>((r) => {
      resolve = r
    })
    const item: Item = { key, v, lane, source: src, bytes, promise, resolve }
    this.inflight.set(key, item)
    if (q) q.push(item)
    else {
      this.queues.set(src, [item])
      this.rotation.push(src)
    }
    this.queued++
    this.queuedBytes += bytes
    this.pump()
    return promise
  }

  private sourceBucket(src: string, now: number): TokenBucket {
    let b = this.sourceBuckets.get(src)
    if (!b) {
      if (this.sourceBuckets.size >= MAX_SOURCES) {
        for (const [s, x] of this.sourceBuckets) if (!this.queues.has(s) && x.full(now)) this.sourceBuckets.delete(s)
      }
      // beyond the bound, new sources share one budget
      const name = this.sourceBuckets.size >= MAX_SOURCES ? UNKNOWN_SOURCE : src
      b = this.sourceBuckets.get(name)
      if (!b) this.sourceBuckets.set(name, (b = new TokenBucket(this.limits.perSource, Math.max(1, this.limits.perSource * 2), now)))
    }
    return b
  }

  /** Start the next decryption whose three budgets allow it (round-robin over sources), or wait for tokens. */
  private pump(): void {
    if (this.running || this.closed || this.queued === 0) return
    if (this.timer) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const now = this.now()
    let wait = Infinity
    for (let tried = 0; tried < this.rotation.length; tried++) {
      const src = this.rotation.shift()!
      const q = this.queues.get(src)!
      // values of closed lanes leave without a word
      while (q.length && q[0]!.lane.closed) this.unqueue(q.shift()!, DROPPED)
      if (q.length === 0) {
        this.queues.delete(src)
        tried--
        continue
      }
      this.rotation.push(src)
      const item = q[0]!
      const sb = this.sourceBucket(src, now)
      if (this.overall.ready(now) && sb.ready(now) && item.lane.bucket.ready(now)) {
        this.overall.take()
        sb.take()
        item.lane.bucket.take()
        q.shift()
        if (q.length === 0) {
          this.queues.delete(src)
          this.rotation = this.rotation.filter((s) => s !== src)
        }
        this.queued--
        this.queuedBytes -= item.bytes
        this.run(item)
        return
      }
      wait = Math.min(wait, Math.max(this.overall.waitMs(now), sb.waitMs(now), item.lane.bucket.waitMs(now)))
    }
    if (this.queued > 0 && Number.isFinite(wait)) {
      this.timer = setTimeout(
        () => {
          this.timer = undefined
          this.pump()
        },
        Math.max(1, Math.ceil(wait)),
      )
      // not unref'd: someone awaits what is queued; armed only while values wait, cleared by close()
    }
  }

  private unqueue(item: Item, outcome: DecryptOutcome): void {
    this.queued--
    this.queuedBytes -= item.bytes
    this.inflight.delete(item.key)
    item.resolve(outcome)
  }

  private run(item: Item): void {
    this.running = true
    const cypher = item.v.cypher!
    void this.worker
      .decryptBlock(cypher.subarray(0, this.k))
      .then(
        (raw): DecryptOutcome => {
          try {
            const value = openDecryptedValue(item.v, finishRsaDecrypt(raw, cypher, this.k), this.identity, this.keys)
            this.touch(item.key, value)
            return { ok: true, value }
          } catch (err) {
            this.log(`dropping value ${item.v.id.toString(16)}: ${(err as Error).message}`)
            this.rememberFailure(item.key)
            return UNDECRYPTABLE
          }
        },
        (err: Error) => {
          this.log(`decryption of ${item.v.id.toString(16)} failed: ${err.message}`)
          if (this.closed) return DROPPED
          this.rememberFailure(item.key)
          return UNDECRYPTABLE
        },
      )
      .then((outcome) => {
        this.inflight.delete(item.key)
        this.running = false
        item.resolve(outcome)
        this.pump()
      })
  }

  private touch(key: string, value: DhtValue): void {
    this.values.delete(key)
    this.values.set(key, value)
    if (this.values.size > this.limits.rememberValues) this.values.delete(this.values.keys().next().value as string)
  }

  private rememberFailure(key: string): void {
    this.failures.add(key)
    if (this.failures.size > this.limits.rememberFailures) this.failures.delete(this.failures.values().next().value as string)
  }

  stats(): DecryptStats {
    return {
      decryptions: this.worker.operations,
      droppedDecryptions: this.counters.droppedDecryptions,
      rejectedShapes: this.counters.rejectedShapes,
      remembered: this.counters.remembered,
      queued: this.queued,
      rememberedFailures: this.failures.size,
    }
  }

  /** Drop everything waiting and stop the worker. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.timer)
    for (const q of this.queues.values()) for (const item of q) item.resolve(DROPPED)
    this.queues.clear()
    this.rotation = []
    this.queued = 0
    this.queuedBytes = 0
    this.inflight.clear()
    await this.worker.close()
  }
}
