/**
 * PortMapper: UDP and TCP port mappings on the home gateway, so that a device behind a NAT that does not allow hole
 * punching (symmetric) can still be reached directly (DHTNet's UPnPContext, dhtnet-core.md §8, reduced to what
 * the connection layer needs: one UDP mapping per peer connection, asked for on demand, and one TCP mapping for the
 * ICE-TCP listening port, offered as a srflx `tcptype passive` candidate).
 *
 *  - Discovery (once, cached; retried after a failure once `retryDiscoveryMs` has passed): NAT-PMP to the default
 *    gateway from /proc/net/route first (DHTNet prefers NAT-PMP), then UPnP IGD through SSDP
 *    (`upnpNat().findGateways`), each bounded in time.
 *  - mapUdp() / mapTcp(): bounded by `mapTimeoutMs` (DHTNet waits 4 s for a mapping). Leases are refreshed by our
 *    own timer (unref'd) at half the lease (the granted one when NAT-PMP grants less); the package's autoRefresh is
 *    off (netlab.md defect 4).
 *  - unmapUdp() / unmapTcp() / close(): mappings are removed with the right protocol and external port ourselves
 *    (the package's unmap sends an empty protocol and the internal port, defect 1): NAT-PMP with lifetime 0 (opcode
 *    1 for UDP, 2 for TCP), UPnP with DeletePortMapping(NewProtocol=UDP|TCP, NewExternalPort=the granted one).
 *
 * Errors: DhtnetError NO_GATEWAY, MAPPING_FAILED, TIMEOUT, ABORTED.
 */
import { createSocket } from 'node:dgram'
import { readFileSync } from 'node:fs'
import type { Gateway } from '@achingbrain/nat-port-mapper'
import { DhtnetError, isDhtnetError, throwIfAborted } from '../errors.js'
import type { Logger } from '../util/log.js'
import { natPmpExternalAddress, natPmpMapTcp, natPmpMapUdp } from './natpmp.js'

export type MappedProtocol = 'UDP' | 'TCP'

export interface PortMapping {
  readonly externalIp: string
  readonly externalPort: number
  readonly internalPort: number
  readonly protocol: MappedProtocol
  /** Which protocol made it. */
  readonly via: 'natpmp' | 'upnp'
  /** TCP mappings: the local address the gateway forwards to (the base of the srflx candidate). */
  readonly internalIp?: string
}

export interface PortMapperOptions {
  /** NAT-PMP gateway address (default: the IPv4 default gateway from /proc/net/route). */
  natPmpGateway?: string
  /** NAT-PMP server port (default 5351; tests use a fake gateway on loopback). */
  natPmpPort?: number
  /** Use NAT-PMP (default true) and UPnP IGD (default true). */
  natPmp?: boolean
  upnp?: boolean
  /** Bound of each discovery step (default: NAT-PMP 1 s, UPnP 2 s). */
  natPmpDiscoveryTimeoutMs?: number
  upnpDiscoveryTimeoutMs?: number
  /** Bound of one mapping request (default 4 s, as DHTNet). */
  mapTimeoutMs?: number
  /** Lease asked for, seconds (default 7200 s, as DHTNet). */
  leaseS?: number
  /** Retry a failed discovery after this long (default 60 s). */
  retryDiscoveryMs?: number
  /** Description of UPnP mappings (default "DHTNET"). */
  label?: string
  log?: Logger
}

type Backend = { kind: 'natpmp'; gateway: string; externalIp: string } | { kind: 'upnp'; gateway: Gateway; localIp: string; externalIp: string }

interface Held {
  mapping: PortMapping
  refresh?: NodeJS.Timeout
  /** Lease granted (seconds), when the gateway said (NAT-PMP). */
  grantedS?: number
}

/** Mappings are held per protocol and internal port. */
function heldKey(protocol: MappedProtocol, internalPort: number): string {
  return `${protocol}:${internalPort}`
}

const WAN_IP_CONNECTION_2 = 'urn:schemas-upnp-org:service:WANIPConnection:2'

/** The IPv4 default gateway from /proc/net/route (little-endian hex), or undefined. */
export function defaultGatewayIpv4(routeTable?: string): string | undefined {
  let text = routeTable
  if (text === undefined) {
    try {
      text = readFileSync('/proc/net/route', 'utf8')
    } catch {
      return undefined
    }
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4 || f[1] !== '00000000') continue
    const flags = parseInt(f[3]!, 16)
    if (!(flags & 0x2)) continue // RTF_GATEWAY
    const hex = f[2]!
    if (!/^[0-9A-Fa-f]{8}$/.test(hex)) continue
    const n = parseInt(hex, 16)
    return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff].join('.')
  }
  return undefined
}

