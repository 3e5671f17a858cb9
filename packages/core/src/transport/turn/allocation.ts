/**
 * A TCP relay allocation (RFC 8656 + RFC 6062) held on one control connection: refreshed before it expires,
 * permissions renewed for the peers we let in, inbound relayed connections (CONNECTION-ATTEMPT → data connection +
 * CONNECTION-BIND → 'connection'), outbound ones (CONNECT → the same bind → connect() resolves), and close() =
 * Refresh with LIFETIME 0, then every socket and timer gone.
 *
 * Hostile input is bounded: attempts in binding (in all and per peer IP), live relayed connections, connect() calls
 * in flight, permitted addresses; an attempt over a bound, from an address we did not permit, malformed, or with
 * nobody listening is dropped without opening anything (the server gives up on it after 30 s).
 */
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import { DhtnetError, isDhtnetError, throwIfAborted } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { StunAttr, StunMethod } from '../stun/constants.js'
import { StunMessageBuilder } from '../stun/builder.js'
import type { StunMessage } from '../stun/message.js'
import { ipFamily, normalizeIp, formatHostPort, type TransportAddress } from '../stun/ip.js'
import type { LongTermCredentials } from './auth.js'
import { describeEndpoint, type ServerEndpoint, type TurnConnection } from './connection.js'
import { bindDataConnection } from './data-connection.js'
import { classifyTurnError, errorCodeOf, readConnectionId, reasonOf } from './attributes.js'
import type { TurnLimits, TurnTimeouts } from './options.js'

/** XOR-PEER-ADDRESS attributes per CreatePermission request. */
const PERMISSIONS_PER_REQUEST = 16

export interface TurnAllocationStats {
  /** CONNECTION-ATTEMPT indications received, bound into 'connection' events, and dropped (bounds, no listener,
   *  unknown peer, malformed, failed bind). */
  attempts: number
  accepted: number
  dropped: number
  /** Refreshes that succeeded. */
  refreshes: number
  /** Outbound relayed connections made by connect(). */
  connected: number
}

export interface TurnAllocationEvents {
  /** A peer connected to our relayed address: `stream` is a plain socket to the TURN server carrying the peer's
   *  bytes (its remoteAddress is the server's; `peer` is who connected). */
  connection: [stream: Socket, peer: TransportAddress]
  /** The allocation ended: `error` when it was not close() (the server went away, a refresh failed). */
  close: [error?: DhtnetError]
}

export interface AllocationParts {
  readonly control: TurnConnection
  readonly credentials: LongTermCredentials
  readonly server: ServerEndpoint
  readonly relayedAddress: TransportAddress
  readonly mappedAddress: TransportAddress | undefined
  readonly lifetimeS: number
  readonly requestedLifetimeS: number
  readonly timeouts: TurnTimeouts
  readonly limits: TurnLimits
  readonly logger: Logger
}

export class TurnAllocation extends EventEmitter<TurnAllocationEvents> {
  /** The address peers connect to (our `typ relay` candidate). */
  readonly relayedAddress: TransportAddress
  /** Our address as the server saw it (the relay candidate's related address). */
  readonly mappedAddress: TransportAddress | undefined
  /** The server (no credentials): 'turn:host (ip:port)' / 'turns:…'. */
  readonly serverDescription: string
  readonly stats: TurnAllocationStats = { attempts: 0, accepted: 0, dropped: 0, refreshes: 0, connected: 0 }
  /** Lifetime the server granted last (seconds). */
  lifetimeS: number
  /** When the allocation expires unless refreshed (ms since the epoch). */
  expiresAt: number

  private readonly control: TurnConnection
  private readonly credentials: LongTermCredentials
  private readonly server: ServerEndpoint
  private readonly timeouts: TurnTimeouts
  private readonly limits: TurnLimits
  private readonly log: Logger
  private readonly requestedLifetimeS: number
  private readonly closing = new AbortController()
  /** Normalised peer IPs we hold a permission for (insertion order = age). */
  private readonly permitted = new Set<string>()
  private readonly bindingPerPeer = new Map<string, number>()
  private binding = 0
  private connecting = 0
  private readonly live = new Set<Socket>()
  private refreshTimer: NodeJS.Timeout | undefined
  private permissionTimer: NodeJS.Timeout | undefined
  private closePromise: Promise<void> | undefined
  private ended = false

