/**
 * Our RFC 6544 ICE-TCP agent (one per session), speaking to pjnath as the captures show:
 *  - outbound: each of our active host candidates connects to each usable passive candidate of the peer and sends a
 *    check (PRIORITY 0x6EFFFEFF);
 *  - inbound (through the shared listener, already authenticated): we answer the peer's check, then send our own
 *    check back on the same socket (PRIORITY 0x6EFFFFFF), as pjnath's accepting side does;
 *  - every valid request gets a success response with XOR-MAPPED-ADDRESS; role conflicts are resolved with the
 *    tie-breakers (487);
 *  - controlling side: regular nomination. Once a connection has our successful check and a check of the peer's
 *    answered, it waits (at most nominationDelayMs, only while other outbound pairs are still pending) for a better
 *    one, then sends USE-CANDIDATE on the highest-priority pair; its success response ends ICE;
 *  - controlled side: an authenticated USE-CANDIDATE request ends ICE once we answered it; the other connections
 *    are closed.
 *
 * The STUN phase ends at a precise byte on the nominated connection (the switch point): for the controlling side
 * right after the success response to its USE-CANDIDATE request, for the controlled side right after its own
 * success response to it. Reading stops there (CheckConnection.freeze) and the bytes received after it are handed
 * to TLS untouched; see README.md ("switch point").
 */
