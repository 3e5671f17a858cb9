/**
 * Our own listens (DhtNode.listen): what each one knows, bounded. The cache dedupes values pushed by several
 * storage nodes and remembers when they expire; it holds at most `maxValues` values and `maxBytes` packed bytes per
 * listen — beyond that the oldest entries are forgotten (a forgotten value pushed again is delivered again, which
 * the listener must tolerate anyway: it is how a value comes back after a restart). Storage nodes may push a lot:
 * without this bound one key full of 60 KB values held hundreds of MB (issue 12).
 */
import type { DhtValue } from './value-shim.js'
import type { Query } from './wire.js'

/** `from`: the IP address the values came from (a storage node, or the putter for values in our own storage); undefined for our own puts. */
export type ListenCallback = (values: DhtValue[], expired: boolean, from?: string) => void

export interface ListenCacheLimits {
  /** values remembered per listen (default 4,096) */
  maxValues?: number
  /** packed bytes remembered per listen (default 4 MiB) */
  maxBytes?: number
}

export interface CachedValue {
  v: DhtValue
  packed: Buffer
  expireAt: number
}

export class ListenCache {
  private readonly values = new Map<bigint, CachedValue>()
  private held = 0
  private readonly maxValues: number
  private readonly maxBytes: number
  /** entries forgotten to stay within the bounds */
  evicted = 0

  constructor(limits: ListenCacheLimits = {}) {
    this.maxValues = limits.maxValues ?? 4096
    this.maxBytes = limits.maxBytes ?? 4 * 1024 * 1024
  }

  get size(): number {
    return this.values.size
  }

  get bytes(): number {
    return this.held
  }

  get(id: bigint): CachedValue | undefined {
    return this.values.get(id)
  }

  delete(id: bigint): CachedValue | undefined {
    const c = this.values.get(id)
    if (c) {
      this.values.delete(id)
      this.held -= c.packed.length
    }
    return c
  }

  /** Remember a value (replacing the entry with the same id), forgetting the oldest ones beyond the bounds. */
  set(id: bigint, c: CachedValue): void {
    this.delete(id)
    this.values.set(id, c)
    this.held += c.packed.length
    while ((this.values.size > this.maxValues || this.held > this.maxBytes) && this.values.size > 1) {
      const oldest = this.values.keys().next().value as bigint
      this.delete(oldest)
      this.evicted++
    }
  }

  /** Remove and return the values expired at `now`. */
  expire(now: number): DhtValue[] {
    const gone: DhtValue[] = []
    for (const [id, c] of this.values) {
      if (c.expireAt <= now) {
        this.delete(id)
        gone.push(c.v)
      }
    }
    return gone
  }

  clear(): void {
    this.values.clear()
    this.held = 0
  }
}

export interface LocalListen {
  key: Buffer
  filter?: (v: DhtValue) => boolean
  query?: Query
  cb: ListenCallback
  /** per-family search listen socket ids */
  sids: Map<4 | 6, number>
  cache: ListenCache
  cancelled: boolean
}