  constructor(parts: AllocationParts) {
    super()
    this.control = parts.control
    this.credentials = parts.credentials
    this.server = parts.server
    this.relayedAddress = parts.relayedAddress
    this.mappedAddress = parts.mappedAddress
    this.timeouts = parts.timeouts
    this.limits = parts.limits
    this.log = parts.logger
    this.requestedLifetimeS = parts.requestedLifetimeS
    this.lifetimeS = parts.lifetimeS
    this.expiresAt = Date.now() + parts.lifetimeS * 1000
    this.serverDescription = describeEndpoint(parts.server)
    this.control.onIndication = (msg) => this.onIndication(msg)
    this.control.onClose = (err) => this.finish(err)
    this.scheduleRefresh()
  }

  get closed(): boolean {
    return this.ended || this.closePromise !== undefined
  }

  /** Relayed connections alive right now (inbound and outbound). */
  get connections(): number {
    return this.live.size
  }

  /** Peer IP addresses holding a permission. */
  get permissions(): string[] {
    return [...this.permitted]
  }

  /**
   * Let these peers reach our relayed address (and be reached through it): CreatePermission for each IP (ports do
   * not matter), renewed until forget()/close(). Addresses of the other family than the relayed address cannot be
   * relayed and are skipped. Resolves with the addresses now permitted. Rejects TURN_REFUSED (the server refused,
   * or more than maxPermissions addresses), TURN_UNREACHABLE, ABORTED, TRANSPORT_CLOSED.
   */
  async permit(peers: ReadonlyArray<string | { readonly address: string }>, options: { signal?: AbortSignal | undefined } = {}): Promise<string[]> {
    this.assertOpen()
    throwIfAborted(options.signal)
    const wanted: string[] = []
    for (const p of peers) {
      const text = typeof p === 'string' ? p : p.address
      const family = ipFamily(text)
      if (family === undefined) throw new DhtnetError('BAD_ADDRESS', `not an IP address: ${JSON.stringify(String(text).slice(0, 64))}`)
      if (family !== this.relayedAddress.family) {
        this.log('debug', `turn: no permission for ${text}: the relayed address is IPv${this.relayedAddress.family}`)
        continue
      }
      const ip = normalizeIp(text)
      if (!wanted.includes(ip)) wanted.push(ip)
    }
    const fresh = wanted.filter((ip) => !this.permitted.has(ip))
    if (this.permitted.size + fresh.length > this.limits.maxPermissions) {
      throw new DhtnetError('TURN_REFUSED', `more than ${this.limits.maxPermissions} peer addresses would hold a TURN permission`, {
        hint: 'forget() the peers of finished sessions',
      })
    }
    if (wanted.length === 0) return []
    await this.createPermissions(wanted, options.signal)
    if (this.closed) throw this.closedError()
    for (const ip of wanted) this.permitted.add(ip)
    this.schedulePermissionRefresh()
    return wanted
  }

  /** Stop renewing the permission of these peers (it lapses at the server within 5 minutes). */
  forget(peers: ReadonlyArray<string | { readonly address: string }>): void {
    for (const p of peers) this.permitted.delete(normalizeIp(typeof p === 'string' ? p : p.address))
    if (this.permitted.size === 0) {
      clearTimeout(this.permissionTimer)
      this.permissionTimer = undefined
    }
  }

