/**
 * A binary heap whose items know their own position (kept by the caller's accessors), so that removing or
 * re-ordering any item is O(log n), not a search. Used by the storage for its expiry order and its eviction order.
 */
export class IndexedHeap<T> {
  private readonly items: T[] = []

  /**
   * @param before true when `a` must come out before `b`
   * @param setPos called with the item's new index (-1 when it leaves the heap)
   * @param getPos the index last given to setPos
   */
  constructor(
    private readonly before: (a: T, b: T) => boolean,
    private readonly setPos: (item: T, pos: number) => void,
    private readonly getPos: (item: T) => number,
  ) {}

  get size(): number {
    return this.items.length
  }

  peek(): T | undefined {
    return this.items[0]
  }

  push(item: T): void {
    this.items.push(item)
    this.setPos(item, this.items.length - 1)
    this.up(this.items.length - 1)
  }

  pop(): T | undefined {
    const top = this.items[0]
    if (top !== undefined) this.remove(top)
    return top
  }

  has(item: T): boolean {
    const i = this.getPos(item)
    return i >= 0 && i < this.items.length && this.items[i] === item
  }

  remove(item: T): void {
    const i = this.getPos(item)
    if (i < 0 || this.items[i] !== item) return
    const last = this.items.pop()!
    this.setPos(item, -1)
    if (i === this.items.length) return
    this.items[i] = last
    this.setPos(last, i)
    this.update(last)
  }

  /** Restore the order after the item's sort key changed. */
  update(item: T): void {
    const i = this.getPos(item)
    if (i < 0 || this.items[i] !== item) return
    this.down(this.up(i))
  }

  clear(): void {
    for (const it of this.items) this.setPos(it, -1)
    this.items.length = 0
  }

  private up(i: number): number {
    const a = this.items
    const item = a[i]!
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.before(item, a[p]!)) break
      a[i] = a[p]!
      this.setPos(a[i]!, i)
      i = p
    }
    a[i] = item
    this.setPos(item, i)
    return i
  }

  private down(i: number): void {
    const a = this.items
    const n = a.length
    const item = a[i]!
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && this.before(a[r]!, a[l]!) ? r : l
      if (!this.before(a[c]!, item)) break
      a[i] = a[c]!
      this.setPos(a[i]!, i)
      i = c
    }
    a[i] = item
    this.setPos(item, i)
  }
}