/** The local address the kernel uses to reach `host` (a connected UDP socket sends nothing). */
function localAddressTowards(host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4')
    s.on('error', (err) => {
      s.close()
      reject(err)
    })
    s.connect(1, host, () => {
      const a = s.address().address
      s.close()
      resolve(a)
    })
  })
}

function anySignal(signals: Array<AbortSignal | undefined>): AbortSignal {
  return AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined))
}

export class PortMapper {
  private readonly options: PortMapperOptions
  private readonly log: Logger
  private readonly held = new Map<string, Held>()
  private readonly closing = new AbortController()
  /** Removals in flight (close() waits for them). */
  private readonly removing = new Set<Promise<void>>()
  private discovery: Promise<Backend> | undefined
  private discoveryFailedAt = 0
  private closed = false

  constructor(options: PortMapperOptions = {}) {
    this.options = options
    this.log = options.log ?? (() => {})
  }

  /** Mappings currently held (internal port → mapping). */
  get mappings(): PortMapping[] {
    return [...this.held.values()].map((h) => h.mapping)
  }

  /** Map a local UDP port (any external port the gateway grants; the same one is asked for first). */
  mapUdp(internalPort: number, options: { signal?: AbortSignal } = {}): Promise<PortMapping> {
    return this.map('UDP', internalPort, options)
  }

  /** Map a local TCP port (the ICE-TCP listening port): a srflx `tcptype passive` candidate at
   *  `externalIp:externalPort` whose base is `internalIp:internalPort`. */
  mapTcp(internalPort: number, options: { signal?: AbortSignal } = {}): Promise<PortMapping> {
    return this.map('TCP', internalPort, options)
  }

  /** Remove the mapping of a local UDP port (no-op when none is held). Never throws: failures are logged. */
  unmapUdp(internalPort: number): Promise<void> {
    return this.unmap('UDP', internalPort)
  }

  /** Remove the mapping of a local TCP port (no-op when none is held). Never throws: failures are logged. */
  unmapTcp(internalPort: number): Promise<void> {
    return this.unmap('TCP', internalPort)
  }

  private async map(protocol: MappedProtocol, internalPort: number, options: { signal?: AbortSignal }): Promise<PortMapping> {
    if (!Number.isInteger(internalPort) || internalPort < 1 || internalPort > 65535) {
      throw new DhtnetError('INVALID_ARGUMENT', `not a ${protocol} port: ${internalPort}`)
    }
    this.assertOpen()
    throwIfAborted(options.signal)
    const mapTimeoutMs = this.options.mapTimeoutMs ?? 4000
    const bound = AbortSignal.timeout(mapTimeoutMs)
    const signal = anySignal([options.signal, this.closing.signal, bound])
    const key = heldKey(protocol, internalPort)
    try {
      const backend = await this.backend(signal)
      const existing = this.held.get(key)
      if (existing) return existing.mapping
      const { mapping, grantedS } = await this.request(backend, protocol, internalPort, internalPort, signal)
      if (this.closed) {
        await this.remove(backend, mapping).catch(() => {})
        throw new DhtnetError('ABORTED', 'the port mapper was closed')
      }
      const raced = this.held.get(key)
      if (raced) return raced.mapping // a concurrent call for the same port won; its mapping is the same one
      this.held.set(key, { mapping, ...(grantedS !== undefined ? { grantedS } : {}) })
      this.scheduleRefresh(backend, key)
      this.log('info', `UPnP: ${protocol} ${mapping.externalIp}:${mapping.externalPort} → local port ${internalPort} (${mapping.via})`)
      return mapping
    } catch (err) {
      throw this.translate(err, options.signal, bound, `mapping ${protocol} port ${internalPort}`, mapTimeoutMs)
    }
  }

  private async unmap(protocol: MappedProtocol, internalPort: number): Promise<void> {
    const key = heldKey(protocol, internalPort)
    const held = this.held.get(key)
    if (!held) return
    this.held.delete(key)
    clearTimeout(held.refresh)
    const removal = this.removeHeld(held, internalPort)
    this.removing.add(removal)
    try {
      await removal
    } finally {
      this.removing.delete(removal)
    }
  }

  private async removeHeld(held: Held, internalPort: number): Promise<void> {
    const backend = await this.discovery?.catch(() => undefined)
    if (!backend) return
    const protocol = held.mapping.protocol
    try {
      await this.remove(backend, held.mapping)
      this.log('debug', `UPnP: removed ${protocol} mapping ${held.mapping.externalPort} → local port ${internalPort}`)
    } catch (err) {
      this.log('warn', `UPnP: could not remove the ${protocol} mapping of port ${internalPort}: ${(err as Error).message}`)
    }
  }

