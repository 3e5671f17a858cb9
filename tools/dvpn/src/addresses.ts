/**
 * IPv4 and IPv6 addresses and subnets as numbers (IPv4: uint32, IPv6: bigint), parsed from what a user or DHTNet's
 * configuration writes: DHTNet's prefixes ("10.80.77.", "fd00:0:0:1::": an address is the prefix plus a number),
 * CIDR ("10.80.77.0/24"), or a bare address. Formatting is canonical (RFC 5952 for IPv6).
 */
import { createHash } from 'node:crypto'
import { isIPv4, isIPv6 } from 'node:net'

export interface Subnet4 {
  readonly network: number
  readonly prefix: number
}

export interface Subnet6 {
  readonly network: bigint
  readonly prefix: number
}

const V6_BITS = 128n
const V6_MAX = (1n << V6_BITS) - 1n

export function parseIPv4(text: string): number {
  if (!isIPv4(text)) throw new Error(`"${text}" is not an IPv4 address`)
  const p = text.split('.').map(Number)
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
}

export function parseIPv6(text: string): bigint {
  const t = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  if (!isIPv6(t) || t.includes('%')) throw new Error(`"${text}" is not an IPv6 address`)
  let tail: number[] = []
  let body = t
  // an embedded IPv4 tail (::ffff:1.2.3.4)
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(body)
  if (v4) {
    const n = parseIPv4(v4[1]!)
    tail = [n >>> 16, n & 0xffff]
    body = body.slice(0, -v4[1]!.length)
    if (body.endsWith(':') && !body.endsWith('::')) body = body.slice(0, -1)
  }
  const halves = body.split('::')
  const head = halves[0] === '' ? [] : halves[0]!.split(':')
  const rest = halves.length > 1 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : []
  const missing = 8 - tail.length - head.length - rest.length
  const groups = halves.length > 1 ? [...head, ...Array<string>(missing).fill('0'), ...rest] : head
  const values = [...groups.map((g) => parseInt(g, 16)), ...tail]
  let n = 0n
  for (const v of values) n = (n << 16n) | BigInt(v)
  return n
}

/** RFC 5952: lowercase, leading zeros dropped, the longest run (≥ 2) of zero groups as "::". */
export function formatIPv6(n: bigint): string {
  const groups: number[] = []
  for (let i = 7; i >= 0; i--) groups.push(Number((n >> BigInt(i * 16)) & 0xffffn))
  let bestAt = -1
  let bestLen = 0
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestAt = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestLen < 2) return hex.join(':')
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`
}

export function ipv6FromBytes(b: Uint8Array, offset = 0): bigint {
  let n = 0n
  for (let i = 0; i < 16; i++) n = (n << 8n) | BigInt(b[offset + i]!)
  return n
}

export function ipv6ToBytes(n: bigint): Buffer {
  const b = Buffer.alloc(16)
  for (let i = 15; i >= 0; i--) {
    b[i] = Number(n & 0xffn)
    n >>= 8n
  }
  return b
}

export function mask4(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

export function mask6(prefix: number): bigint {
  return prefix === 0 ? 0n : (V6_MAX << (V6_BITS - BigInt(prefix))) & V6_MAX
}

export function inSubnet4(a: number, s: Subnet4): boolean {
  return (a & mask4(s.prefix)) >>> 0 === s.network
}

export function inSubnet6(a: bigint, s: Subnet6): boolean {
  return (a & mask6(s.prefix)) === s.network
}

export function subnet4(address: number, prefix: number): Subnet4 {
  return { network: (address & mask4(prefix)) >>> 0, prefix }
}

export function subnet6(address: bigint, prefix: number): Subnet6 {
  return { network: address & mask6(prefix), prefix }
}

export function formatSubnet4(s: Subnet4): string {
  return `${formatIPv4(s.network)}/${s.prefix}`
}

export function formatSubnet6(s: Subnet6): string {
  return `${formatIPv6(s.network)}/${s.prefix}`
}

/** An address with the subnet it belongs to (the subnet's network when only a subnet was written). */
export interface AddressSpec4 {
  readonly subnet: Subnet4
  /** The address written, when the text named one (not just a network or a DHTNet prefix). */
  readonly address: number | undefined
}

export interface AddressSpec6 {
  readonly subnet: Subnet6
  readonly address: bigint | undefined
}

/**
 * An IPv4 setting: DHTNet's prefix "10.80.77." (= 10.80.77.0/24), CIDR "10.80.77.0/24" or "10.80.77.1/24" (an
 * address in its subnet), or a bare address "10.80.77.1" (its /24).
 */
export function parseAddressSpec4(text: string): AddressSpec4 {
  const t = text.trim()
  const prefixForm = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.$/.exec(t)
  if (prefixForm) return { subnet: subnet4(parseIPv4(`${t}0`), 24), address: undefined }
  const [addr, len] = t.split('/') as [string, string | undefined]
  const a = parseIPv4(addr)
  if (len === undefined) return { subnet: subnet4(a, 24), address: a }
  const prefix = Number(len)
  if (!/^\d{1,2}$/.test(len) || prefix < 8 || prefix > 30) throw new Error(`"${text}": the prefix length must be 8 to 30`)
  const subnet = subnet4(a, prefix)
  return { subnet, address: a === subnet.network ? undefined : a }
}

/**
 * An IPv6 setting: DHTNet's prefix "fd00:0:0:1::" (= fd00:0:0:1::/64), CIDR "fd00:0:0:1::/64" or an address in its
 * subnet "fd00:0:0:1::1/64", or a bare address (its /64).
 */
export function parseAddressSpec6(text: string): AddressSpec6 {
  const t = text.trim()
  const [addr, len] = t.split('/') as [string, string | undefined]
  const a = parseIPv6(addr)
  if (len === undefined) {
    const subnet = subnet6(a, 64)
    // DHTNet's form ends with "::" and names the network
    return { subnet, address: addr.endsWith('::') && a === subnet.network ? undefined : a }
  }
  const prefix = Number(len)
  if (!/^\d{1,3}$/.test(len) || prefix < 48 || prefix > 126) throw new Error(`"${text}": the prefix length must be 48 to 126`)
  const subnet = subnet6(a, prefix)
  return { subnet, address: a === subnet.network ? undefined : a }
}

/**
 * The default networks of a server without configuration, derived from its long id so that they stay the same
 * across restarts and differ between servers: 10.X.Y.0/24 (X in 100..227) and a ULA /64 fd<40-bit global id>::/64
 * (RFC 4193's form, the global id taken from the hash instead of a timestamp).
 */
export function defaultNetworks(longId: string): { v4: Subnet4; v6: Subnet6 } {
  const h = createHash('sha256').update(`dvpn-default-network:${longId}`).digest()
  const v4 = parseIPv4(`10.${100 + (h[0]! % 128)}.${h[1]!}.0`)
  let v6 = 0xfdn
  for (let i = 2; i < 7; i++) v6 = (v6 << 8n) | BigInt(h[i]!)
  v6 = (v6 << 16n) << 64n // subnet id 0, then the interface id
  return { v4: { network: v4, prefix: 24 }, v6: { network: v6, prefix: 64 } }
}

/** "ip:port" or "[ip]:port" → ip; undefined when it is not one. */
export function hostOf(address: string | undefined): string | undefined {
  if (!address) return undefined
  const m = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address)
  return m ? m[1] : isIPv4(address) || isIPv6(address) ? address : undefined
}
