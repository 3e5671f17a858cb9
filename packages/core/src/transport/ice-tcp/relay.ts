/**
 * The ICE-TCP transport's TCP relay: one TURN allocation over TCP or TLS with a TCP relay (RFC 6062, ../turn/),
 * shared by every session like the passive listener, offered as a `typ relay tcptype passive` candidate.
 *
 *  - Allocated in the background (prepare(), or the first session, which waits at most `gatherMs` for it); a failure
 *    is remembered (`lastError`, for the ICE_FAILED message of a session that had no relay) and retried no sooner
 *    than 10 s later, doubling up to 5 min (DHTNet's TurnCache backoff, shortened). An allocation that ends (server
 *    gone, refresh refused) is replaced at the next session.
 *  - A peer reaches our relayed address with plain TCP; coturn refuses any peer without a permission, so each session
 *    permits the peer's candidate addresses (its server-reflexive/public one above all: that is where its connection
 *    comes from) as soon as it knows them. Permissions are counted per address: one is forgotten when no session and
 *    no relayed link needs it any more.
 *  - Inbound relayed connections (CONNECTION-ATTEMPT → data connection) carry the peer's RFC 4571 frames exactly as
 *    an accepted socket does: they are handed to the listener (`onConnection` → PassiveListener.adopt) with the peer
 *    and our relayed address as their ICE addresses.
 *
 * Credentials never appear in a message or a log line (the TURN client guarantees it; we only print the server).
 */
import type { Socket } from 'node:net'
import { DhtnetError, isDhtnetError, errorMessage } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { TurnTcpClient } from '../turn/client.js'
import type { TurnAllocation } from '../turn/allocation.js'
import type { TurnTcpAllocateOptions } from '../turn/options.js'
import { parseTurnServer } from '../turn/server-address.js'
import { formatHostPort, ipFamily, normalizeIp, type TransportAddress } from '../stun/ip.js'

export interface IceTcpRelayOptions extends Omit<TurnTcpAllocateOptions, 'signal' | 'logger'> {
  /** How long a session waits for the allocation before it goes on without a relay candidate (default 3000 ms). */
  readonly gatherMs?: number | undefined
}

export const DEFAULT_RELAY_GATHER_MS = 3000
const FIRST_RETRY_MS = 10_000
const MAX_RETRY_MS = 300_000
/** Peer addresses one session asks a permission for (a peer announces at most 31 candidates, most of them hosts). */
export const MAX_PERMITTED_PER_SESSION = 8

export type RelayedConnectionHandler = (stream: Socket, peer: TransportAddress, relayed: TransportAddress) => void

export class TcpRelay {
  /** 'turn:host:port' / 'turns:host:port', without credentials. */
  readonly description: string
  readonly gatherMs: number
  /** The last allocation failure (cleared by a success). */
  lastError: DhtnetError | undefined
  private allocation: TurnAllocation | undefined
  private pending: Promise<TurnAllocation | undefined> | undefined
  private retryAt = 0
  private retryDelayMs = FIRST_RETRY_MS
  private closed = false
  private readonly closing = new AbortController()
  /** Permission holds per peer IP (sessions and relayed links). */
  private readonly holds = new Map<string, number>()

  constructor(
    private readonly options: IceTcpRelayOptions,
    private readonly onConnection: RelayedConnectionHandler,
    private readonly log: Logger,
  ) {
    // fails here (BAD_ICE_SERVER, UNSUPPORTED_TRANSPORT) on an address that can never work
    const parsed = parseTurnServer(options.server, options.transport)
    this.description = `${parsed.transport === 'tls' ? 'turns' : 'turn'}:${formatHostPort(parsed.host, parsed.port)}`
    this.gatherMs = options.gatherMs ?? DEFAULT_RELAY_GATHER_MS
  }

  /** The live allocation, if any (no waiting). */
  get current(): TurnAllocation | undefined {
    return this.allocation && !this.allocation.closed ? this.allocation : undefined
  }

  /** Start allocating in the background (nothing when one exists, is being made, or a failure is waited out). */
  prepare(): void {
    void this.ready(0)
  }

