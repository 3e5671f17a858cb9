/**
 * IceTcpTransport: DHTNet's transport (TLS over RFC 6544 ICE-TCP) as a Transport plug-in.
 *
 * One listening socket per address family serves every session (demultiplexed by ufrag, see listener.ts): sessions
 * start without binding anything, the pre-authentication bounds are global, and one port is enough to map on a NAT
 * gateway for all connections (`portMapper`, `mappedCandidates`). Likewise one TURN/TCP allocation (`relay`, see
 * relay.ts) serves every session as a relayed passive candidate; connections relayed through it enter through the
 * same listener (adopt). Each session gathers its candidates, runs one agent, and connect() resolves with a TLS Link
 * once the peer proved it holds the expected key.
 */
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import { DhtnetError, isDhtnetError, throwIfAborted } from '../../errors.js'
import { toLogger, type Logger, type LoggerLike } from '../../util/log.js'
import type { Identity } from '../../identity/types.js'
import type { Link, Transport, TransportConnectOptions, TransportSession, TransportSessionContext } from '../transport.js'
import { encodeIceMessage, localCandidates, parseIceMessage, type IceDescription, type LocalCandidateInputs } from './candidates.js'
import { IceTcpAgent, DEFAULT_AGENT_LIMITS, DEFAULT_AGENT_TIMEOUTS, type AgentLimits, type AgentTimeouts } from './agent.js'
import { PassiveListener, DEFAULT_MAX_UNAUTHENTICATED, DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS, DEFAULT_PRE_AUTH_TIMEOUT_MS, type ListeningAddress } from './listener.js'
import { hostAddresses, isLinkLocal, isLoopback, isUnusable } from './gather.js'
import { establishTls, tlsContext, type TlsMode } from './tls-link.js'
import { IceTcpLink } from './link.js'
import { ipFamily, normalizeIp, formatHostPort, type TransportAddress } from '../stun/ip.js'
import type { TurnAllocation } from '../turn/allocation.js'
import { TcpRelay, type IceTcpRelayOptions } from './relay.js'
import { ListenerPortMapping, type TcpPortMapper } from './port-mapping.js'

export interface MappedCandidate {
  /** Public address and port of the TCP mapping. */
  readonly address: string
  readonly port: number
  /** The local address the mapping forwards to (the candidate's base). */
  readonly localAddress: string
}

export interface IceTcpTimeouts extends AgentTimeouts {
  /** Whole ICE phase of connect(), from start to nomination (default 20000). */
  readonly iceMs: number
  /** TLS handshake (default 15000; a C++ peer on a fresh cache answers ~1 s late). */
  readonly tlsMs: number
  /** An inbound connection must authenticate within this (default 3000). */
  readonly preAuthMs: number
}

export interface IceTcpLimits extends AgentLimits {
  readonly maxUnauthenticated: number
  readonly maxUnauthenticatedPerAddress: number
}

export interface IceTcpTransportOptions {
  readonly identity: Identity
  /** Listen and gather on this address only ('0.0.0.0' / '::' = that family only). */
  readonly bindAddress?: string | undefined
  /** Only these interface names. */
  readonly interfaces?: readonly string[] | undefined
  /** Offer loopback candidates (pjnath never does; for tests on 127.0.0.1). */
  readonly includeLoopback?: boolean | undefined
  /** Listening port range, inclusive. */
  readonly portRange?: readonly [number, number] | undefined
  /** The public address the DHT sees: a srflx `active` candidate when it is routable and not one of ours. */
  readonly publicAddress?: (() => string | undefined | Promise<string | undefined>) | undefined
  /** A TURN server for a TCP relay (RFC 6062, over TCP or TLS): one allocation for every session, offered as a
   *  `typ relay tcptype passive` candidate; the peer's addresses get a permission when its description arrives. */
  readonly relay?: IceTcpRelayOptions | undefined
  /** Map the IPv4 listening port on the gateway (UPnP IGD / NAT-PMP, e.g. a nat/PortMapper): a srflx `passive`
   *  candidate; renewed by the mapper, removed on close(). */
  readonly portMapper?: TcpPortMapper | undefined
  /** TCP port mappings (UPnP / NAT-PMP) of our listening ports made by the caller: srflx `passive` candidates. */
  readonly mappedCandidates?: ((listening: readonly ListeningAddress[]) => readonly MappedCandidate[] | Promise<readonly MappedCandidate[]>) | undefined
  /** STUN SOFTWARE value; false: none. Default 'dhtnet-ts'. */
  readonly software?: string | false | undefined
  /** 'auto' (default): native TLS on TCP when the peer is ours (peerIsNative), framed otherwise; 'framed' always. */
  readonly mode?: 'auto' | 'framed' | undefined
  readonly timeouts?: Partial<IceTcpTimeouts> | undefined
  readonly limits?: Partial<IceTcpLimits> | undefined
  readonly logger?: LoggerLike | undefined
}

