/**
 * Which local addresses we announce (host candidates). As pjnath: every interface address, loopback excluded unless
 * asked for (tests on 127.0.0.1), IPv6 link-local announced only when the host has no other IPv6 address (pjnath
 * keeps it only as the first alias) and never checked. At most MAX_HOST_ADDRESSES.
 */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os'
import { ipToBytes, normalizeIp, type IpFamily } from '../stun/ip.js'

export const MAX_HOST_ADDRESSES = 8

export interface GatherOptions {
  /** Only this address (a wildcard keeps every address of its family). */
  readonly bindAddress?: string | undefined
  /** Only these interface names. */
  readonly interfaces?: readonly string[] | undefined
  readonly includeLoopback?: boolean | undefined
}

export interface HostAddress {
  readonly family: IpFamily
  readonly address: string
  readonly interface: string
}

export function isLinkLocal(address: string): boolean {
  const b = ipToBytes(address)
  if (!b) return false
  return b.length === 4 ? b[0] === 169 && b[1] === 254 : b[0] === 0xfe && (b[1]! & 0xc0) === 0x80
}

export function isLoopback(address: string): boolean {
  const b = ipToBytes(address)
  if (!b) return false
  return b.length === 4 ? b[0] === 127 : b.every((x, i) => x === (i === 15 ? 1 : 0))
}

/** Unspecified, multicast or broadcast: never a usable peer address. */
export function isUnusable(address: string): boolean {
  const b = ipToBytes(address)
  if (!b) return true
  if (b.every((x) => x === 0)) return true
  if (b.length === 4) return b[0]! >= 224
  return b[0] === 0xff
}

export function hostAddresses(options: GatherOptions = {}, interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces()): HostAddress[] {
  const bind = options.bindAddress ? normalizeIp(options.bindAddress) : undefined
  const wildcardFamily = bind === '0.0.0.0' ? 4 : bind === '::' ? 6 : undefined
  const v4: HostAddress[] = []
  const v6: HostAddress[] = []
  const v6LinkLocal: HostAddress[] = []
  for (const [name, infos] of Object.entries(interfaces)) {
    if (options.interfaces && !options.interfaces.includes(name)) continue
    for (const info of infos ?? []) {
      const family: IpFamily = info.family === 'IPv4' || (info.family as unknown) === 4 ? 4 : 6
      const address = normalizeIp(info.address)
      if (bind !== undefined) {
        if (wildcardFamily !== undefined ? family !== wildcardFamily : address !== bind) continue
      }
      // loopback only when asked for (includeLoopback, or binding to that very address)
      if ((info.internal || isLoopback(address)) && !options.includeLoopback && (bind === undefined || wildcardFamily !== undefined)) continue
      if (isUnusable(address)) continue
      const host = { family, address, interface: name }
      if (family === 4) v4.push(host)
      else if (isLinkLocal(address)) v6LinkLocal.push(host)
      else v6.push(host)
    }
  }
  const all = [...v4, ...(v6.length > 0 ? v6 : v6LinkLocal.slice(0, 1))]
  const seen = new Set<string>()
  return all.filter((h) => !seen.has(h.address) && seen.add(h.address)).slice(0, MAX_HOST_ADDRESSES)
}
