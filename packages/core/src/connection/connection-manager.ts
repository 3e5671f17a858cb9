/**
 * ConnectionManager: authenticated, encrypted, multiplexed connections to devices known only by their public key.
 *
 * Signalling follows DHTNet (reference §2): requests and answers are SecureDht-encrypted values (type 0, user type
 * "peer_request") put at SHA1("peer:" + long id hex) of the recipient; we listen there and at the legacy
 * SHA1("peer:" + 40-hex id). One request offers every transport the policy allows (DHTNet's ICE-TCP + TLS in
 * `ice_msg`, WebRTC in an extension key); the transports both sides share race and the first authenticated link
 * carries the connection (transports.ts), with our multiplexer between our peers and DHTNet's MultiplexedSocket with
 * a C++ peer.
 *
 * This file is the facade: options, hooks, life cycle, connectDevice's sharing/retry/deadline, queries. The jobs
 * live beside it: devices.ts (registry), requester.ts (outgoing), responder.ts (incoming), transports.ts (choice
 * and race), muxes.ts (which multiplexer), peer-certificates.ts, signalling.ts.
 */
import { EventEmitter, setMaxListeners } from 'node:events'
import { X509Certificate, createHash } from 'node:crypto'
import { DhtnetError, isDhtnetError, errorMessage } from '../errors.js'
import type { Identity } from '../identity/types.js'
import { parsePeerId, publicKeyIds } from '../identity/ids.js'
import type { TrustStore } from '../identity/truststore.js'
import { SecureDht, type SecureDhtEngine } from '../dht/secure-dht.js'
import type { DhtValue } from '../dht/value.js'
import type { ChannelRequestDecision, ChannelInfo, StreamChannel } from '../mux/mux.js'
import type { DatagramChannel } from '../mux/native/datagram-channel.js'
import type { Transport } from '../transport/transport.js'
import { WebRtcTransport } from '../transport/webrtc/webrtc-transport.js'
import { IceTcpTransport } from '../transport/ice-tcp/transport.js'
import type { IceTcpRelayOptions } from '../transport/ice-tcp/relay.js'
import type { IceServerSpec } from '../transport/webrtc/ice-servers.js'
import { type Logger, type LoggerLike, toLogger } from '../util/log.js'
import { Deadline } from '../util/deadline.js'
import type { PortMapper } from '../nat/port-mapper.js'
import type { ManagerContext, NewConnection } from './context.js'
import { DeviceRegistry, type DeviceState } from './devices.js'
import { PeerCertificates } from './peer-certificates.js'
import { type Channel, type ConnectionInfo, PeerLink } from './peer-link.js'
import { type EarlyStart, Requester } from './requester.js'
import { Responder, type ResponderStats } from './responder.js'
import { PEER_REQUEST_USER_TYPE, type PeerConnectionRequest, TreatedIds, decodeRequest } from './signalling.js'
import { TRANSPORT_POLICIES, type TransportPolicy, allowedTransports } from './transports.js'

export type { ConnectionInfo } from './peer-link.js'
export type { ChannelInfo } from '../mux/mux.js'
export type { TransportPolicy } from './transports.js'
export type { ResponderStats } from './responder.js'

/** What a channel request hook may answer. */
export type ChannelDecision = ChannelRequestDecision