export const DEFAULT_SOFTWARE = 'dhtnet-ts'
/** How long a session waits for the listening port's mapping (DHTNet waits 4 s for its UPnP mapping). */
export const PORT_MAPPING_WAIT_MS = 4000
/** How long the responder waits for the TURN permissions of the requester's addresses before answering. */
const PERMIT_WAIT_MS = 3000

export class IceTcpTransport implements Transport {
  readonly name = 'ice-tcp' as const
  private readonly logger: Logger
  private readonly timeouts: IceTcpTimeouts
  private readonly limits: IceTcpLimits
  private readonly secureContexts = new Map<TlsMode, ReturnType<typeof tlsContext>>()
  private listener: Promise<PassiveListener> | undefined
  /** The listener once open (relayed connections are adopted into it). */
  private openListener: PassiveListener | undefined
  private readonly sessions = new Set<IceTcpSession>()
  /** @internal the TCP relay (relay option), for sessions. */
  readonly relay: TcpRelay | undefined
  private readonly portMapping: ListenerPortMapping | undefined
  private closed = false

  constructor(readonly options: IceTcpTransportOptions) {
    this.logger = toLogger(options.logger)
    this.timeouts = { ...DEFAULT_AGENT_TIMEOUTS, iceMs: 20_000, tlsMs: 15_000, preAuthMs: DEFAULT_PRE_AUTH_TIMEOUT_MS, ...options.timeouts }
    this.limits = {
      ...DEFAULT_AGENT_LIMITS,
      maxUnauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
      maxUnauthenticatedPerAddress: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
      ...options.limits,
    }
    this.relay = options.relay ? new TcpRelay(options.relay, (stream, peer, relayed) => this.adoptRelayed(stream, peer, relayed), this.logger) : undefined
    this.portMapping = options.portMapper ? new ListenerPortMapping(options.portMapper, this.logger) : undefined
  }

  /** The TLS context of a stream mode. The framed one is made at the first session: an identity whose key does not
   *  match its certificate fails there (this transport cannot start) rather than when the manager is built. */
  private context(mode: TlsMode): ReturnType<typeof tlsContext> {
    let context = this.secureContexts.get(mode)
    if (!context) this.secureContexts.set(mode, (context = tlsContext(this.options.identity, mode)))
    return context
  }

  /** Open the shared listening sockets now (else at the first session); resolves with their addresses. */
  async listen(): Promise<readonly ListeningAddress[]> {
    if (this.closed) throw new DhtnetError('TRANSPORT_CLOSED', 'ICE-TCP transport closed')
    this.listener ??= PassiveListener.open({
      bindAddress: this.options.bindAddress,
      portRange: this.options.portRange,
      preAuthTimeoutMs: this.timeouts.preAuthMs,
      maxUnauthenticated: this.limits.maxUnauthenticated,
      maxUnauthenticatedPerAddress: this.limits.maxUnauthenticatedPerAddress,
      logger: this.logger,
    })
    try {
      const listener = await this.listener
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- close() may run during the await (TypeScript keeps the narrowing from the check before it)
      if (this.closed) throw new DhtnetError('TRANSPORT_CLOSED', 'ICE-TCP transport closed')
      this.openListener = listener
      return listener.addresses
    } catch (err) {
      this.listener = undefined
      throw err
    }
  }