  /**
   * A TCP connection from the relay to `peer` (RFC 6062 CONNECT, then a data connection): resolves with a socket
   * carrying the peer's bytes once the peer accepted. The peer's IP gets a permission first. Rejects
   * TURN_UNREACHABLE (the relay could not reach the peer: 447, or the server did not answer in time), TURN_REFUSED
   * (403, 446, quota), TURN_AUTH_FAILED, ABORTED, TRANSPORT_CLOSED.
   */
  async connect(peer: { readonly address: string; readonly port: number }, options: { signal?: AbortSignal | undefined; timeoutMs?: number | undefined } = {}): Promise<Socket> {
    this.assertOpen()
    throwIfAborted(options.signal)
    if (!Number.isInteger(peer.port) || peer.port < 1 || peer.port > 65535) throw new DhtnetError('BAD_ADDRESS', `bad peer port ${peer.port}`)
    const target = { address: normalizeIp(peer.address), port: peer.port }
    const where = formatHostPort(target.address, target.port)
    if (ipFamily(target.address) !== this.relayedAddress.family) {
      throw new DhtnetError('TURN_REFUSED', `cannot relay to ${where}: the relayed address is IPv${this.relayedAddress.family}`)
    }
    if (this.connecting >= this.limits.maxPendingConnects) {
      throw new DhtnetError('TURN_REFUSED', `more than ${this.limits.maxPendingConnects} relayed connections being opened at once`)
    }
    if (this.live.size >= this.limits.maxConnections) throw new DhtnetError('TURN_REFUSED', `${this.limits.maxConnections} relayed connections are open already`)
    const timeoutMs = options.timeoutMs ?? this.timeouts.peerConnectMs
    const deadline = AbortSignal.timeout(timeoutMs)
    const signal = AbortSignal.any([this.closing.signal, deadline, ...(options.signal ? [options.signal] : [])])
    this.connecting++
    try {
      if (!this.permitted.has(target.address)) await this.permit([target.address], { signal })
      const response = await this.credentials.request(
        this.control,
        () => StunMessageBuilder.create(StunMethod.CONNECT, 'request').addXorAddress(StunAttr.XOR_PEER_ADDRESS, target),
        { timeoutMs, signal, what: 'CONNECT' },
      )
      if (response.class !== 'success') {
        const code = errorCodeOf(response)
        const verdict = classifyTurnError(code)
        if (verdict === 'peer-unreachable') {
          throw new DhtnetError('TURN_UNREACHABLE', `the TURN server could not open a TCP connection to ${where}: ${reasonOf(response)}`, {
            hint: 'the peer does not accept connections on that address from the relay',
          })
        }
        throw new DhtnetError('TURN_REFUSED', `the TURN server refused to connect to ${where}: ${reasonOf(response)}`)
      }
      const connectionId = readConnectionId(response)
      if (connectionId === undefined) throw new DhtnetError('STUN_ERROR', 'the CONNECT success response carries no CONNECTION-ID')
      const socket = await bindDataConnection(this.server, this.credentials, connectionId, { timeoutMs, signal, limits: this.connectionLimits(), logger: this.log })
      if (this.closed) {
        socket.destroy()
        throw this.closedError()
      }
      this.track(socket)
      this.stats.connected++
      this.log('debug', `turn: relayed connection to ${where} (connection ${connectionId})`)
      return socket
    } catch (err) {
      if (options.signal?.aborted) throw new DhtnetError('ABORTED', `relayed connection to ${where} aborted`, { cause: err })
      if (this.closed) throw this.closedError()
      if (deadline.aborted)
        throw new DhtnetError('TURN_UNREACHABLE', `no relayed connection to ${where} within ${timeoutMs} ms`, {
          cause: err,
          hint: 'the peer may not accept connections from the relay',
        })
      throw err
    } finally {
      this.connecting--
    }
  }

  /**
   * Deallocate (Refresh with LIFETIME 0, bounded by closeMs), close the control connection and every relayed
   * connection, stop every timer. Never throws; idempotent (later calls return the same promise).
   */
  close(): Promise<void> {
    this.closePromise ??= this.deallocate()
    return this.closePromise
  }

  // ---------------------------------------------------------------------------------------------------------

  private async deallocate(): Promise<void> {
    if (this.ended) return
    this.closing.abort()
    this.stopTimers()
    if (!this.control.closed) {
      try {
        const response = await this.credentials.request(this.control, () => StunMessageBuilder.create(StunMethod.REFRESH, 'request').addUint32(StunAttr.LIFETIME, 0), {
          timeoutMs: this.timeouts.closeMs,
          what: 'Refresh (deallocate)',
        })
        if (response.class === 'success') this.log('debug', `turn: deallocated ${formatHostPort(this.relayedAddress.address, this.relayedAddress.port)}`)
        else this.log('debug', `turn: deallocation answered ${reasonOf(response)}`)
      } catch (err) {
        this.log('debug', `turn: deallocation: ${(err as Error).message}`)
      }
    }
    this.finish(undefined)
  }