  /** Remove every mapping, stop timers; leaves no handle. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    const held = [...this.held.values()].map((h) => h.mapping)
    this.closed = true
    this.closing.abort()
    await Promise.all([...held.map((m) => this.unmap(m.protocol, m.internalPort)), ...this.removing])
    const backend = await this.discovery?.catch(() => undefined)
    if (backend?.kind === 'upnp') await backend.gateway.stop().catch(() => {})
  }

  // ---------------------------------------------------------------------------------------------------------

  private pmpPort(): { port?: number } {
    return this.options.natPmpPort !== undefined ? { port: this.options.natPmpPort } : {}
  }

  private assertOpen(): void {
    if (this.closed) throw new DhtnetError('ABORTED', 'the port mapper is closed')
  }

  private translate(err: unknown, caller: AbortSignal | undefined, bound: AbortSignal, what: string, ms: number): DhtnetError {
    if (caller?.aborted || this.closing.signal.aborted) return new DhtnetError('ABORTED', `${what}: aborted`, { cause: err })
    if (bound.aborted) return new DhtnetError('TIMEOUT', `${what}: no answer from the gateway within ${ms} ms`, { cause: err })
    if (isDhtnetError(err)) return err
    return new DhtnetError('MAPPING_FAILED', `${what}: ${(err as Error).message}`, { cause: err })
  }

  /** The gateway, discovered once (a failure is remembered for retryDiscoveryMs). */
  private backend(signal: AbortSignal): Promise<Backend> {
    const retryMs = this.options.retryDiscoveryMs ?? 60_000
    if (this.discovery && this.discoveryFailedAt !== 0 && Date.now() - this.discoveryFailedAt > retryMs) this.discovery = undefined
    if (!this.discovery) {
      this.discoveryFailedAt = 0
      // Not bound to one caller's signal: a discovery serves every later mapping (only close() aborts it).
      const d = this.discover(this.closing.signal)
      d.catch(() => {
        this.discoveryFailedAt = Date.now()
      })
      this.discovery = d
    }
    const d = this.discovery
    return new Promise<Backend>((resolve, reject) => {
      const onAbort = () => reject(new DhtnetError('ABORTED', 'gateway discovery aborted', { cause: signal.reason }))
      if (signal.aborted) return onAbort()
      signal.addEventListener('abort', onAbort, { once: true })
      d.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
    })
  }

  private async discover(signal: AbortSignal): Promise<Backend> {
    const reasons: string[] = []
    if (this.options.natPmp !== false) {
      const gateway = this.options.natPmpGateway ?? defaultGatewayIpv4()
      if (!gateway) reasons.push('NAT-PMP: no IPv4 default gateway')
      else {
        try {
          const externalIp = await natPmpExternalAddress(gateway, { timeoutMs: this.options.natPmpDiscoveryTimeoutMs ?? 1000, signal, ...this.pmpPort() })
          this.log('info', `UPnP: NAT-PMP gateway ${gateway}, external address ${externalIp}`)
          return { kind: 'natpmp', gateway, externalIp }
        } catch (err) {
          if (signal.aborted) throw err
          reasons.push(`NAT-PMP: ${(err as Error).message}`)
        }
      }
    }
    if (this.options.upnp !== false) {
      const ms = this.options.upnpDiscoveryTimeoutMs ?? 2000
      try {
        return await this.discoverUpnp(anySignal([signal, AbortSignal.timeout(ms)]))
      } catch (err) {
        if (signal.aborted) throw err
        reasons.push(`UPnP IGD: ${(err as Error).message}`)
      }
    }
    throw new DhtnetError('NO_GATEWAY', `no UPnP/NAT-PMP gateway found (${reasons.join('; ') || 'both disabled'})`, {
      hint: 'enable UPnP or NAT-PMP on the router, or turn UPnP off (--no-upnp / enable_upnp: false)',
    })
  }

  private async discoverUpnp(signal: AbortSignal): Promise<Backend> {
    const { upnpNat } = await import('@achingbrain/nat-port-mapper')
    const nat = upnpNat({ autoRefresh: false, description: this.options.label ?? 'DHTNET' })
    let found: Gateway | undefined
    try {
      for await (const gw of nat.findGateways({ signal })) {
        found = gw
        break
      }
    } catch (err) {
      if (!signal.aborted) throw err
    }
    if (!found) throw new DhtnetError('NO_GATEWAY', 'no Internet Gateway Device answered the SSDP search in time')
    try {
      const externalIp = await found.externalIp({ signal })
      const localIp = await localAddressTowards(found.host)
      this.log('info', `UPnP: IGD ${found.host}:${found.port}, external address ${externalIp}`)
      return { kind: 'upnp', gateway: found, localIp, externalIp }
    } catch (err) {
      await found.stop().catch(() => {})
      throw err
    }
  }