  /**
   * Get ready in the background: open the listeners, start the TURN allocation and the port mapping, so that the
   * first session does not wait for them. Never throws (a failure shows at the first session).
   */
  prepare(): void {
    if (this.closed) return
    this.listen().then(
      (addresses) => {
        this.relay?.prepare()
        this.portMapping?.prepare(addresses)
      },
      (err: unknown) => this.logger('debug', `ice-tcp: cannot listen yet: ${(err as Error).message}`),
    )
  }

  /** A peer's connection to our relayed address, relayed by the TURN server: into the listener like an accepted one. */
  private adoptRelayed(stream: Socket, peer: TransportAddress, relayed: TransportAddress): void {
    const listener = this.openListener
    if (!listener || this.closed) {
      stream.destroy()
      return
    }
    listener.adopt(stream, { remoteAddress: peer.address, remotePort: peer.port, localAddress: relayed.address, localPort: relayed.port })
  }

  async createSession(context: TransportSessionContext): Promise<TransportSession> {
    throwIfAborted(context.signal)
    if (this.closed) throw new DhtnetError('TRANSPORT_CLOSED', 'ICE-TCP transport closed')
    try {
      // the key check (~2 ms); the native mode's context is made when a native peer first needs it
      this.context('framed')
    } catch (err) {
      throw new DhtnetError('TLS_FAILED', `ICE-TCP: our identity cannot be used for TLS: ${(err as Error).message}`, { cause: err })
    }
    await this.listen()
    const listener = await this.listener!
    const remote = context.role === 'responder' ? parseRemote(context.remoteDescription) : undefined
    const hosts = hostAddresses(this.options).filter((h) => listener.portFor(h.family) !== undefined)
    if (hosts.length === 0) {
      throw new DhtnetError('ICE_FAILED', 'ICE-TCP: no usable local address', {
        hint: this.options.includeLoopback ? undefined : 'is the machine offline? (loopback is not offered)',
      })
    }
    // the mapping and the relay usually exist already (prepare()); otherwise each is waited for, in parallel, bounded
    const [ownMapped, callerMapped, reflexive, allocation] = await Promise.all([
      this.portMapping?.candidates(listener.addresses, PORT_MAPPING_WAIT_MS, context.signal) ?? [],
      this.options.mappedCandidates?.(listener.addresses) ?? [],
      this.reflexive(hosts.map((h) => h.address)),
      this.relay?.ready(this.relay.gatherMs, context.signal),
    ])
    const inputs: LocalCandidateInputs = {
      hosts: hosts.map((h) => ({ address: h.address, passivePort: listener.portFor(h.family)! })),
      mapped: [...ownMapped, ...callerMapped],
      reflexive,
      relays: allocation ? [allocation.relayedAddress] : [],
    }
    throwIfAborted(context.signal)
    const ufrag = randomBytes(4).toString('hex')
    const pwd = randomBytes(12).toString('hex')
    const candidates = localCandidates(inputs)
    const software = this.options.software === false ? undefined : Buffer.from(this.options.software ?? DEFAULT_SOFTWARE)
    const agent = new IceTcpAgent({
      role: context.role === 'responder' ? 'controlling' : 'controlled',
      ufrag,
      pwd,
      candidates,
      hosts,
      includeLoopback: this.options.includeLoopback ?? false,
      software,
      timeouts: this.timeouts,
      limits: this.limits,
      logger: this.logger,
    })
    listener.register(ufrag, (socket, request, decoder, origin) => agent.acceptInbound(socket, request, decoder, origin))
    const session = new IceTcpSession(this, context, agent, listener, encodeIceMessage({ ufrag, pwd, candidates }), remote, allocation, () => this.sessions.delete(session))
    this.sessions.add(session)
    this.logger('debug', `ice-tcp: session ${ufrag} as ${context.role}: ${candidates.length} candidates${allocation ? ' (TCP relay included)' : ''}`)
    if (remote && allocation) {
      // the responder answers only once the requester may reach our relay (its first checks follow our answer)
      const signal = AbortSignal.any([context.signal, AbortSignal.timeout(PERMIT_WAIT_MS)])
      await session.permitPeer(remote, signal)
    }
    return session
  }

