/**
 * The local address dvpn binds its DHT and ICE sockets to when --bind is not given: the one the kernel uses now to
 * reach the bootstrap (else the default route). Bound there, ICE never offers the VPN's own addresses as candidates
 * (the server's TUN, a client's TUN from an earlier session) and never selects a path through the tunnel itself,
 * which would carry the tunnel inside itself and stall as soon as it is used (seen without it: a pair to the server's
 * TUN address was selected once the client's routes to the VPN existed).
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { runCommand, type Runner } from './netconfig.js'

/** "host[:port]", "[v6]:port", "v6" → host. */
export function bootstrapHost(entry: string): string {
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(entry)
  if (bracket) return bracket[1]!
  if (isIP(entry) === 6) return entry
  return entry.replace(/:\d+$/, '')
}

async function sourceFor(run: Runner, address: string): Promise<string | undefined> {
  try {
    const out = await run('ip', [...(address.includes(':') ? ['-6'] : []), '-o', 'route', 'get', address])
    const dev = /\bdev (\S+)/.exec(out)?.[1]
    const src = /\bsrc (\S+)/.exec(out)?.[1]
    // a bootstrap on this host ("local ... dev lo src <its address>"): that address, unless it is the loopback
    if (!src || !dev || dev.startsWith('dvpn') || src.startsWith('127.') || src === '::1') return undefined
    return src
  } catch {
    return undefined
  }
}

export async function underlayAddress(bootstrap: readonly string[], run: Runner = runCommand): Promise<string | undefined> {
  for (const entry of bootstrap) {
    const host = bootstrapHost(entry)
    const ips = isIP(host) ? [host] : (await lookup(host, { all: true }).catch(() => [])).map((a) => a.address)
    for (const ip of ips) {
      const src = await sourceFor(run, ip)
      if (src) return src
    }
  }
  // no bootstrap (LAN discovery) or none routable: the default route (documentation addresses: nothing is sent)
  return (await sourceFor(run, '192.0.2.1')) ?? (await sourceFor(run, '2001:db8::1'))
}