import { connect as tcpConnect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { DhtnetError } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { randomTransactionId } from '../stun/builder.js'
import { StunErrorCode } from '../stun/constants.js'
import type { StunMessage } from '../stun/message.js'
import { formatHostPort } from '../stun/ip.js'
import { candidatePriority, prflxPriority, type CandidateType, type IceCandidate, type IceDescription } from './candidates.js'
import { CheckConnection, type CheckConnectionHandler, type TransactionResult } from './check-connection.js'
import { buildCheckError, buildCheckRequest, buildCheckSuccess, validateCheckRequest, validateCheckResponse, type IceRole, type ValidCheck } from './check-messages.js'
import type { FrameDecoder } from './framing.js'
import type { HostAddress } from './gather.js'
import type { InboundOrigin } from './listener.js'
import { outboundPairs, pairPriority, skipReason, type OutboundPair } from './pairs.js'

export interface AgentTimeouts {
  /** TCP connect of one outbound pair (default 5000). */
  readonly connectMs: number
  /** One check without an answer (default 5000). */
  readonly checkMs: number
  /** Controlling: how long a valid pair waits for a better one still pending (default 50). */
  readonly nominationDelayMs: number
  /** When every outbound pair failed: how long to still wait for the peer's connections (default 5000). */
  readonly inboundWaitMs: number
}

export interface AgentLimits {
  /** Outbound TCP connections (pairs tried), default 16. */
  readonly maxOutbound: number
  /** Authenticated inbound connections kept by one session, default 16. */
  readonly maxInbound: number
}

export interface AgentOptions {
  readonly role: IceRole
  readonly ufrag: string
  readonly pwd: string
  readonly candidates: readonly IceCandidate[]
  readonly hosts: readonly HostAddress[]
  readonly includeLoopback: boolean
  readonly software?: Uint8Array | undefined
  readonly tieBreaker?: bigint
  readonly timeouts: AgentTimeouts
  readonly limits: AgentLimits
  readonly logger: Logger
}

export const DEFAULT_AGENT_TIMEOUTS: AgentTimeouts = { connectMs: 5000, checkMs: 5000, nominationDelayMs: 50, inboundWaitMs: 5000 }
export const DEFAULT_AGENT_LIMITS: AgentLimits = { maxOutbound: 16, maxInbound: 16 }

/** Answers the STUN requests that still arrive on the nominated connection (framed mode), or undefined to drop. */
export type StunAnswerer = (request: StunMessage, from: { address: string; port: number }) => Buffer | undefined

/** The result of ICE: the nominated connection, at its switch point. */
export interface NominatedPath {
  readonly socket: Socket
  /** Bytes received after the switch point (the peer's first TLS bytes, framed or not). */
  readonly remaining: Buffer
  readonly direction: 'outbound' | 'inbound'
  readonly localAddress: string
  readonly localPort: number
  readonly remoteAddress: string
  readonly remotePort: number
  /** 'host/host', 'host/srflx', 'relay/srflx', 'host/relay'... */
  readonly candidatePair: string
  /** A side of the pair is a TURN relay (ours: the connection arrived through our allocation; the peer's: we
   *  connected to its relayed candidate). */
  readonly relayed: boolean
  readonly role: IceRole
  readonly answerer: StunAnswerer
}

interface PathState {
  readonly conn: CheckConnection
  readonly localPriority: number
  /** Outbound: the peer's candidate we connected to. */
  readonly target?: IceCandidate
  remoteUfrag?: string
  /** PRIORITY of the peer's check (its prflx priority). */
  remotePriority?: number
  ourCheck: 'idle' | 'in-progress' | 'succeeded' | 'failed'
  answered: number
  nominated: boolean
}

interface Attempt {
  readonly label: string
  readonly pair: OutboundPair
  state: 'connecting' | 'checking' | 'succeeded' | 'failed'
  reason?: string
  /** Our check succeeded on it once. */
  checked?: boolean
  /** Connections to a peer's relayed candidate tried again (see RELAY_RETRY_DELAYS_MS). */
  retries: number
  retryTimer?: NodeJS.Timeout
}

/**
 * A peer's relayed candidate refuses us until the peer has given our address a TURN permission, which it can only do
 * once our description reached it (the requester learns it from the answer, after the responder started its checks):
 * a connection to a relay that ends before any check succeeded is tried again after these delays.
 */
export const RELAY_RETRY_DELAYS_MS: readonly number[] = [250, 500, 1000, 2000]

let nextConnectionId = 1

export class IceTcpAgent implements CheckConnectionHandler {
  role: IceRole
  readonly tieBreaker: bigint
  private remote: IceDescription | undefined
  /** Both peers ours: TLS follows the switch point unframed, so no STUN may be written after it (see start()). */
  private native = false
  private readonly paths = new Map<CheckConnection, PathState>()
  private readonly attempts: Attempt[] = []
  private readonly pendingSockets = new Set<Socket>()
  private readonly retryTimers = new Set<NodeJS.Timeout>()
  private nominating: CheckConnection | undefined
  private firstValidAt: number | undefined
  private nominationTimer: NodeJS.Timeout | undefined
  private failTimer: NodeJS.Timeout | undefined
  private startedAt = 0
  private inboundSeen = 0
  private done = false
  private resolveResult!: (p: NominatedPath) => void
  private rejectResult!: (err: Error) => void
  readonly result: Promise<NominatedPath>

  constructor(private readonly options: AgentOptions) {
    this.role = options.role
    this.tieBreaker = options.tieBreaker ?? randomBytes(8).readBigUInt64BE(0)
    this.result = new Promise<NominatedPath>((resolve, reject) => {
      this.resolveResult = resolve
      this.rejectResult = reject
    })
    this.result.catch(() => {})
  }

  get started(): boolean {
    return this.remote !== undefined
  }

  get finished(): boolean {
    return this.done
  }

  /** Live connections (for tests and diagnostics). */
  get connectionCount(): number {
    return this.paths.size
  }

  private log(level: 'debug' | 'info' | 'warn', message: string): void {
    this.options.logger(level, `ice-tcp[${this.options.ufrag}]: ${message}`)
  }

  // ----------------------------------------------------------------------------------------------------- inbound

  /** The listener's handler: an inbound connection whose first request names our ufrag (`origin`: its ICE addresses
   *  when they are not the socket's, i.e. relayed by our TURN allocation). */
  acceptInbound(socket: Socket, request: StunMessage, decoder: FrameDecoder, origin?: InboundOrigin): boolean {
    if (this.done) return false
    let inbound = 0
    for (const p of this.paths.values()) if (p.conn.direction === 'inbound') inbound++
    if (inbound >= this.options.limits.maxInbound) {
      this.log('debug', 'inbound connection refused: too many')
      return false
    }
    const valid = validateCheckRequest(request, this.options.ufrag, this.options.pwd, this.remote?.ufrag)
    if (typeof valid === 'string') {
      this.log('debug', `inbound connection refused: ${valid}`)
      return false
    }
    const conn = new CheckConnection(nextConnectionId++, socket, 'inbound', this, decoder, origin?.relayed ? origin : undefined)
    const local = this.localCandidateOf(conn)
    this.paths.set(conn, { conn, localPriority: local?.priority ?? candidatePriority('host', 65535), ourCheck: 'idle', answered: 0, nominated: false })
    this.inboundSeen++
    this.log('debug', `inbound connection ${conn.label}${origin?.relayed ? ' (through our TURN relay)' : ''}`)
    this.handleRequest(conn, request, valid)
    if (!conn.isClosed) conn.start()
    return true
  }

  onRequest(conn: CheckConnection, msg: StunMessage): void {
    const path = this.paths.get(conn)
    if (!path || this.done) return
    const valid = validateCheckRequest(msg, this.options.ufrag, this.options.pwd, this.remote?.ufrag ?? path.remoteUfrag)
    if (typeof valid === 'string') return conn.close(`invalid check: ${valid}`)
    this.handleRequest(conn, msg, valid)
  }

  onClose(conn: CheckConnection, reason: string): void {
    const path = this.paths.get(conn)
    if (!path) return
    this.paths.delete(conn)
    this.log('debug', `connection ${conn.label} closed: ${reason}`)
    if (path.target) {
      const attempt = this.attempts.find((a) => a.label === this.attemptLabel(conn.localAddress, path.target!))
      if (attempt && attempt.state !== 'failed') this.attemptFailed(attempt, reason)
    }
    if (this.nominating === conn) this.nominating = undefined
    this.evaluate()
    this.checkFailure()
  }

  private handleRequest(conn: CheckConnection, msg: StunMessage, v: ValidCheck): void {
    const path = this.paths.get(conn)!
    // native mode: after our USE-CANDIDATE request only TLS may follow on this connection; a check the peer sent
    // before it saw the nomination stays unanswered (the peer abandons it once it answers the nomination)
    if (this.native && this.nominating === conn) return
    if (path.remoteUfrag !== undefined && path.remoteUfrag !== v.remoteUfrag) return conn.close('the peer changed its ufrag')
    path.remoteUfrag = v.remoteUfrag
    // role conflicts, RFC 8445 §7.3.1.1
    if (v.peerRole === this.role) {
      const weWin = this.tieBreaker >= v.peerTieBreaker
      const keep = this.role === 'controlling' ? weWin : !weWin
      if (keep) {
        conn.send(buildCheckError(msg, StunErrorCode.ROLE_CONFLICT, 'Role Conflict', this.options.pwd, this.options.software))
        return
      }
      this.switchRole(this.role === 'controlling' ? 'controlled' : 'controlling', 'a peer request')
    }
    conn.send(buildCheckSuccess(msg, { address: conn.remoteAddress, port: conn.remotePort }, this.options.pwd, this.options.software))
    path.answered++
    path.remotePriority = v.priority
    if (v.useCandidate && this.role === 'controlled') {
      // switch point of the controlled side: nothing but TLS follows our response, on both directions
      path.nominated = true
      conn.freeze()
      this.log('debug', `nominated by the peer: ${conn.label}`)
      if (this.started) this.finish(conn)
      return
    }
    if (conn.direction === 'inbound' && path.ourCheck === 'idle' && this.started) this.sendCheck(path, false)
    this.evaluate()
  }

  // ----------------------------------------------------------------------------------------------------- start

  /**
   * Start the checks with the peer's description; resolves with the nominated connection (see `result`).
   * `native`: the peer is one of ours and TLS will run unframed after the switch point (no STUN written after it).
   */
  start(remote: IceDescription, options: { native?: boolean } = {}): Promise<NominatedPath> {
    if (this.remote) return this.result
    if (this.done) return this.result
    this.remote = remote
    this.native = options.native ?? false
    this.startedAt = performance.now()
    // connections that came before we knew the peer: keep those of this peer only
    for (const path of [...this.paths.values()]) {
      if (path.remoteUfrag !== remote.ufrag) path.conn.close('early check from another peer')
    }
    const nominated = [...this.paths.values()].find((p) => p.nominated)
    if (nominated) {
      this.finish(nominated.conn)
      return this.result
    }
    for (const path of this.paths.values()) if (path.ourCheck === 'idle' && path.answered > 0) this.sendCheck(path, false)

    const activeByAddress = new Map<string, number>()
    for (const c of this.options.candidates) if (c.type === 'host' && c.tcpType === 'active') activeByAddress.set(c.address, c.priority)
    const pairs = outboundPairs(
      remote.candidates,
      this.options.hosts,
      (h) => activeByAddress.get(h.address) ?? candidatePriority('host', 65534),
      this.role,
      this.options.includeLoopback,
      this.options.limits.maxOutbound,
    )
    const skipped = remote.candidates.filter((c) => c.tcpType === 'passive' && skipReason(c, this.options.includeLoopback))
    this.log('debug', `checks start as ${this.role}: ${pairs.length} pair(s), ${skipped.length} remote candidate(s) skipped, ${this.paths.size} early connection(s)`)
    for (const pair of pairs) this.open(pair)
    this.checkFailure()
    return this.result
  }

  private attemptLabel(localAddress: string, remote: IceCandidate): string {
    return `${localAddress} -> ${formatHostPort(remote.address, remote.port)}`
  }

  private open(pair: OutboundPair): void {
    const attempt: Attempt = { label: this.attemptLabel(pair.local.address, pair.remote), pair, state: 'connecting', retries: 0 }
    this.attempts.push(attempt)
    this.connectAttempt(attempt)
  }

  /** A pair failed (no TCP connection, or closed before our check succeeded): failed for good, or tried again. */
  private attemptFailed(attempt: Attempt, reason: string): void {
    if (attempt.retryTimer || attempt.state === 'failed') return
    const delay = RELAY_RETRY_DELAYS_MS[attempt.retries]
    if (attempt.pair.remote.type === 'relay' && !attempt.checked && !this.done && delay !== undefined) {
      attempt.retries++
      attempt.state = 'connecting'
      attempt.reason = reason
      this.log('debug', `pair ${attempt.label}: ${reason}; the peer's relay may not let us in yet: again in ${delay} ms`)
      const timer = setTimeout(() => {
        this.retryTimers.delete(timer)
        attempt.retryTimer = undefined
        if (this.done) return
        this.connectAttempt(attempt)
      }, delay)
      timer.unref()
      attempt.retryTimer = timer
      this.retryTimers.add(timer)
      return
    }
    attempt.state = 'failed'
    attempt.reason = reason
  }

  private connectAttempt(attempt: Attempt): void {
    const pair = attempt.pair
    const socket = tcpConnect({ host: pair.remote.address, port: pair.remote.port, localAddress: pair.local.address, family: pair.remote.family, noDelay: true })
    this.pendingSockets.add(socket)
    const fail = (reason: string) => {
      if (attempt.state !== 'connecting') return
      cleanup()
      socket.destroy()
      this.log('debug', `pair ${attempt.label}: ${reason}`)
      this.attemptFailed(attempt, reason)
      this.checkFailure()
    }
    const timer = setTimeout(() => fail('timed out'), this.options.timeouts.connectMs)
    timer.unref()
    const onError = (err: NodeJS.ErrnoException) => fail(describeSocketError(err))
    const cleanup = () => {
      clearTimeout(timer)
      this.pendingSockets.delete(socket)
      socket.off('error', onError)
    }
    socket.on('error', onError)
    socket.once('connect', () => {
      if (attempt.state !== 'connecting') return
      cleanup()
      if (this.done) {
        socket.destroy()
        return
      }
      attempt.state = 'checking'
      const conn = new CheckConnection(nextConnectionId++, socket, 'outbound', this)
      const path: PathState = { conn, localPriority: pair.localPriority, target: pair.remote, ourCheck: 'idle', answered: 0, nominated: false }
      this.paths.set(conn, path)
      conn.start()
      this.sendCheck(path, false)
    })
  }

  // ----------------------------------------------------------------------------------------------------- checks

  private sendCheck(path: PathState, useCandidate: boolean): void {
    const remote = this.remote!
    const conn = path.conn
    const transactionId = randomTransactionId()
    // pjnath's PRIORITY: prflx with the local preference of the candidate the check leaves from
    const priority = prflxPriority(conn.direction === 'outbound' && !useCandidate && path.ourCheck === 'idle' ? 'active' : 'passive')
    const request = buildCheckRequest({
      localUfrag: this.options.ufrag,
      remoteUfrag: remote.ufrag,
      remotePwd: remote.pwd,
      priority,
      role: this.role,
      tieBreaker: this.tieBreaker,
      useCandidate,
      software: this.options.software,
      transactionId,
    })
    if (!useCandidate) path.ourCheck = 'in-progress'
    const sentAs = this.role
    conn.request(request, transactionId, this.options.timeouts.checkMs, (result) => this.onCheckResult(path, useCandidate, sentAs, result))
  }

  private onCheckResult(path: PathState, useCandidate: boolean, sentAs: IceRole, result: TransactionResult): void {
    if (this.done) return
    const conn = path.conn
    const attempt = path.target ? this.attempts.find((a) => a.label === this.attemptLabel(conn.localAddress, path.target!)) : undefined
    const failed = (reason: string) => {
      if (useCandidate) this.nominating = undefined
      else path.ourCheck = 'failed'
      if (attempt) this.attemptFailed(attempt, reason)
      conn.close(reason)
    }
    if ('error' in result) return failed(result.error)
    const response = result.response
    if (!validateCheckResponse(response, this.remote!.pwd)) return failed('check answered without valid MESSAGE-INTEGRITY')
    if (response.class === 'error') {
      const code = response.errorCode?.code
      if (code === StunErrorCode.ROLE_CONFLICT) {
        if (this.role === sentAs) this.switchRole(sentAs === 'controlling' ? 'controlled' : 'controlling', 'a 487 answer')
        if (useCandidate) this.nominating = undefined
        path.ourCheck = 'idle'
        this.sendCheck(path, false)
        return
      }
      return failed(`check refused (${code ?? '?'} ${response.errorCode?.reason ?? ''})`)
    }
    if (response.class !== 'success') return failed('unexpected answer')
    if (useCandidate) {
      // switch point of the controlling side: the peer sends nothing but TLS after this response
      conn.freeze()
      this.log('debug', `nomination accepted: ${conn.label}`)
      this.finish(conn)
      return
    }
    path.ourCheck = 'succeeded'
    if (attempt) {
      attempt.state = 'succeeded'
      attempt.checked = true
    }
    this.log('debug', `check succeeded: ${conn.label}`)
    this.evaluate()
  }

  private switchRole(role: IceRole, why: string): void {
    this.log('info', `role conflict (${why}): now ${role}`)
    this.role = role
  }

  // ----------------------------------------------------------------------------------------------------- nomination

  private pathPriority(path: PathState): bigint {
    let remotePriority = path.target?.priority
    if (remotePriority === undefined) {
      const active = this.remote?.candidates.find((c) => c.tcpType === 'active' && c.address === path.conn.remoteAddress)
      remotePriority = active?.priority ?? path.remotePriority ?? 0
    }
    return pairPriority(this.role, path.localPriority, remotePriority)
  }

  /**
   * Controlling side: nominate the best valid pair when no better one can still come soon. A pair is ready when our
   * check succeeded and we answered a check of the peer's on it (the peer then holds a succeeded pair too, so pjnath
   * nominates it at once). Ready pairs wait nominationDelayMs while other pairs are pending; a pair the peer never
   * checked is used only after ten times that (a peer that checks from its own connections only).
   */
  private evaluate(): void {
    if (this.done || !this.started || this.role !== 'controlling' || this.nominating) return
    const valid = [...this.paths.values()].filter((p) => p.ourCheck === 'succeeded' && !p.conn.isClosed)
    if (valid.length === 0) return
    const now = performance.now()
    this.firstValidAt ??= now
    const waited = now - this.firstValidAt
    const ready = valid.filter((p) => p.answered > 0)
    const pending = this.attempts.some((a) => a.state === 'connecting' || a.state === 'checking') || [...this.paths.values()].some((p) => p.ourCheck === 'in-progress')
    const delay = this.options.timeouts.nominationDelayMs
    let pool: PathState[] | undefined
    if (ready.length > 0 && (!pending || waited >= delay)) pool = ready
    else if (waited >= delay * 10) pool = ready.length > 0 ? ready : valid
    if (!pool) {
      if (!this.nominationTimer) {
        this.nominationTimer = setTimeout(
          () => {
            this.nominationTimer = undefined
            this.evaluate()
          },
          (ready.length > 0 ? delay : delay * 10) - waited + 1,
        )
        this.nominationTimer.unref()
      }
      return
    }
    pool.sort((a, b) => {
      const pa = this.pathPriority(a)
      const pb = this.pathPriority(b)
      return pa > pb ? -1 : pa < pb ? 1 : 0
    })
    const best = pool[0]!
    this.nominating = best.conn
    this.log('debug', `nominating ${best.conn.label}`)
    this.sendCheck(best, true)
  }

  // ----------------------------------------------------------------------------------------------------- end

  private finish(conn: CheckConnection): void {
    if (this.done) return
    const path = this.paths.get(conn)!
    this.done = true
    this.clearTimers()
    this.paths.delete(conn)
    const { socket, remaining } = conn.detach()
    for (const other of [...this.paths.keys()]) other.close('another pair was nominated')
    for (const s of this.pendingSockets) s.destroy()
    this.pendingSockets.clear()
    const remoteType: CandidateType = path.target?.type ?? this.remote?.candidates.find((c) => c.tcpType === 'active' && c.address === conn.remoteAddress)?.type ?? 'prflx'
    const localType: CandidateType = this.localCandidateOf(conn)?.type ?? 'host'
    this.resolveResult({
      socket,
      remaining,
      direction: conn.direction,
      localAddress: conn.localAddress,
      localPort: conn.localPort,
      remoteAddress: conn.remoteAddress,
      remotePort: conn.remotePort,
      candidatePair: `${localType}/${remoteType}`,
      relayed: localType === 'relay' || remoteType === 'relay',
      role: this.role,
      answerer: makeAnswerer(this.options.ufrag, this.options.pwd, this.remote!.ufrag, this.options.software),
    })
  }

  /** Our candidate a connection uses: inbound, the passive candidate it arrived at (a host one, or our relayed
   *  address); outbound, the host candidate it left from. */
  private localCandidateOf(conn: CheckConnection): IceCandidate | undefined {
    const candidates = this.options.candidates
    if (conn.direction === 'inbound') {
      return (
        candidates.find((c) => c.tcpType === 'passive' && c.address === conn.localAddress && c.port === conn.localPort) ??
        candidates.find((c) => c.tcpType === 'passive' && c.type === 'host' && c.address === conn.localAddress)
      )
    }
    return candidates.find((c) => c.type === 'host' && c.address === conn.localAddress)
  }

  /** When nothing can succeed any more: every outbound pair failed, no connection alive, and the peer had its
   *  chance to connect to us (inboundWaitMs after the start). */
  private checkFailure(): void {
    if (this.done || !this.started) return
    if (this.paths.size > 0 || this.attempts.some((a) => a.state === 'connecting' || a.state === 'checking')) return
    const elapsed = performance.now() - this.startedAt
    if (elapsed < this.options.timeouts.inboundWaitMs) {
      if (!this.failTimer) {
        this.failTimer = setTimeout(
          () => {
            this.failTimer = undefined
            this.checkFailure()
          },
          this.options.timeouts.inboundWaitMs - elapsed + 1,
        )
        this.failTimer.unref()
      }
      return
    }
    this.fail(this.summary())
  }

  /** What was tried, for ICE_FAILED messages: "3 candidate pairs failed (a -> b: connection refused; ...)". */
  summary(): string {
    const failed = this.attempts.filter((a) => a.state === 'failed')
    const skipped = (this.remote?.candidates ?? []).filter((c) => c.tcpType === 'passive' && skipReason(c, this.options.includeLoopback))
    const parts: string[] = []
    if (this.attempts.length === 0)
      parts.push(`no usable remote TCP candidate (${this.remote?.candidates.length ?? 0} announced, ${skipped.length} passive skipped: link-local/loopback/unusable)`)
    else
      parts.push(
        `${failed.length} of ${this.attempts.length} candidate pair${this.attempts.length === 1 ? '' : 's'} failed (${failed
          .map((a) => `${a.label}: ${a.reason}`)
          .slice(0, 6)
          .join('; ')})`,
      )
    parts.push(this.inboundSeen > 0 ? `${this.inboundSeen} connection(s) from the peer did not complete` : 'no connection from the peer')
    return `no TCP path: ${parts.join('; ')}`
  }

  /** Give up with ICE_FAILED (timeouts and the session use this too). */
  fail(message: string): void {
    if (this.done) return
    this.done = true
    this.close(message)
    this.rejectResult(new DhtnetError('ICE_FAILED', message))
  }

  /** Close every connection and timer; rejects a pending result with `err` (or ABORTED). */
  close(reason = 'closed', err?: Error): void {
    this.clearTimers()
    for (const s of this.pendingSockets) s.destroy()
    this.pendingSockets.clear()
    for (const conn of [...this.paths.keys()]) conn.close(reason)
    this.paths.clear()
    if (!this.done) {
      this.done = true
      this.rejectResult(err ?? new DhtnetError('ABORTED', `ICE-TCP: ${reason}`))
    }
  }

  private clearTimers(): void {
    if (this.nominationTimer) clearTimeout(this.nominationTimer)
    if (this.failTimer) clearTimeout(this.failTimer)
    for (const t of this.retryTimers) clearTimeout(t)
    this.retryTimers.clear()
    for (const a of this.attempts) a.retryTimer = undefined
    this.nominationTimer = undefined
    this.failTimer = undefined
  }
}

/** Answers valid Binding requests after nomination (pjnath may still check the pair); indications are dropped. */
export function makeAnswerer(ufrag: string, pwd: string, remoteUfrag: string, software: Uint8Array | undefined): StunAnswerer {
  return (request, from) => {
    if (request.class !== 'request') return undefined
    const valid = validateCheckRequest(request, ufrag, pwd, remoteUfrag)
    if (typeof valid === 'string') return undefined
    return buildCheckSuccess(request, from, pwd, software)
  }
}

function describeSocketError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused'
    case 'ETIMEDOUT':
      return 'timed out'
    case 'EHOSTUNREACH':
      return 'host unreachable'
    case 'ENETUNREACH':
      return 'network unreachable'
    case 'ECONNRESET':
      return 'connection reset'
    case 'EADDRNOTAVAIL':
      return 'local address not available'
    default:
      return err.code ?? err.message
  }
}