  /** The peer's addresses worth a TURN permission, most useful first (server-reflexive: where its connection to our
   *  relay comes from behind a NAT; then host, peer-reflexive and relayed ones). */
  peerAddresses(remote: IceDescription): string[] {
    const rank: Record<string, number> = { srflx: 0, host: 1, prflx: 2, relay: 3 }
    const include = this.options.includeLoopback ?? false
    return [...remote.candidates]
      .filter((c) => c.transport === 'TCP' && !isUnusable(c.address) && !isLinkLocal(c.address) && (include || !isLoopback(c.address)))
      .sort((a, b) => (rank[a.type] ?? 9) - (rank[b.type] ?? 9))
      .map((c) => c.address)
  }

  /** @internal what sessions need. */
  get settings() {
    return { timeouts: this.timeouts, tlsContext: (mode: TlsMode) => this.context(mode), logger: this.logger, mode: this.options.mode ?? 'auto', relay: this.relay }
  }

  private async reflexive(ours: readonly string[]): Promise<LocalCandidateInputs['reflexive']> {
    const raw = await this.options.publicAddress?.()
    if (!raw) return undefined
    const address = normalizeIp(raw)
    const family = ipFamily(address)
    if (!family || isUnusable(address) || isLoopback(address) || isLinkLocal(address) || ours.includes(address)) return undefined
    const base = ours.find((a) => ipFamily(a) === family && !isLoopback(a) && !isLinkLocal(a))
    return base ? { address, localAddress: base } : undefined
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const s of [...this.sessions]) s.close(new DhtnetError('TRANSPORT_CLOSED', 'ICE-TCP transport closed'))
    const listener = this.listener
    this.listener = undefined
    this.openListener = undefined
    await Promise.all([
      this.relay?.close(),
      this.portMapping?.close(),
      listener
        ? listener.then(
            (l) => l.close(),
            () => undefined,
          )
        : undefined,
    ])
  }
}

function parseRemote(description: string | undefined): IceDescription {
  if (description === undefined) throw new DhtnetError('BAD_ICE_MESSAGE', 'ICE-TCP: the peer sent no ICE description')
  return parseIceMessage(description)
}

export class IceTcpSession implements TransportSession {
  private connecting = false
  private done = false
  private readonly closing = new AbortController()
  /** TURN permissions of the peer's addresses on our relay; handed to the link when its path uses our relay. */
  private permission: Promise<{ release: () => void }> | undefined
  private permissionKept = false

  constructor(
    private readonly transport: IceTcpTransport,
    private readonly context: TransportSessionContext,
    private readonly agent: IceTcpAgent,
    private readonly listener: PassiveListener,
    readonly localDescription: string,
    private readonly remote: IceDescription | undefined,
    /** Our TCP relay allocation when this session offers a relay candidate. */
    private readonly allocation: TurnAllocation | undefined,
    private readonly onDone: () => void,
  ) {}

  /** @internal Ask the TURN permissions for the peer's addresses (once); resolves when the server answered. */
  permitPeer(remote: IceDescription, signal: AbortSignal): Promise<unknown> {
    const relay = this.transport.relay
    if (!relay || !this.allocation || this.permission || this.done) return Promise.resolve()
    this.permission = relay.permit(this.allocation, this.transport.peerAddresses(remote), signal)
    return this.permission
  }