  private async request(
    backend: Backend,
    protocol: MappedProtocol,
    internalPort: number,
    externalPort: number,
    signal: AbortSignal,
  ): Promise<{ mapping: PortMapping; grantedS?: number }> {
    const leaseS = this.options.leaseS ?? 7200
    if (backend.kind === 'natpmp') {
      const mapFn = protocol === 'TCP' ? natPmpMapTcp : natPmpMapUdp
      const r = await mapFn(backend.gateway, internalPort, externalPort, leaseS, { timeoutMs: this.options.mapTimeoutMs ?? 4000, signal, ...this.pmpPort() })
      if (r.lifetimeS === 0 || r.externalPort === 0) throw new DhtnetError('MAPPING_FAILED', `the NAT-PMP gateway granted no mapping for ${protocol} port ${internalPort}`)
      // NAT-PMP maps to the address the request came from: the local address towards the gateway
      const internalIp = protocol === 'TCP' ? await localAddressTowards(backend.gateway) : undefined
      return {
        mapping: { externalIp: backend.externalIp, externalPort: r.externalPort, internalPort, protocol, via: 'natpmp', ...(internalIp !== undefined ? { internalIp } : {}) },
        grantedS: r.lifetimeS,
      }
    }
    const m = await backend.gateway.map(internalPort, backend.localIp, {
      protocol,
      externalPort,
      ttl: leaseS * 1000, // the package's UPnP ttl is in ms (it sends seconds)
      autoRefresh: false,
      description: `${this.options.label ?? 'DHTNET'}-${protocol}:${internalPort}`,
      signal,
    })
    return {
      mapping: {
        externalIp: backend.externalIp,
        externalPort: m.externalPort,
        internalPort,
        protocol,
        via: 'upnp',
        ...(protocol === 'TCP' ? { internalIp: backend.localIp } : {}),
      },
    }
  }

  private async remove(backend: Backend, mapping: PortMapping): Promise<void> {
    if (backend.kind === 'natpmp') {
      const mapFn = mapping.protocol === 'TCP' ? natPmpMapTcp : natPmpMapUdp
      await mapFn(backend.gateway, mapping.internalPort, 0, 0, { timeoutMs: this.options.mapTimeoutMs ?? 4000, ...this.pmpPort() })
      return
    }
    // The package's unmap() deletes with an empty protocol and the internal port as external port: ask for the
    // deletion ourselves through its SOAP client, with the protocol and the external port granted.
    const device = (
      backend.gateway as unknown as { gateway?: { run(service: string, action: string, args: Array<[string, unknown]>, opts: { signal?: AbortSignal }): Promise<unknown> } }
    ).gateway
    if (!device?.run) throw new DhtnetError('MAPPING_FAILED', 'this UPnP gateway object cannot send DeletePortMapping')
    await device.run(
      WAN_IP_CONNECTION_2,
      'DeletePortMapping',
      [
        ['NewRemoteHost', ''],
        ['NewExternalPort', mapping.externalPort],
        ['NewProtocol', mapping.protocol],
      ],
      { signal: AbortSignal.timeout(this.options.mapTimeoutMs ?? 4000) },
    )
  }

  /** Renew at half the lease (the granted one when shorter; unref'd: a pending renewal never keeps the process
   *  alive). */
  private scheduleRefresh(backend: Backend, key: string): void {
    const held = this.held.get(key)
    if (!held) return
    const leaseS = Math.min(this.options.leaseS ?? 7200, held.grantedS ?? Infinity)
    const { protocol, internalPort } = held.mapping
    held.refresh = setTimeout(
      () => {
        if (this.closed || this.held.get(key) !== held) return
        const signal = anySignal([this.closing.signal, AbortSignal.timeout(this.options.mapTimeoutMs ?? 4000)])
        this.request(backend, protocol, internalPort, held.mapping.externalPort, signal).then(
          ({ mapping, grantedS }) => {
            if (this.held.get(key) !== held) return
            if (mapping.externalPort !== held.mapping.externalPort)
              this.log('warn', `UPnP: the renewed ${protocol} mapping of port ${internalPort} moved to external port ${mapping.externalPort}`)
            held.mapping = mapping
            if (grantedS !== undefined) held.grantedS = grantedS
            this.scheduleRefresh(backend, key)
          },
          (err: unknown) => this.log('warn', `UPnP: renewing the ${protocol} mapping of port ${internalPort} failed: ${(err as Error).message}`),
        )
      },
      Math.max(1000, (leaseS * 1000) / 2),
    )
    held.refresh.unref()
  }
}
