/**
 * Which TCP services a `dnc -l` server lets peers reach (`authorized_services`).
 *
 * A channel is named `nc://<host>:<port>` (`nc://[::1]:22` for IPv6). A request is allowed when its port equals an
 * entry's port and its host is the entry's host: the same address (IPv6 compared in canonical form, IPv4-mapped
 * IPv6 equal to IPv4), the same host name (case-insensitively), or an address the entry's host name resolves to.
 * A name the peer sent is never resolved unless an authorized entry with that port names that very host (no DNS
 * query on a peer's behalf otherwise: no exfiltration through DNS, no resolver load); only entries that are
 * host names, and whose port matches, are resolved.
 * The server then connects to the exact address that was checked, so DNS cannot answer differently in between.
 * An empty list allows nothing, unless `allow_all_services` is set (then any destination, names included).
 */
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP, SocketAddress } from 'node:net'
import type { ServiceEntry } from './options/config.js'

export interface ServiceTarget {
  /** Host as the client wrote it (no brackets). */
  readonly host: string
  readonly port: number
}

export type ServiceDecision =
  | {
      readonly ok: true
      /** Addresses the request may go to (checked against the list), to try in order until one connects. */
      readonly addresses: readonly string[]
      readonly port: number
      readonly host: string
    }
  | { readonly ok: false; readonly reason: string }

export type Resolver = (host: string) => Promise<string[]>

export const defaultResolver: Resolver = async (host) => (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address)

/** The channel name a client asks for: `nc://127.0.0.1:22`, `nc://[::1]:22`, `nc://example.org:80`. */
export function serviceChannelName(host: string, port: number): string {
  const h = host.startsWith('[') ? host : isIP(host) === 6 ? `[${host}]` : host
  return `nc://${h}:${port}`
}

/** Parses `nc://host:port`; undefined when the name is not one (the reason is then the caller's to give). */
export function parseServiceChannelName(name: string): ServiceTarget | undefined {
  const m = /^nc:\/\/(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^\s/:[\]]+)|([0-9A-Fa-f:.]+)):(\d{1,5})$/.exec(name)
  if (!m) {
    // unbracketed IPv6 with the port after the last colon (tolerated: "nc://::1:22")
    const loose = /^nc:\/\/([0-9A-Fa-f:.]+):(\d{1,5})$/.exec(name)
    if (!loose || isIP(loose[1]!) !== 6) return undefined
    const port = Number(loose[2])
    return port >= 1 && port <= 65535 ? { host: loose[1]!, port } : undefined
  }
  const host = m[1] ?? m[2] ?? m[3]!
  const port = Number(m[4])
  if (port < 1 || port > 65535) return undefined
  if (m[1] !== undefined && isIP(host.split('%')[0]!) !== 6) return undefined
  if (m[3] !== undefined && isIP(host) === 0) return undefined
  return { host, port }
}

/**
 * Canonical text of an IP address (inet_ntop's: IPv6 compressed and lowercase, IPv4-mapped IPv6 as IPv4), so that
 * equal addresses compare equal whatever their notation; undefined for a host name.
 */
export function canonicalAddress(host: string): string | undefined {
  const bare = host.split('%')[0]!
  const family = isIP(bare)
  if (family === 0) return undefined
  const text = new SocketAddress({ address: bare, family: family === 4 ? 'ipv4' : 'ipv6' }).address
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text)
  return mapped ? mapped[1]! : text
}

export interface ServicePolicyOptions {
  readonly services: readonly ServiceEntry[]
  readonly allowAll: boolean
  readonly resolve?: Resolver
}

export class ServicePolicy {
  readonly services: readonly ServiceEntry[]
  readonly allowAll: boolean
  private readonly resolve: Resolver

  constructor(options: ServicePolicyOptions) {
    this.services = options.services
    this.allowAll = options.allowAll
    this.resolve = options.resolve ?? defaultResolver
  }

  /** True when no request can ever be accepted (the server says so at start). */
  get allowsNothing(): boolean {
    return !this.allowAll && this.services.length === 0
  }

  describe(): string {
    if (this.allowAll) return 'every service (allow_all_services: true)'
    if (this.services.length === 0) return 'no service'
    return this.services.map((s) => serviceChannelName(s.ip, s.port).slice('nc://'.length)).join(', ')
  }

  /** Decides on a channel name; on success gives the address to connect to. Never throws. */
  async decide(channelName: string): Promise<ServiceDecision> {
    const target = parseServiceChannelName(channelName)
    if (!target) {
      return { ok: false, reason: `"${channelName.slice(0, 200)}" is not a service name; dnc expects nc://<host>:<port>` }
    }
    const shown = serviceChannelName(target.host, target.port).slice('nc://'.length)
    if (this.allowsNothing) {
      return { ok: false, reason: `${shown} is not authorized: this server authorizes no service (authorized_services is empty)` }
    }
    const cannotResolve = (host: string, err: unknown): ServiceDecision => ({
      ok: false,
      reason: `cannot resolve ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    })
    if (this.allowAll) {
      try {
        return { ok: true, addresses: await this.addressesOf(target.host), port: target.port, host: target.host }
      } catch (err) {
        return cannotResolve(target.host, err)
      }
    }

    const targetAddress = canonicalAddress(target.host)
    for (const entry of this.services) {
      if (entry.port !== target.port) continue
      const entryAddress = canonicalAddress(entry.ip)
      if (entryAddress !== undefined) {
        // an address entry: only that address, as the peer wrote it (a name it sent is not resolved for this)
        if (targetAddress === entryAddress) return { ok: true, addresses: [entryAddress], port: target.port, host: target.host }
        continue
      }
      // a host-name entry: the same name, or an address the entry's name resolves to
      const sameName = targetAddress === undefined && entry.ip.toLowerCase() === target.host.toLowerCase()
      if (targetAddress === undefined && !sameName) continue
      let entryAddresses: string[]
      try {
        entryAddresses = await this.addressesOf(entry.ip)
      } catch (err) {
        if (sameName) return cannotResolve(target.host, err)
        continue // an entry whose name does not resolve allows nothing now
      }
      if (sameName) return { ok: true, addresses: entryAddresses, port: target.port, host: target.host }
      if (entryAddresses.includes(targetAddress!)) return { ok: true, addresses: [targetAddress!], port: target.port, host: target.host }
    }
    return { ok: false, reason: `${shown} is not in this server's authorized_services` }
  }

  private async addressesOf(host: string): Promise<string[]> {
    const literal = canonicalAddress(host)
    if (literal !== undefined) return [literal]
    const found = (await this.resolve(host)).map((a) => canonicalAddress(a)).filter((a): a is string => a !== undefined)
    if (found.length === 0) throw Object.assign(new Error(`no address for ${host}`), { code: 'ENOTFOUND' })
    return [...new Set(found)]
  }
}