export interface ConnectionManagerOptions {
  identity: Identity
  /** A SecureDht over our identity, or a DHT node (a SecureDht is then built and owned by the manager). */
  dht: SecureDht | SecureDhtEngine
  trust: TrustStore
  /** Accept any well-formed chain whose signatures verify (otherwise it must end at a trusted CA). Default false. */
  anonymous?: boolean
  /** Which transports connections may use: 'auto' (every one, racing; default), 'tcp' (ICE-TCP + TLS), 'webrtc'. */
  transport?: TransportPolicy
  /**
   * Speak exactly as a C++ DHTNet device does: requests and answers without our extensions, so that every peer —
   * ours included — answers with DHTNet's own protocols (ICE-TCP, TLS with RFC 4571 framing, MultiplexedSocket;
   * no half-close, no datagram channels). For interoperability tests and for debugging. Default false.
   */
  emulateDhtnet?: boolean
  /** The transports, when the caller builds them itself (default: ICE-TCP and WebRTC from the options below). */
  transports?: readonly Transport[]
  /** STUN/TURN servers: 'stun:HOST:PORT', 'turn:USER:PASSWORD@HOST:PORT' (TURN over UDP). */
  iceServers?: readonly IceServerSpec[]
  /** A TURN server reached over TCP or TLS for ICE-TCP's relay candidate (RFC 6062; transport/ice-tcp/relay.ts). */
  tcpRelay?: IceTcpRelayOptions
  /** Bind ICE to this local address (tests: '127.0.0.1'). Default: every interface. */
  bindAddress?: string
  /** UDP port range for ICE (WebRTC). */
  portRange?: { begin: number; end: number }
  /** TCP listening port range for ICE-TCP (inclusive). Default: any port. */
  tcpPortRange?: readonly [number, number]
  /** Our public IP as the DHT sees it (a server-reflexive ICE-TCP candidate when routable). */
  publicAddress?: () => string | undefined
  /**
   * UPnP/NAT-PMP fallback: each peer connection's port is mapped on the gateway and offered as a srflx candidate, and
   * the ICE-TCP listening port once (TCP, removed when the manager closes). A failed mapping is logged and the
   * connect goes on without it; mappings are removed when their connection closes. The caller owns (and closes) the
   * mapper.
   */
  portMapper?: PortMapper
  /** Default bound of connectDevice and of an incoming handshake (default 30 s). */
  connectTimeoutMs?: number
  /** Multiplexer keepalive: PING after this much silence (default 5 s). */
  keepaliveIntervalMs?: number
  /** A peer silent for this long is dead: every channel ends with PEER_UNREACHABLE (default 20 s). */
  deadPeerTimeoutMs?: number
  /** Do not tell trusted devices why their request was refused (onIceRequest, no shared transport): they time out. */
  silentRefusals?: boolean
  /**
   * Tell untrusted devices (or ones whose certificate is not found) that they were refused, so that a misconfigured
   * user learns why: 'limited' (default) answers at most one per second (burst 4) — a refusal costs a signature and a
   * DHT put — and drops the rest in silence; 'never' is DHTNet's silence (a stranger does not learn we are online);
   * 'always' answers every one.
   */
  refuseUntrusted?: 'limited' | 'never' | 'always'
  /** Also listen at the legacy key SHA1("peer:" + 40-hex id) (default true). */
  listenLegacyKey?: boolean
  /** Most incoming requests handled at once; more are refused with BUSY (default 64). */
  maxPendingIncoming?: number
  /** Accept or refuse an incoming connection, after the trust check. Default: accept. */
  onIceRequest?: (peerCert: X509Certificate) => boolean | Promise<boolean>
  /** Accept or refuse a channel the peer opens. Default: decline ("no channel handler"). */
  onChannelRequest?: (peerCert: X509Certificate, name: string) => ChannelDecision | Promise<ChannelDecision>
  /** Every channel that becomes ready, both directions (incoming ones are only reachable through this). */
  onConnectionReady?: (peerId: string, name: string, socket: StreamChannel | DatagramChannel) => void
  logger?: LoggerLike
}

export interface ConnectDeviceOptions {
  /** Fail (NOT_CONNECTED) instead of starting a new connection when none is live or being set up. */
  noNewSocket?: boolean
  /** Start a new connection even if one is live. */
  forceNewSocket?: boolean
  /** Return the live channel of that name, or join a request for that name in progress. */
  uniqueName?: boolean
  /** Sent with the request (and as the DHT push type). */
  connType?: string
  /** Bound for the whole call (default: connectTimeoutMs). */
  timeoutMs?: number
  signal?: AbortSignal
  /** Open a datagram channel (unordered, no retransmission) instead of a stream. */
  datagram?: boolean
}

/** A device: 40-hex id, 64-hex long id, its certificate, or its chain (leaf first). */
export type PeerSpec = string | X509Certificate | readonly X509Certificate[]

interface PeerRef {
  /** 64-hex when known, else undefined until the certificate is found. */
  longId: string | undefined
  /** The id as given (either form). */
  hex: string
  chain: X509Certificate[] | undefined
}