  async connect(options: TransportConnectOptions): Promise<Link> {
    if (this.connecting) throw new DhtnetError('INVALID_ARGUMENT', 'ICE-TCP: connect() called twice on one session')
    if (this.done) throw new DhtnetError('TRANSPORT_CLOSED', 'ICE-TCP session closed')
    this.connecting = true
    const { timeouts, tlsContext: tls, logger, mode } = this.transport.settings
    const signal = AbortSignal.any([this.context.signal, options.signal, this.closing.signal])
    const onAbort = () => this.agent.close('aborted', signal.reason instanceof DhtnetError ? signal.reason : new DhtnetError('ABORTED', 'ICE-TCP: connection attempt aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    const iceTimer = setTimeout(() => this.agent.fail(`${this.agent.summary()} (no nomination within ${timeouts.iceMs} ms)`), timeouts.iceMs)
    try {
      throwIfAborted(signal)
      // the requester may start its session before the peer's certificate is found: connect() then brings it
      const expectedPeer = (options.peerChain ?? this.context.peerChain)[0]
      if (!expectedPeer) throw new DhtnetError('INTERNAL_ERROR', 'an ICE-TCP session was connected without the peer certificate')
      const remote = this.remote ?? parseRemote(options.remoteDescription)
      // the requester learns the peer's addresses only now; its checks need no permission, so they start at once
      void this.permitPeer(remote, signal)
      const native = mode === 'auto' && (options.peerIsNative ?? this.context.peerIsNative) === true
      const tlsMode: TlsMode = native ? 'native' : 'framed'
      const path = await this.agent.start(remote, { native }).catch((err: unknown) => {
        throw this.explainFailure(err)
      })
      clearTimeout(iceTimer)
      this.listener.unregister(this.agentUfrag)
      const result = await establishTls({
        path,
        tlsRole: this.context.role === 'responder' ? 'client' : 'server',
        context: tls(tlsMode),
        expectedPeer,
        mode: tlsMode,
        timeoutMs: timeouts.tlsMs,
        signal,
        logger,
      })
      const link = new IceTcpLink(
        result.socket,
        path.socket,
        result.framed,
        {
          transport: 'ice-tcp',
          candidatePair: path.candidatePair,
          relay: path.relayed ? 'tcp' : undefined,
          localAddress: formatHostPort(path.localAddress, path.localPort),
          remoteAddress: formatHostPort(path.remoteAddress, path.remotePort),
        },
        tlsMode,
        result.peerChain,
      )
      if (this.permission && path.candidatePair.startsWith('relay/')) {
        // the link runs through our allocation: the peer's permission lives as long as the link
        this.permissionKept = true
        const permission = this.permission
        link.once('close', () => void permission.then((p) => p.release()))
      }
      logger(
        'info',
        `ice-tcp: connected ${link.path.localAddress} -> ${link.path.remoteAddress} (${path.candidatePair}${path.relayed ? ', through a TURN relay over TCP' : ''}, ${tlsMode} TLS)`,
      )
      return link
    } catch (err) {
      this.agent.close('failed')
      throw err
    } finally {
      clearTimeout(iceTimer)
      signal.removeEventListener('abort', onAbort)
      this.finish()
    }
  }

  /**
   * ICE found no path and this session had no relay candidate although a TURN server is configured: say why the
   * relay was missing, with the TURN error's code when the allocation failed (wrong password, server unreachable):
   * that is what the user has to fix.
   */
  private explainFailure(err: unknown): unknown {
    const relay = this.transport.relay
    if (!relay || this.allocation || !isDhtnetError(err, 'ICE_FAILED')) return err
    const turn = relay.lastError
    if (turn) {
      return new DhtnetError(turn.code, `${err.message}; our TCP relay on ${relay.description} is unavailable: ${turn.message}`, { cause: err, hint: turn.hint ?? err.hint })
    }
    return new DhtnetError('ICE_FAILED', `${err.message}; our TCP relay on ${relay.description} was not ready within ${relay.gatherMs} ms`, { cause: err, hint: err.hint })
  }

  private get agentUfrag(): string {
    return this.localDescription.slice(0, this.localDescription.indexOf('\n'))
  }

  /** Give up: every socket and timer of the attempt is freed. A Link already returned by connect() is the caller's
   *  and stays open. Idempotent. */
  close(err?: Error): void {
    if (!this.done) this.closing.abort(err ?? new DhtnetError('ABORTED', 'ICE-TCP session closed'))
    this.agent.close('session closed', err)
    this.finish()
  }

  private finish(): void {
    if (this.done) return
    this.done = true
    this.listener.unregister(this.agentUfrag)
    if (this.permission && !this.permissionKept) void this.permission.then((p) => p.release())
    this.onDone()
  }
}
