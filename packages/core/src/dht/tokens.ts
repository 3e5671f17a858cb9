import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { ipToBytes } from './wire.js'

export const TOKEN_SIZE = 32
const MIN = 60_000
/** Bound of the token cache (cleared when full, and at every rotation). */
const CACHE_MAX = 4096

/**
 * Write tokens as OpenDHT makes them: SHA-256(8-byte secret ‖ IP ‖ port), bound to the requester's address.
 * The secret rotates every 15–45 minutes (checked lazily, so no timer); the previous secret is still accepted.
 */
export class TokenManager {
  private secret = randomBytes(8)
  private oldSecret = randomBytes(8)
  private nextRotation: number
  /** tokens of the current secret by ip, then port: every get/find reply carries one, a SHA-256 each is costly */
  private readonly cache = new Map<string, Map<number, Buffer>>()
  private cached = 0

  constructor(
    private readonly now: () => number = Date.now,
    private readonly rotateMinMs = 15 * MIN,
    private readonly rotateMaxMs = 45 * MIN,
  ) {
    this.nextRotation = now() + this.rotationDelay()
  }

  private rotationDelay(): number {
    return this.rotateMinMs + Math.random() * (this.rotateMaxMs - this.rotateMinMs)
  }

  private maybeRotate(): void {
    const t = this.now()
    if (t < this.nextRotation) return
    this.rotate()
  }

  /** Force a rotation (also used by tests). */
  rotate(): void {
    this.oldSecret = this.secret
    this.secret = randomBytes(8)
    this.cache.clear()
    this.cached = 0
    this.nextRotation = this.now() + this.rotationDelay()
  }

  private compute(secret: Buffer, host: string, port: number): Buffer {
    const ip = ipToBytes(host) ?? Buffer.alloc(0)
    const p = Buffer.alloc(2)
    p.writeUInt16BE(port)
    return createHash('sha256').update(secret).update(ip).update(p).digest()
  }

  /** The token for `host:port` under the current secret (shared: callers must not modify it). */
  make(host: string, port: number): Buffer {
    this.maybeRotate()
    return this.current(host, port)
  }

  private current(host: string, port: number): Buffer {
    let ports = this.cache.get(host)
    let t = ports?.get(port)
    if (t === undefined) {
      t = this.compute(this.secret, host, port)
      if (this.cached >= CACHE_MAX) {
        this.cache.clear()
        this.cached = 0
        ports = undefined
      }
      if (!ports) this.cache.set(host, (ports = new Map<number, Buffer>()))
      ports.set(port, t)
      this.cached++
    }
    return t
  }

  check(token: Buffer | undefined, host: string, port: number): boolean {
    if (!token || token.length !== TOKEN_SIZE) return false
    this.maybeRotate()
    return timingSafeEqual(token, this.current(host, port)) || timingSafeEqual(token, this.compute(this.oldSecret, host, port))
  }
}
