/**
 * IP address text <-> bytes, without DNS: what STUN address attributes and ICE candidates need.
 * IPv6 text is written as RFC 5952 (lowercase, longest zero run compressed), as Node and inet_ntop print it.
 */
import { isIPv4, isIPv6 } from 'node:net'

export type IpFamily = 4 | 6

export interface TransportAddress {
  readonly family: IpFamily
  /** Text form, IPv6 without brackets. */
  readonly address: string
  readonly port: number
}

/** 4 or 16 bytes; undefined when `text` is not a literal IPv4/IPv6 address (zone ids are dropped). */
export function ipToBytes(text: string): Buffer | undefined {
  if (text.length > 64) return undefined
  if (isIPv4(text)) return Buffer.from(text.split('.').map((p) => Number(p)))
  const pct = text.indexOf('%')
  const bare = pct >= 0 ? text.slice(0, pct) : text
  if (!isIPv6(bare)) return undefined
  const out = Buffer.alloc(16)
  let head = bare
  let tail = ''
  const dbl = bare.indexOf('::')
  if (dbl >= 0) {
    head = bare.slice(0, dbl)
    tail = bare.slice(dbl + 2)
  }
  const parse = (part: string): number[] => {
    if (part === '') return []
    const groups: number[] = []
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const v4 = g.split('.').map((p) => Number(p))
        groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!)
      } else groups.push(parseInt(g, 16))
    }
    return groups
  }
  const h = parse(head)
  const t = parse(tail)
  h.forEach((g, i) => out.writeUInt16BE(g, i * 2))
  t.forEach((g, i) => out.writeUInt16BE(g, 16 - (t.length - i) * 2))
  return out
}

export function bytesToIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`
  if (bytes.length !== 16) throw new RangeError('an IP address has 4 or 16 bytes')
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!)
  // IPv4-mapped: ::ffff:a.b.c.d
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`
  }
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestLen < 2) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`
}

export function ipFamily(text: string): IpFamily | undefined {
  if (isIPv4(text)) return 4
  const pct = text.indexOf('%')
  return isIPv6(pct >= 0 ? text.slice(0, pct) : text) ? 6 : undefined
}

/** `::ffff:1.2.3.4` -> `1.2.3.4`; anything else unchanged (normalised when it is IPv6). */
export function normalizeIp(text: string): string {
  const bytes = ipToBytes(text)
  if (!bytes) return text
  if (bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return bytesToIp(bytes.subarray(12))
  }
  return bytesToIp(bytes)
}

/** "ip:port", or "[v6]:port". */
export function formatHostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}
