/**
 * Request rate limits as OpenDHT applies them to incoming requests: a per-IP limit and an overall limit, each in
 * requests per second over a sliding one-second window (approximated by two fixed windows). Memory is bounded:
 * idle per-IP entries are purged, and the table never holds more than `maxTrackedIps` entries.
 */
export interface RateLimitOptions {
  /** requests per second per source IP; negative = unlimited (default 1024, as OpenDHT 2.4) */
  perIp?: number
  /** requests per second overall; negative = unlimited (default 8192) */
  overall?: number
  maxTrackedIps?: number
}

class Window {
  start = 0
  count = 0
  prev = 0

  constructor(private readonly limit: number) {}

  /** true when allowed (and counted) */
  take(now: number): boolean {
    if (now - this.start >= 1000) {
      this.prev = now - this.start >= 2000 ? 0 : this.count
      this.start = now - ((now - this.start) % 1000)
      this.count = 0
    }
    // weight the previous window by how much of it still overlaps the sliding second
    const weight = 1 - (now - this.start) / 1000
    if (this.count + this.prev * weight >= this.limit) return false
    this.count++
    return true
  }

  idle(now: number): boolean {
    return now - this.start >= 2000
  }
}

export class RateLimiter {
  readonly perIp: number
  readonly overall: number
  private readonly maxTrackedIps: number
  private readonly ips = new Map<string, Window>()
  private readonly global: Window
  private calls = 0
  drops = 0

  constructor(
    opts: RateLimitOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    this.perIp = opts.perIp ?? 1024
    this.overall = opts.overall ?? 8192
    this.maxTrackedIps = opts.maxTrackedIps ?? 65536
    this.global = new Window(this.overall < 0 ? Infinity : this.overall)
  }

  /** Count one request from `ip`; false when it must be dropped. */
  allow(ip: string): boolean {
    const t = this.now()
    if (++this.calls >= 4096) {
      this.calls = 0
      this.purge(t)
    }
    if (this.perIp >= 0) {
      let w = this.ips.get(ip)
      if (!w) {
        if (this.ips.size >= this.maxTrackedIps) this.purge(t)
        if (this.ips.size >= this.maxTrackedIps) {
          this.drops++
          return false
        }
        w = new Window(this.perIp)
        this.ips.set(ip, w)
      }
      if (!w.take(t)) {
        this.drops++
        return false
      }
    }
    if (!this.global.take(t)) {
      this.drops++
      return false
    }
    return true
  }

  purge(t = this.now()): void {
    for (const [ip, w] of this.ips) if (w.idle(t)) this.ips.delete(ip)
  }

  get trackedIps(): number {
    return this.ips.size
  }
}
