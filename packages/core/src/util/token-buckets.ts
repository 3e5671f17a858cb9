/**
 * Token buckets by key (a request source, a signer): each key may spend `burst` tokens at once and earns
 * `perSecond` more each second. The table is bounded: past `maxKeys`, the least recently used key is forgotten
 * (a forgotten key starts again with a full bucket, which only matters to an attacker with more keys than that).
 */
export class KeyedTokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>()

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly maxKeys = 4096,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Spend one token of `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const t = this.now()
    let b = this.buckets.get(key)
    if (b) {
      this.buckets.delete(key) // re-inserted below: the map's order is the use order
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond)
      b.at = t
    } else {
      b = { tokens: this.burst, at: t }
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!)
    }
    this.buckets.set(key, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  get size(): number {
    return this.buckets.size
  }
}