  /** The end, whatever caused it: everything released, 'close' emitted once. */
  private finish(error: DhtnetError | undefined): void {
    if (this.ended) return
    this.ended = true
    this.closing.abort()
    this.stopTimers()
    this.control.onClose = undefined
    this.control.close()
    for (const s of this.live) s.destroy()
    this.live.clear()
    this.permitted.clear()
    const expected = this.closePromise !== undefined
    if (!expected && error) this.log('warn', `turn: the TCP relay allocation on ${this.serverDescription} ended: ${error.message}`)
    this.emit('close', expected ? undefined : error)
  }

  private stopTimers(): void {
    clearTimeout(this.refreshTimer)
    clearTimeout(this.permissionTimer)
    this.refreshTimer = undefined
    this.permissionTimer = undefined
  }

  private assertOpen(): void {
    if (this.closed) throw this.closedError()
  }

  private closedError(): DhtnetError {
    return new DhtnetError('TRANSPORT_CLOSED', `the TURN allocation on ${this.serverDescription} is closed`)
  }

  private connectionLimits(): { maxMessageBytes: number; maxPendingTransactions: number } {
    return { maxMessageBytes: this.limits.maxMessageBytes, maxPendingTransactions: 2 }
  }

  private track(socket: Socket): void {
    this.live.add(socket)
    socket.once('close', () => this.live.delete(socket))
  }

  private async createPermissions(ips: readonly string[], signal: AbortSignal | undefined): Promise<void> {
    for (let i = 0; i < ips.length; i += PERMISSIONS_PER_REQUEST) {
      const batch = ips.slice(i, i + PERMISSIONS_PER_REQUEST)
      const response = await this.credentials.request(
        this.control,
        () => {
          const b = StunMessageBuilder.create(StunMethod.CREATE_PERMISSION, 'request')
          for (const ip of batch) b.addXorAddress(StunAttr.XOR_PEER_ADDRESS, { address: ip, port: 0 })
          return b
        },
        { timeoutMs: this.timeouts.transactionMs, signal, what: 'CreatePermission' },
      )
      if (response.class !== 'success') {
        throw new DhtnetError('TURN_REFUSED', `the TURN server refused a permission for ${batch.join(', ')}: ${reasonOf(response)}`)
      }
    }
  }

  private schedulePermissionRefresh(): void {
    if (this.permissionTimer || this.closed) return
    this.permissionTimer = setTimeout(() => {
      this.permissionTimer = undefined
      if (this.closed || this.permitted.size === 0) return
      this.createPermissions([...this.permitted], this.closing.signal).then(
        () => this.schedulePermissionRefresh(),
        (err: unknown) => {
          if (this.closed) return
          this.log('warn', `turn: renewing permissions failed: ${(err as Error).message}`)
          this.schedulePermissionRefresh()
        },
      )
    }, this.timeouts.permissionRefreshMs)
    this.permissionTimer.unref()
  }