  /**
   * The live allocation; starts one when there is none (unless the last failure is too recent) and waits for it at
   * most `waitMs` (it goes on in the background for later sessions). Never throws.
   */
  async ready(waitMs: number, signal?: AbortSignal): Promise<TurnAllocation | undefined> {
    if (this.closed) return undefined
    const live = this.current
    if (live) return live
    if (!this.pending) {
      if (Date.now() < this.retryAt) return undefined
      this.pending = this.allocate()
    }
    if (waitMs <= 0) return undefined
    return new Promise<TurnAllocation | undefined>((resolve) => {
      const done = (a: TurnAllocation | undefined): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        resolve(a)
      }
      const onAbort = (): void => done(undefined)
      const timer = setTimeout(() => done(undefined), waitMs)
      timer.unref()
      signal?.addEventListener('abort', onAbort, { once: true })
      void this.pending!.then(done, () => done(undefined))
    })
  }

  private async allocate(): Promise<TurnAllocation | undefined> {
    const { gatherMs: _gatherMs, ...turn } = this.options
    const started = performance.now()
    try {
      const allocation = await TurnTcpClient.allocate({ ...turn, signal: this.closing.signal, logger: this.log })
      if (this.closed) {
        void allocation.close()
        return undefined
      }
      this.allocation = allocation
      this.lastError = undefined
      this.retryDelayMs = FIRST_RETRY_MS
      const relayed = allocation.relayedAddress
      allocation.on('connection', (stream, peer) => this.onConnection(stream, peer, relayed))
      allocation.once('close', (err) => {
        if (this.allocation === allocation) this.allocation = undefined
        this.holds.clear()
        if (err) this.lastError = err
      })
      this.log(
        'info',
        `ice-tcp: TCP relay on ${this.description}: relayed address ${formatHostPort(relayed.address, relayed.port)} (${Math.round(performance.now() - started)} ms)`,
      )
      return allocation
    } catch (err) {
      if (this.closed) return undefined
      const error = isDhtnetError(err) ? err : new DhtnetError('TURN_UNREACHABLE', `TURN server ${this.description}: ${errorMessage(err)}`, { cause: err })
      this.lastError = error
      this.retryAt = Date.now() + this.retryDelayMs
      this.log('warn', `ice-tcp: no TCP relay on ${this.description}: ${error.message} (next attempt in ${Math.round(this.retryDelayMs / 1000)} s)`)
      this.retryDelayMs = Math.min(this.retryDelayMs * 2, MAX_RETRY_MS)
      return undefined
    } finally {
      this.pending = undefined
    }
  }

  /**
   * Let the peer's addresses (its candidates' IPs, most useful first) reach `allocation`'s relayed address until the
   * returned release() is called. Addresses of the other family are skipped, at most MAX_PERMITTED_PER_SESSION are
   * asked for; a batch the server refuses (coturn answers 403 for the whole request when one address is forbidden)
   * is asked for address by address. Resolves with release() and the addresses permitted; never throws.
   */
  async permit(allocation: TurnAllocation, addresses: readonly string[], signal?: AbortSignal): Promise<{ release: () => void; permitted: string[] }> {
    const family = allocation.relayedAddress.family
    const ips: string[] = []
    for (const a of addresses) {
      if (ipFamily(a) !== family) continue
      const ip = normalizeIp(a)
      if (!ips.includes(ip)) ips.push(ip)
      if (ips.length >= MAX_PERMITTED_PER_SESSION) break
    }
    for (const ip of ips) this.holds.set(ip, (this.holds.get(ip) ?? 0) + 1)
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      const unused: string[] = []
      for (const ip of ips) {
        const n = (this.holds.get(ip) ?? 1) - 1
        if (n > 0) this.holds.set(ip, n)
        else {
          this.holds.delete(ip)
          unused.push(ip)
        }
      }
      if (unused.length > 0 && !allocation.closed) allocation.forget(unused)
    }
    if (ips.length === 0) return { release, permitted: [] }
    let permitted: string[] = []
    try {
      permitted = await allocation.permit(ips, { signal })
    } catch (err) {
      if (isDhtnetError(err, 'TURN_REFUSED') && ips.length > 1 && !signal?.aborted) {
        const each = await Promise.allSettled(ips.map((ip) => allocation.permit([ip], { signal })))
        permitted = each.flatMap((r) => (r.status === 'fulfilled' ? r.value : []))
        const refused = ips.filter((ip) => !permitted.includes(ip))
        this.log('debug', `ice-tcp: TURN permission refused for ${refused.join(', ')}`)
      } else {
        this.log('debug', `ice-tcp: TURN permission for ${ips.join(', ')} failed: ${(err as Error).message}`)
      }
    }
    return { release, permitted }
  }

  /** Deallocate (never throws). */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.closing.abort()
    const allocation = this.allocation
    this.allocation = undefined
    this.holds.clear()
    await allocation?.close()
  }
}