export class ConnectionManager extends EventEmitter {
  readonly identity: Identity
  readonly dht: SecureDht
  private readonly ownsDht: boolean
  private readonly options: ConnectionManagerOptions
  private readonly log: Logger
  private readonly connectTimeoutMs: number
  private readonly transports: readonly Transport[]
  private readonly devices = new DeviceRegistry()
  private readonly treated = new TreatedIds()
  private readonly listens: Array<{ cancel(): void }> = []
  private readonly closing = new AbortController()
  private readonly requester: Requester
  private readonly responder: Responder
  private iceRequestHook: ConnectionManagerOptions['onIceRequest']
  private channelRequestHook: ConnectionManagerOptions['onChannelRequest']
  private connectionReadyHook: ConnectionManagerOptions['onConnectionReady']
  private listening = false
  /** A client that only connects out: requests addressed to us are ignored unread. */
  private clientOnly = false
  private published = false
  private _closed = false

  constructor(options: ConnectionManagerOptions) {
    super()
    // checked for JavaScript callers, whom the types do not hold
    const given = options as Partial<ConnectionManagerOptions> | undefined
    if (!given?.identity) throw new DhtnetError('INVALID_ARGUMENT', 'ConnectionManager needs an identity')
    if (!given.dht) throw new DhtnetError('INVALID_ARGUMENT', 'ConnectionManager needs a DHT (SecureDht or DhtNode)')
    if (!given.trust) throw new DhtnetError('INVALID_ARGUMENT', 'ConnectionManager needs a TrustStore')
    const policy = options.transport ?? 'auto'
    if (!TRANSPORT_POLICIES.includes(policy)) {
      throw new DhtnetError('BAD_OPTION', `unknown transport policy "${String(policy)}"`, { hint: `use one of: ${TRANSPORT_POLICIES.join(', ')}` })
    }
    this.options = options
    this.identity = options.identity
    this.log = toLogger(options.logger)
    // every operation in progress (one per connectDevice and incoming request, bounded by those) watches it
    setMaxListeners(Infinity, this.closing.signal)
    this.connectTimeoutMs = options.connectTimeoutMs ?? 30_000
    if (options.dht instanceof SecureDht) {
      if (options.dht.identity.longId !== options.identity.longId) {
        throw new DhtnetError('INVALID_ARGUMENT', 'the SecureDht was built for another identity than the ConnectionManager')
      }
      this.dht = options.dht
      this.ownsDht = false
    } else {
      this.dht = new SecureDht(options.dht, options.identity, { log: this.log })
      this.ownsDht = true
    }
    const loopback = options.bindAddress !== undefined && /^(127\.|::1$|localhost$)/.test(options.bindAddress)
    this.transports = options.transports ?? [
      new IceTcpTransport({
        identity: options.identity,
        ...(options.bindAddress ? { bindAddress: options.bindAddress } : {}),
        // pjnath never offers loopback candidates; a node bound to loopback (tests, same host) has nothing else
        includeLoopback: loopback,
        ...(options.tcpPortRange ? { portRange: options.tcpPortRange } : {}),
        ...(options.publicAddress ? { publicAddress: options.publicAddress } : {}),
        ...(options.tcpRelay ? { relay: options.tcpRelay } : {}),
        ...(options.portMapper ? { portMapper: options.portMapper } : {}),
        logger: this.log,
      }),
      new WebRtcTransport({
        identity: options.identity,
        ...(options.iceServers ? { iceServers: options.iceServers } : {}),
        ...(options.bindAddress ? { bindAddress: options.bindAddress } : {}),
        ...(options.portRange ? { portRange: options.portRange } : {}),
        ...(options.portMapper ? { portMapper: options.portMapper } : {}),
        logger: this.log,
      }),
    ]
    this.iceRequestHook = options.onIceRequest
    this.channelRequestHook = options.onChannelRequest
    this.connectionReadyHook = options.onConnectionReady
    const context = this.makeContext(policy)
    this.requester = new Requester(context)
    this.responder = new Responder(context, () => ({
      silentRefusals: options.silentRefusals ?? false,
      refuseUntrusted: options.refuseUntrusted ?? 'limited',
      maxPendingIncoming: options.maxPendingIncoming ?? 64,
      onIceRequest: this.iceRequestHook,
    }))
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Hooks

  onIceRequest(cb: ConnectionManagerOptions['onIceRequest']): void {
    this.iceRequestHook = cb
  }

  onChannelRequest(cb: ConnectionManagerOptions['onChannelRequest']): void {
    this.channelRequestHook = cb
  }

  onConnectionReady(cb: ConnectionManagerOptions['onConnectionReady']): void {
    this.connectionReadyHook = cb
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Lifecycle

  /**
   * Listen for connection requests (our long-id key and the legacy key) and publish our certificate. Resolves once
   * the listens are set and the certificate publication finished (or `publishTimeoutMs`, default 15 s, passed).
   * `clientOnly`: a client that only connects out: it answers no request (requests addressed to it are dropped
   * before any work), listens at its keys from its first connectDevice on (answers arrive there), and does not wait
   * for its certificate publication (its requests carry its certificate).
   */
  async start(options: { publishTimeoutMs?: number; clientOnly?: boolean } = {}): Promise<void> {
    if (this._closed) throw new DhtnetError('CLOSED', 'the connection manager is closed')
    this.clientOnly = options.clientOnly ?? false
    if (!this.clientOnly) this.startListening()
    // Incoming requests need the transports' libraries: load them while the publication waits for the network.
    for (const t of this.transports) {
      if (t instanceof WebRtcTransport) t.preload()
      // listener, TURN/TCP allocation and port mapping made in the background, ready for the first connection
      // (not for a transport the policy never uses)
      else if (t instanceof IceTcpTransport && allowedTransports([t], this.context.policy).length > 0) t.prepare()
    }
    if (this.published) return
    this.published = true
    if (this.clientOnly) {
      this.dht.start().catch((err: unknown) => this.log('warn', `publishing our certificate failed: ${(err as Error).message}`))
      this.log('info', `connection manager started (client): device ${this.identity.id} (long id ${this.identity.longId})`)
      return
    }
    const limit = options.publishTimeoutMs ?? 15_000
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.dht.start().catch((err: unknown) => this.log('warn', `publishing our certificate failed: ${(err as Error).message}`)),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.log('warn', `publishing our certificate did not finish within ${limit} ms; continuing`)
          resolve()
        }, limit)
      }),
    ])
    clearTimeout(timer)
    this.log('info', `connection manager started: device ${this.identity.id} (long id ${this.identity.longId})`)
  }

  /** Listen at our keys (answers to our requests arrive there too). A new outgoing connection calls it if start() did not. */
  private startListening(): void {
    if (this.listening || this._closed) return
    this.listening = true
    const keys: Array<[Buffer, boolean]> = [[SecureDht.peerKey(this.identity.longId), false]]
    if (this.options.listenLegacyKey !== false) keys.push([SecureDht.peerKey(this.identity.id), true])
    for (const [key, legacy] of keys) {
      this.listens.push(
        this.dht.listen(
          key,
          (values, expired) => {
            if (expired) return
            for (const v of values) this.onDhtValue(v, legacy)
          },
          { filter: (v) => v.userType === PEER_REQUEST_USER_TYPE },
        ),
      )
    }
  }

  get closed(): boolean {
    return this._closed
  }

  /**
   * Close every connection and pending operation (they reject with ABORTED), stop listening. Leaves no handle
   * behind: once every manager of the process is closed, the native WebRTC threads are released.
   */
  async close(): Promise<void> {
    if (this._closed) return
    this._closed = true
    this.closing.abort()
    for (const l of this.listens) l.cancel()
    this.listens.length = 0
    const waits: Promise<void>[] = []
    for (const device of this.devices.all()) {
      for (const link of device.links) {
        waits.push(new Promise<void>((resolve) => (link.link.closed ? resolve() : link.link.once('close', () => resolve()))))
        // Our own decision: channels end quietly (no 'error' for handlers that do not expect one).
        link.close()
      }
    }
    this.devices.clear()
    this.requester.close()
    waits.push(...this.transports.map((t) => t.close().catch((err: unknown) => this.log('debug', `closing a transport: ${(err as Error).message}`))))
    if (this.ownsDht) this.dht.close()
    await Promise.all(waits)
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Connecting

  /**
   * A channel to a device, by 40-hex id, 64-hex long id, or certificate. Shares the live connection to the device
   * (a new channel costs one round trip) or the one being set up. If the connection dies before the channel is
   * accepted, or setting it up met a retryable failure, the request is retried once on a new connection (not with
   * noNewSocket). The whole call is bounded by one deadline (timeoutMs).
   * Rejects with a DhtnetError: BAD_PEER_ID, CERT_NOT_FOUND, UNTRUSTED, PEER_NOT_FOUND, REFUSED, ICE_FAILED,
   * TLS_FAILED, UNSUPPORTED_TRANSPORT, CHANNEL_DECLINED, NOT_CONNECTED, TIMEOUT, ABORTED.
   */
  connectDevice(idOrCert: PeerSpec, name: string, options: ConnectDeviceOptions & { datagram: true }): Promise<DatagramChannel>
  connectDevice(idOrCert: PeerSpec, name: string, options?: ConnectDeviceOptions & { datagram?: false }): Promise<StreamChannel>
  connectDevice(idOrCert: PeerSpec, name: string, options?: ConnectDeviceOptions): Promise<Channel>
  connectDevice(idOrCert: PeerSpec, name: string, options: ConnectDeviceOptions = {}): Promise<Channel> {
    let peer: PeerRef
    try {
      if (this._closed) throw new DhtnetError('ABORTED', 'the connection manager is closed')
      peer = this.peerRef(idOrCert)
      if (typeof name !== 'string') throw new DhtnetError('BAD_CHANNEL_NAME', 'the channel name must be a string')
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    const deviceKey = peer.longId ?? peer.hex
    const device = this.devices.get(deviceKey)
    if (options.uniqueName) {
      const existing = DeviceRegistry.findChannel(device, name)
      if (existing) return Promise.resolve(existing)
      const pending = device.pendingByName.get(name)
      if (pending && pending.size > 0) return [...pending][0]!
    }
    const op = this.runConnect(peer, name, options)
    let set = device.pendingByName.get(name)
    if (!set) device.pendingByName.set(name, (set = new Set()))
    set.add(op)
    const forget = (): void => {
      const s = device.pendingByName.get(name)
      s?.delete(op)
      if (s && s.size === 0) device.pendingByName.delete(name)
      this.devices.forgetIfIdle(deviceKey)
    }
    op.then(forget, forget)
    return op
  }

  /**
   * A live connection to a device, shared or new, without opening a channel. Its ConnectionInfo says what the peer
   * is before a tool picks its first channel: `mux: 'dhtnet'` is a C++ DHTNet device (which speaks DHTNet's own
   * channel protocols), `transport` and `path` how it is reached. Same bound and retry as connectDevice.
   */
  async connect(idOrCert: PeerSpec, options: Pick<ConnectDeviceOptions, 'forceNewSocket' | 'connType' | 'timeoutMs' | 'signal'> = {}): Promise<ConnectionInfo> {
    if (this._closed) throw new DhtnetError('ABORTED', 'the connection manager is closed')
    const peer = this.peerRef(idOrCert)
    const what = `connecting to ${peer.hex.slice(0, 16)}…`
    const deadline = new Deadline(options.timeoutMs ?? this.connectTimeoutMs, what, options.signal, this.closing.signal)
    deadline.onStep = (step, ms) => this.log('debug', `${what}: +${ms.toFixed(0)} ms: ${step}`)
    try {
      return (await this.linkWithRetry(peer, options, deadline, what)).info()
    } finally {
      deadline.dispose()
    }
  }

  /** getLink, retried once on a retryable failure (a race inside a transport library). */
  private async linkWithRetry(peer: PeerRef, options: ConnectDeviceOptions, deadline: Deadline, what: string): Promise<PeerLink> {
    try {
      return await this.getLink(peer, options, deadline)
    } catch (err) {
      deadline.throwIfAborted()
      if (!isDhtnetError(err) || !err.retryable) throw err
      this.log('debug', `${what}: ${err.message}; retrying once`)
      return this.getLink(peer, options, deadline)
    }
  }

  private async runConnect(peer: PeerRef, name: string, options: ConnectDeviceOptions): Promise<Channel> {
    const what = `connecting to ${peer.hex.slice(0, 16)}… channel "${name.length > 64 ? name.slice(0, 61) + '...' : name}"`
    const deadline = new Deadline(options.timeoutMs ?? this.connectTimeoutMs, what, options.signal, this.closing.signal)
    deadline.onStep = (step, ms) => this.log('debug', `${what}: +${ms.toFixed(0)} ms: ${step}`)
    try {
      let retried = false
      for (;;) {
        let link: PeerLink
        try {
          // On a retry too, a live connection (not the dead one: closed links are gone from the device) or one being
          // set up is shared: the requests of a dead connection retry together on one new connection.
          link = await this.getLink(peer, options, deadline)
        } catch (err) {
          deadline.throwIfAborted()
          if (!retried && isDhtnetError(err) && err.retryable) {
            this.log('debug', `${what}: ${err.message}; retrying once`)
            retried = true
            continue
          }
          throw err
        }
        deadline.step = 'waiting for the peer to accept the channel'
        try {
          const open: Promise<Channel> = options.datagram
            ? link.mux.openDatagramChannel(name, { signal: deadline.signal, timeoutMs: deadline.remainingMs })
            : link.mux.openChannel(name, { signal: deadline.signal, timeoutMs: deadline.remainingMs })
          const channel = await deadline.race(open)
          DeviceRegistry.trackChannel(link, channel)
          this.fireReady(link.peerId, name, channel)
          return channel
        } catch (err) {
          deadline.throwIfAborted()
          const linkDied = link.closed || (isDhtnetError(err) && (err.code === 'CONNECTION_CLOSED' || err.code === 'PEER_UNREACHABLE'))
          if (linkDied && !options.noNewSocket && !retried) {
            this.log('debug', `${what}: the connection died before the channel was accepted; retrying once on a new one`)
            retried = true
            continue
          }
          throw err
        }
      }
    } finally {
      deadline.dispose()
    }
  }

  /** A live link to the peer: existing, being set up, or new. */
  private async getLink(peer: PeerRef, options: ConnectDeviceOptions, deadline: Deadline): Promise<PeerLink> {
    const key = peer.longId ?? peer.hex
    let device = this.devices.get(key)
    // Every check of a device's state and the registration of a new attempt happen in one synchronous stretch, so
    // that concurrent calls see each other's attempt.
    for (;;) {
      const shared = options.forceNewSocket ? undefined : (DeviceRegistry.liveLink(device) ?? device.connecting)
      if (!shared) break
      const link = await this.waitShared(shared, deadline)
      if (link) return link
    }
    if (options.noNewSocket) {
      throw new DhtnetError('NOT_CONNECTED', `no connection to ${peer.hex} and noNewSocket was set`, {
        hint: 'call connectDevice without noNewSocket to open a connection',
      })
    }
    if (peer.chain) return this.newAttempt(device, peer, options, deadline, undefined)
    // Resolve the certificate first so that the device is keyed by its long id. Meanwhile the sessions that need
    // nothing of the peer start (local work only: nothing reaches the peer before its certificate was found and
    // trusted); they are dropped if the lookup fails or finds a shared link.
    deadline.step = 'looking up the peer certificate on the DHT'
    // concurrent calls share one lookup; only the first starts the early sessions (it will make the connection)
    let early: EarlyStart | undefined
    if (!device.lookup) {
      const lookup = this.certificates.find(peer.hex, deadline)
      device.lookup = lookup
      const clear = (): void => {
        if (device.lookup === lookup) device.lookup = undefined
      }
      lookup.then(clear, clear)
      early = this.requester.startEarly(deadline)
    }
    try {
      peer.chain = await deadline.race(device.lookup)
    } catch (err) {
      this.requester.abandon(early)
      // a shared lookup ended by its owner's deadline: ours may still have time for one of our own
      const othersDeadline = !early && !deadline.signal.aborted && isDhtnetError(err) && (err.code === 'TIMEOUT' || err.code === 'ABORTED')
      if (othersDeadline) return this.getLink(peer, options, deadline)
      throw err
    }
    peer.longId = publicKeyIds(peer.chain[0]!).longId
    if (key !== peer.longId) {
      device = this.devices.get(peer.longId)
      for (;;) {
        const shared = options.forceNewSocket ? undefined : (DeviceRegistry.liveLink(device) ?? device.connecting)
        if (!shared) break
        const link = await this.waitShared(shared, deadline).catch((err: unknown) => {
          this.requester.abandon(early)
          throw err
        })
        if (link) {
          this.requester.abandon(early)
          return link
        }
      }
    }
    return this.newAttempt(device, peer, options, deadline, early)
  }

  /** Start a new connection attempt and register it on the device (synchronously: concurrent calls share it). */
  private newAttempt(device: DeviceState, peer: PeerRef, options: ConnectDeviceOptions, deadline: Deadline, early: EarlyStart | undefined): Promise<PeerLink> {
    const attempt = this.requester.connect(peer.longId!, peer.chain!, options.connType ?? '', deadline, early)
    device.connecting = attempt
    const clear = (): void => {
      if (device.connecting === attempt) device.connecting = undefined
    }
    attempt.then(clear, clear)
    return attempt
  }

  /** A live link as is; an attempt in progress once it is up (undefined when it came up closed). */
  private async waitShared(shared: PeerLink | Promise<PeerLink>, deadline: Deadline): Promise<PeerLink | undefined> {
    if (shared instanceof PeerLink) return shared
    deadline.step = 'waiting for the connection being set up'
    const link = await deadline.race(shared)
    return link.closed ? undefined : link
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Incoming DHT values

  private onDhtValue(value: DhtValue, legacy: boolean): void {
    if (this._closed) return
    if (value.userType !== PEER_REQUEST_USER_TYPE || !value.owner) return
    // Only encrypted values addressed to us count (EncryptedValue::getFilter: signed and with a recipient).
    if (!value.recipient || !value.recipient.equals(this.dht.keyId)) return
    let req: PeerConnectionRequest
    try {
      req = decodeRequest(value.data)
    } catch (err) {
      this.log('debug', `ignoring a connection request: ${(err as Error).message}`)
      return
    }
    if (!req.isAnswer && this.clientOnly) return // a client answers nobody
    const signer = createHash('sha256').update(value.owner).digest('hex')
    if (signer === this.identity.longId) return
    if (this.treated.checkAndAdd(signer, req.id)) return
    if (req.isAnswer) {
      this.requester.onAnswer(req, signer)
      return
    }
    this.responder.handle(req, value.owner, signer, legacy).catch((err: unknown) => {
      this.log('debug', `incoming connection ${req.id} from ${signer.slice(0, 16)}… failed: ${(err as Error).message}`)
    })
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Registering connections and channels

  private register(c: NewConnection): PeerLink {
    const peerCert = c.chain[0]!
    const link = new PeerLink(c.id, c.peerId, publicKeyIds(peerCert).id, c.chain, c.initiator, c.connType, c.link, c.mux)
    const device = this.devices.get(c.peerId)
    device.chain ??= [...c.chain]
    device.links.add(link)
    const onChannel = (ch: Channel): void => {
      DeviceRegistry.trackChannel(link, ch)
      this.fireReady(c.peerId, ch.name, ch)
    }
    c.mux.on('channel', onChannel)
    c.mux.on('datagram-channel', onChannel)
    link.once('close', (err?: Error) => {
      device.links.delete(link)
      this.log(err ? 'info' : 'debug', `connection ${c.id} with ${c.peerId.slice(0, 16)}… closed${err ? `: ${err.message}` : ''}`)
      this.emit('connection-closed', link.info(), err)
      this.devices.forgetIfIdle(c.peerId)
    })
    if (this._closed) {
      link.close(new DhtnetError('CONNECTION_CLOSED', 'the connection manager was closed'))
      throw new DhtnetError('ABORTED', 'the connection manager was closed')
    }
    const info = link.info()
    this.log('info', `connected to ${c.peerId.slice(0, 16)}… (${c.initiator ? 'outgoing' : 'incoming'}, ${info.mux} multiplexer, ${info.path})`)
    this.emit('connection', info)
    return link
  }

  /** The application's decision, synchronous when its hook is (a burst of requests then waits for nothing). */
  private decideChannel(peerCert: X509Certificate, name: string): ChannelRequestDecision | Promise<ChannelRequestDecision> {
    const hook = this.channelRequestHook
    if (!hook) return { accept: false, reason: 'no channel handler on this device' }
    const failed = (err: unknown): ChannelRequestDecision => {
      this.log('warn', `onChannelRequest threw: ${errorMessage(err)}`)
      return { accept: false, reason: 'the channel handler failed' }
    }
    try {
      const decision = hook(peerCert, name)
      return decision instanceof Promise ? decision.catch(failed) : decision
    } catch (err) {
      return failed(err)
    }
  }

  private fireReady(peerId: string, name: string, channel: Channel): void {
    try {
      this.connectionReadyHook?.(peerId, name, channel)
    } catch (err) {
      this.log('warn', `onConnectionReady threw: ${(err as Error).message}`)
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Queries and control

  /** true while a connectDevice for that name is in progress (connection set-up or channel request). */
  isConnecting(peer: string, name: string): boolean {
    return this.devices.lookup(peer).some((d) => (d.pendingByName.get(name)?.size ?? 0) > 0)
  }

  /** true when a live connection to the device exists. */
  isConnected(peer: string): boolean {
    return this.devices.lookup(peer).some((d) => DeviceRegistry.liveLink(d) !== undefined)
  }

  /**
   * Close every connection with a device (40/64-hex id) or with every device of an account (the 40-hex id of the
   * issuer CA, as DHTNet's peer URI). Their channels end (quietly: 'close' without 'error'). Returns the number closed.
   */
  closeConnectionsWith(peer: string): number {
    const { hex } = parsePeerId(peer)
    let n = 0
    for (const [key, device] of this.devices.entries()) {
      if (!DeviceRegistry.matches(key, device, hex)) continue
      for (const link of [...device.links]) {
        link.close() // our decision: channels end quietly
        n++
      }
    }
    return n
  }

  /** The network changed: probe every connection now; dead ones close at once (within the probe timeout). */
  connectivityChanged(): void {
    for (const device of this.devices.all()) {
      for (const link of device.links) {
        link.mux.probe().catch(() => {
          // a failed probe closes the multiplexer, and with it the link
        })
      }
    }
  }

  /** Live connections (optionally with one device). */
  connections(peer?: string): ConnectionInfo[] {
    const out: ConnectionInfo[] = []
    for (const device of peer ? this.devices.lookup(peer) : this.devices.all()) {
      for (const link of device.links) if (!link.closed) out.push(link.info())
    }
    return out
  }

  /** Channels of one connection (by its id or ConnectionInfo). */
  channels(connection: string | ConnectionInfo): ChannelInfo[] {
    const id = typeof connection === 'string' ? connection : connection.id
    for (const device of this.devices.all()) {
      for (const link of device.links) if (link.id.toString() === id && !link.closed) return link.mux.channels()
    }
    return []
  }

  /** Counters of incoming requests: handled, dropped by each limit, refused, connected. */
  requestStats(): Readonly<ResponderStats> {
    return { ...this.responder.stats }
  }

  /** Number of live connections. */
  activeConnections(): number {
    let n = 0
    for (const device of this.devices.all()) for (const link of device.links) if (!link.closed) n++
    return n
  }

  // ---------------------------------------------------------------------------------------------------------------

  private get certificates(): PeerCertificates {
    return this.context.certificates
  }

  private context!: ManagerContext

  private makeContext(policy: TransportPolicy): ManagerContext {
    const context: ManagerContext = {
      identity: this.identity,
      dht: this.dht,
      trust: this.options.trust,
      anonymous: this.options.anonymous ?? false,
      log: this.log,
      certificates: new PeerCertificates(this.dht, this.log),
      transports: this.transports,
      policy: this.options.emulateDhtnet ? 'tcp' : policy,
      emulateDhtnet: this.options.emulateDhtnet ?? false,
      chainPem: this.identity.chain.map((c) => c.toString()).join(''),
      connectTimeoutMs: this.connectTimeoutMs,
      closing: this.closing.signal,
      keepaliveIntervalMs: this.options.keepaliveIntervalMs,
      deadPeerTimeoutMs: this.options.deadPeerTimeoutMs,
      decideChannel: (peerCert, name) => this.decideChannel(peerCert, name),
      register: (c) => this.register(c),
      startListening: () => this.startListening(),
    }
    this.context = context
    return context
  }

  private peerRef(idOrCert: PeerSpec): PeerRef {
    if (typeof idOrCert === 'string') {
      const { hex, kind } = parsePeerId(idOrCert)
      if (hex === this.identity.id || hex === this.identity.longId) throw new DhtnetError('BAD_PEER_ID', 'cannot connect to our own device id')
      if (kind === 'longId') return { hex, longId: hex, chain: undefined }
      // A device we already know by its short id is keyed by its long id.
      const known = this.devices.knownByKeyId(hex)
      return { hex, longId: known?.longId, chain: known?.chain }
    }
    const chain = idOrCert instanceof X509Certificate ? [idOrCert] : [...idOrCert]
    if (chain.length === 0 || !(chain[0] instanceof X509Certificate)) throw new DhtnetError('BAD_PEER_ID', 'an empty certificate chain was given')
    const ids = publicKeyIds(chain[0])
    if (ids.longId === this.identity.longId) throw new DhtnetError('BAD_PEER_ID', 'cannot connect to our own device id')
    return { hex: ids.longId, longId: ids.longId, chain }
  }
}
