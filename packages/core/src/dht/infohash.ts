import { createHash, randomBytes } from 'node:crypto'

/** Length in bytes of every OpenDHT hash: node ids, keys, key ids (SHA-1 sized). */
export const HASH_LEN = 20

/** OpenDHT InfoHash::get: SHA-1 of the UTF-8 text or of the bytes. */
export function infoHash(data: string | Uint8Array): Buffer {
  return createHash('sha1').update(data).digest()
}

export function randomHash(): Buffer {
  return randomBytes(HASH_LEN)
}

export function isHash(x: unknown): x is Buffer {
  return Buffer.isBuffer(x) && x.length === HASH_LEN
}

/** Parse a 40-hex string into a hash, or undefined. */
export function hashFromHex(hex: string): Buffer | undefined {
  if (!/^[0-9a-fA-F]{40}$/.test(hex)) return undefined
  return Buffer.from(hex, 'hex')
}

/** Negative when a is closer to target than b (XOR metric), 0 when equal. */
export function xorCmp(target: Uint8Array, a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < HASH_LEN; i++) {
    if (a[i] === b[i]) continue
    const da = a[i]! ^ target[i]!
    const db = b[i]! ^ target[i]!
    return da - db
  }
  return 0
}

/** Number of leading bits a and b have in common (0..160). */
export function commonBits(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < HASH_LEN; i++) {
    const x = a[i]! ^ b[i]!
    if (x === 0) continue
    return i * 8 + Math.clz32(x) - 24
  }
  return HASH_LEN * 8
}

/** A random hash whose first `bits` bits equal those of `prefix`. */
export function randomHashWithPrefix(prefix: Uint8Array, bits: number): Buffer {
  const out = randomHash()
  const full = bits >> 3
  for (let i = 0; i < full && i < HASH_LEN; i++) out[i] = prefix[i]!
  const rem = bits & 7
  if (rem && full < HASH_LEN) {
    const mask = (0xff << (8 - rem)) & 0xff
    out[full] = (prefix[full]! & mask) | (out[full]! & ~mask & 0xff)
  }
  return out
}

export function hashEquals(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
}