  /** Refresh `margin` before expiry (margin = min(refreshMarginS, lifetime / 2)); a failed refresh is retried
   *  while there is time, then the allocation ends with the error. */
  private scheduleRefresh(retryInMs?: number): void {
    if (this.closed) return
    const lifetimeMs = this.lifetimeS * 1000
    const marginMs = Math.min(this.timeouts.refreshMarginS * 1000, lifetimeMs / 2)
    const delay = retryInMs ?? Math.max(1000, this.expiresAt - marginMs - Date.now())
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined
      void this.refresh()
    }, delay)
    // the allocation keeps its owner's process alive only through its sockets, not through this timer
    this.refreshTimer.unref()
  }

  private async refresh(): Promise<void> {
    if (this.closed) return
    try {
      const response = await this.credentials.request(
        this.control,
        () => StunMessageBuilder.create(StunMethod.REFRESH, 'request').addUint32(StunAttr.LIFETIME, this.requestedLifetimeS),
        { timeoutMs: this.timeouts.transactionMs, signal: this.closing.signal, what: 'Refresh' },
      )
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- close() may run during the await (TypeScript keeps the narrowing from the check before it)
      if (this.closed) return
      if (response.class !== 'success') {
        const code = errorCodeOf(response)
        const gone = classifyTurnError(code) === 'allocation-gone'
        throw new DhtnetError(
          'TURN_REFUSED',
          gone ? `the TURN server no longer holds the allocation (${reasonOf(response)})` : `the TURN server refused to refresh the allocation: ${reasonOf(response)}`,
        )
      }
      let granted = this.lifetimeS
      try {
        granted = response.lifetime ?? this.lifetimeS
      } catch {
        granted = this.lifetimeS
      }
      this.lifetimeS = Math.max(1, granted)
      this.expiresAt = Date.now() + this.lifetimeS * 1000
      this.stats.refreshes++
      this.log('debug', `turn: allocation refreshed for ${this.lifetimeS} s`)
      this.scheduleRefresh()
    } catch (err) {
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- close() may run during the await (TypeScript keeps the narrowing from the check before it)
      if (this.closed) return
      const error = isDhtnetError(err) ? err : new DhtnetError('INTERNAL_ERROR', String(err))
      const retryable = error.code === 'TURN_UNREACHABLE' || error.code === 'TRANSPORT_ERROR'
      const left = this.expiresAt - Date.now()
      if (retryable && !this.control.closed && left > 2 * this.timeouts.transactionMs) {
        this.log('debug', `turn: refresh failed (${error.message}); trying again`)
        this.scheduleRefresh(Math.min(5000, left / 4))
        return
      }
      this.finish(error)
    }
  }

  private onIndication(msg: StunMessage): void {
    if (msg.method !== StunMethod.CONNECTION_ATTEMPT) return
    this.stats.attempts++
    let peer: TransportAddress | undefined
    try {
      peer = msg.xorAddress(StunAttr.XOR_PEER_ADDRESS)
    } catch {
      peer = undefined
    }
    const connectionId = readConnectionId(msg)
    const ip = peer ? normalizeIp(peer.address) : ''
    const drop = (why: string): void => {
      this.stats.dropped++
      this.log('debug', `turn: ignored a CONNECTION-ATTEMPT${peer ? ` from ${formatHostPort(ip, peer.port)}` : ''}: ${why}`)
    }
    if (this.closed) return drop('closing')
    if (!peer || connectionId === undefined) return drop('no XOR-PEER-ADDRESS or CONNECTION-ID')
    if (this.listenerCount('connection') === 0) return drop('nobody listens for relayed connections')
    if (!this.permitted.has(ip)) return drop('no permission was given to that address')
    const fromPeer = this.bindingPerPeer.get(ip) ?? 0
    if (this.binding >= this.limits.maxPendingConnectionAttempts || fromPeer >= this.limits.maxPendingAttemptsPerPeer) return drop('too many attempts being bound')
    if (this.live.size + this.binding >= this.limits.maxConnections) return drop(`${this.limits.maxConnections} relayed connections are open`)
    this.binding++
    this.bindingPerPeer.set(ip, fromPeer + 1)
    const from = { family: peer.family, address: ip, port: peer.port } as const
    bindDataConnection(this.server, this.credentials, connectionId, {
      timeoutMs: this.timeouts.bindMs,
      signal: this.closing.signal,
      limits: this.connectionLimits(),
      logger: this.log,
    })
      .then(
        (socket) => {
          if (this.closed) {
            socket.destroy()
            return
          }
          this.track(socket)
          this.stats.accepted++
          this.log('debug', `turn: relayed connection from ${formatHostPort(ip, from.port)} (connection ${connectionId})`)
          try {
            this.emit('connection', socket, from)
          } catch (err) {
            this.log('warn', `turn: a 'connection' listener threw: ${(err as Error).message}`)
            socket.destroy()
          }
        },
        (err: unknown) => drop(`binding failed: ${(err as Error).message}`),
      )
      .finally(() => {
        this.binding--
        const n = (this.bindingPerPeer.get(ip) ?? 1) - 1
        if (n > 0) this.bindingPerPeer.set(ip, n)
        else this.bindingPerPeer.delete(ip)
      })
  }
}
