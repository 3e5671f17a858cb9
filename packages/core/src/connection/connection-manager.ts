/**
 * ConnectionManager: authenticated, encrypted, multiplexed connections to devices known only by their public key.
 *
 * Signalling follows DHTNet (reference §2): requests and answers are SecureDht-encrypted values (type 0, user type
 * "peer_request") put at SHA1("peer:" + long id hex) of the recipient; we listen there and at the legacy
 * SHA1("peer:" + 40-hex id). The transport is WebRTC (see transport/README.md); the request and the answer carry a
 * complete SDP, so the DTLS fingerprint travels inside a value signed by the device key: a peer that does not hold
 * the private key of the certificate it claims cannot complete a connection.
 *
 * Trust is decided before any ICE work: the requester's certificate chain (found by the signer's key), the
 * TrustStore (anonymous or CA-restricted, allowed/banned), then the onIceRequest hook.
 */
import { EventEmitter } from 'node:events'
import { X509Certificate, createPublicKey, createHash } from 'node:crypto'
import { DhtnetError, isDhtnetError } from '../errors.js'
import type { Identity } from '../identity/types.js'
import { parsePeerId, publicKeyIds } from '../identity/ids.js'
import type { TrustStore } from '../identity/truststore.js'
import { parseCertificateChain } from '../identity/pem.js'
import { SecureDht, type SecureDhtEngine } from '../dht/secure-dht.js'
import { type DhtValue, ValueType } from '../dht/value.js'
import { certificatesFromValue } from '../dht/crypto.js'
import { Multiplexer, type ChannelInfo, type ChannelRequestDecision } from '../mux/native/multiplexer.js'
import type { ChannelSocket } from '../mux/native/channel-socket.js'
import type { DatagramChannel } from '../mux/native/datagram-channel.js'
import { WebRtcPeer } from '../transport/webrtc/webrtc.js'
import { preloadNative } from '../transport/webrtc/native.js'
import { type IceServerSpec, parseIceServers } from '../transport/webrtc/ice-servers.js'
import { classifyIceMessage } from '../transport/webrtc/sdp.js'
import { type Logger, type LoggerLike, toLogger } from '../util/log.js'
import { Deadline } from '../util/deadline.js'
import type { PortMapper, PortMapping } from '../nat/port-mapper.js'
import { addMappedCandidate, freeUdpPort } from '../nat/mapped-candidate.js'
import { type ConnectionInfo, PeerLink } from './peer-link.js'
import {
  PEER_REQUEST_USER_TYPE,
  type PeerConnectionRequest,
  type RefusalCode,
  TreatedIds,
  decodeRequest,
  encodeRequest,
  newRequestId,
} from './signalling.js'

export type { ConnectionInfo } from './peer-link.js'
export type { ChannelInfo } from '../mux/native/multiplexer.js'

/** What a channel request hook may answer. */
export type ChannelDecision = ChannelRequestDecision

export interface ConnectionManagerOptions {
  identity: Identity
  /** A SecureDht over our identity, or a DHT node (a SecureDht is then built and owned by the manager). */
  dht: SecureDht | SecureDhtEngine
  trust: TrustStore
  /** Accept any well-formed chain whose signatures verify (otherwise it must end at a trusted CA). Default false. */
  anonymous?: boolean
  /** STUN/TURN servers: 'stun:HOST:PORT', 'turn:USER:PASSWORD@HOST:PORT' (TURN over UDP). */
  iceServers?: readonly IceServerSpec[]
  /** Bind ICE to this local address (tests: '127.0.0.1'). Default: every interface. */
  bindAddress?: string
  /** UDP port range for ICE. */
  portRange?: { begin: number; end: number }
  /**
   * UPnP/NAT-PMP fallback: each peer connection is pinned to one free local UDP port, that port is mapped on the
   * gateway, and the mapped address goes into our description as a srflx candidate (so a peer can reach us
   * behind a NAT that does not allow hole punching). A failed mapping is logged and the connect goes on without
   * it. The mapping is removed when the connection closes; the caller owns (and closes) the mapper.
   */
  portMapper?: PortMapper
  /** Default bound of connectDevice and of an incoming handshake (default 30 s). */
  connectTimeoutMs?: number
  /** Multiplexer keepalive: PING after this much silence (default 5 s). */
  keepaliveIntervalMs?: number
  /** A peer silent for this long is dead: every channel ends with PEER_UNREACHABLE (default 20 s). */
  deadPeerTimeoutMs?: number
  /** Do not answer refused requests (the requester then times out instead of learning that we are online). */
  silentRefusals?: boolean
  /** Also listen at the legacy key SHA1("peer:" + 40-hex id) (default true). */
  listenLegacyKey?: boolean
  /** Most incoming handshakes in progress at once; more are refused with BUSY (default 64). */
  maxPendingIncoming?: number
  /** Accept or refuse an incoming connection, after the trust check. Default: accept. */
  onIceRequest?: (peerCert: X509Certificate) => boolean | Promise<boolean>
  /** Accept or refuse a channel the peer opens. Default: decline ("no channel handler"). */
  onChannelRequest?: (peerCert: X509Certificate, name: string) => ChannelDecision | Promise<ChannelDecision>
  /** Every channel that becomes ready, both directions (incoming ones are only reachable through this). */
  onConnectionReady?: (peerId: string, name: string, socket: ChannelSocket | DatagramChannel) => void
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

type Channel = ChannelSocket | DatagramChannel

/** A device: 40-hex id, 64-hex long id, its certificate, or its chain (leaf first). */
export type PeerSpec = string | X509Certificate | readonly X509Certificate[]

interface PendingAnswer {
  peerId: string
  resolve: (req: PeerConnectionRequest) => void
}

interface DeviceState {
  links: Set<PeerLink>
  /** Connection being set up by us, shared by concurrent connectDevice calls. */
  connecting: Promise<PeerLink> | undefined
  /** Pending connectDevice calls by channel name (isConnecting, uniqueName). */
  pendingByName: Map<string, Set<Promise<Channel>>>
  chain: X509Certificate[] | undefined
}

/** An offer created while the peer's certificate is looked up (see getLink). */
interface EarlyOffer {
  rtc: WebRtcPeer
  offer: Promise<string>
}

interface PeerRef {
  /** 64-hex when known, else undefined until the certificate is found. */
  longId: string | undefined
  keyId: string | undefined
  /** The id as given (either form). */
  hex: string
  chain: X509Certificate[] | undefined
}

/** After publishing our answer, wait this long before our own connectivity checks (see WebRtcPeer.startChecks). */
const ANSWERER_CHECKS_DELAY_MS = 150

function sha1Bytes(data: Buffer): Buffer {
  return createHash('sha1').update(data).digest()
}

const REFUSAL_MESSAGES: Record<RefusalCode, string> = {
  REFUSED: 'the peer refused the connection',
  UNTRUSTED: 'the peer does not trust our certificate',
  CERT_NOT_FOUND: 'the peer could not find our certificate on the DHT',
  UNSUPPORTED_TRANSPORT: 'the peer does not speak our transport',
  BUSY: 'the peer is busy with too many incoming connections',
}

export class ConnectionManager extends EventEmitter {
  readonly identity: Identity
  readonly dht: SecureDht
  private readonly ownsDht: boolean
  private readonly trust: TrustStore
  private readonly options: ConnectionManagerOptions
  private readonly log: Logger
  private readonly connectTimeoutMs: number
  private readonly devices = new Map<string, DeviceState>()
  private readonly pendingAnswers = new Map<string, PendingAnswer>()
  private readonly treated = new TreatedIds()
  private readonly incoming = new Set<WebRtcPeer>()
  private readonly outgoingRtc = new Set<WebRtcPeer>()
  private readonly listens: Array<{ cancel(): void }> = []
  private readonly closing = new AbortController()
  /** Peer connection → its port mapping (resolves undefined when mapping failed); see options.portMapper. */
  private readonly portMappings = new WeakMap<WebRtcPeer, Promise<PortMapping | undefined>>()
  private iceRequestHook: ConnectionManagerOptions['onIceRequest']
  private channelRequestHook: ConnectionManagerOptions['onChannelRequest']
  private connectionReadyHook: ConnectionManagerOptions['onConnectionReady']
  private started = false
  private published = false
  private _closed = false

  /** Our chain in PEM, sent with our requests. */
  private readonly chainPem: string

  constructor(options: ConnectionManagerOptions) {
    super()
    if (!options?.identity) throw new DhtnetError('INVALID_ARGUMENT', 'ConnectionManager needs an identity')
    if (!options.dht) throw new DhtnetError('INVALID_ARGUMENT', 'ConnectionManager needs a DHT (SecureDht or DhtNode)')
    if (!options.trust) throw new DhtnetError('INVALID_ARGUMENT', 'ConnectionManager needs a TrustStore')
    parseIceServers(options.iceServers) // fail early on a bad ICE server
    this.options = options
    this.identity = options.identity
    this.trust = options.trust
    this.log = toLogger(options.logger)
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
    this.chainPem = options.identity.chain.map((c) => c.toString()).join('')
    this.iceRequestHook = options.onIceRequest
    this.channelRequestHook = options.onChannelRequest
    this.connectionReadyHook = options.onConnectionReady
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
   */
  async start(options: { publishTimeoutMs?: number; clientOnly?: boolean } = {}): Promise<void> {
    if (this._closed) throw new DhtnetError('CLOSED', 'the connection manager is closed')
    if (!options.clientOnly) this.startListening()
    // Incoming requests need the WebRTC library: load it while the publication below waits for the network.
    preloadNative()
    if (this.published) return
    this.published = true
    if (options.clientOnly) {
      // A client that only connects out: its requests carry its certificate, so nothing waits for the publication
      // (it runs in the background), and it listens from its first connectDevice (see connectNew).
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
    if (this.started || this._closed) return
    this.started = true
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
    const closed = new DhtnetError('CONNECTION_CLOSED', 'the connection manager was closed')
    const waits: Promise<void>[] = []
    for (const device of this.devices.values()) {
      for (const link of device.links) {
        waits.push(new Promise<void>((resolve) => link.rtc.once('close', () => resolve())))
        // Our own decision: channels end quietly (no 'error' for handlers that do not expect one).
        link.close()
      }
    }
    for (const rtc of [...this.incoming, ...this.outgoingRtc]) rtc.close(closed)
    this.devices.clear()
    this.pendingAnswers.clear()
    if (this.ownsDht) this.dht.close()
    await Promise.all(waits)
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Connecting

  /**
   * A channel to a device, by 40-hex id, 64-hex long id, or certificate. Shares the live connection to the device
   * (a new channel costs one round trip) or the one being set up. If the connection dies before the channel is
   * accepted, the request is retried once on a new connection (not with noNewSocket).
   * Rejects with a DhtnetError: BAD_PEER_ID, CERT_NOT_FOUND, UNTRUSTED, PEER_NOT_FOUND, REFUSED, ICE_FAILED,
   * UNSUPPORTED_TRANSPORT, CHANNEL_DECLINED, NOT_CONNECTED, TIMEOUT, ABORTED.
   */
  connectDevice(idOrCert: PeerSpec, name: string, options: ConnectDeviceOptions & { datagram: true }): Promise<DatagramChannel>
  connectDevice(idOrCert: PeerSpec, name: string, options?: ConnectDeviceOptions & { datagram?: false }): Promise<ChannelSocket>
  connectDevice(idOrCert: PeerSpec, name: string, options?: ConnectDeviceOptions): Promise<Channel>
  connectDevice(idOrCert: PeerSpec, name: string, options: ConnectDeviceOptions = {}): Promise<Channel> {
    let peer: PeerRef
    try {
      if (this._closed) throw new DhtnetError('ABORTED', 'the connection manager is closed')
      peer = this.peerRef(idOrCert)
      if (typeof name !== 'string') throw new DhtnetError('BAD_CHANNEL_NAME', 'the channel name must be a string')
    } catch (err) {
      return Promise.reject(err)
    }
    preloadNative()
    const deviceKey = peer.longId ?? peer.hex
    const device = this.device(deviceKey)
    if (options.uniqueName) {
      const existing = this.findChannel(device, name)
      if (existing) return Promise.resolve(existing)
      const pending = device.pendingByName.get(name)
      if (pending && pending.size > 0) return [...pending][0]!
    }
    const op = this.runConnect(peer, name, options)
    let set = device.pendingByName.get(name)
    if (!set) device.pendingByName.set(name, (set = new Set()))
    set.add(op)
    const forget = () => {
      const s = device.pendingByName.get(name)
      s?.delete(op)
      if (s && s.size === 0) device.pendingByName.delete(name)
      this.maybeForgetDevice(deviceKey)
    }
    op.then(forget, forget)
    return op
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
          if (!retried && (err as { transient?: boolean }).transient) {
            this.log('debug', `${what}: ${(err as Error).message}; retrying once`)
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
          this.trackChannel(link, channel)
          this.fireReady(link.peerId, name, channel)
          return channel
        } catch (err) {
          deadline.throwIfAborted()
          const linkDied = link.closed || (isDhtnetError(err) && ['CONNECTION_CLOSED', 'PEER_UNREACHABLE'].includes(err.code))
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
    let device = this.device(key)
    if (!options.forceNewSocket) {
      const live = this.liveLink(device)
      if (live) return live
      if (device.connecting) {
        deadline.step = 'waiting for the connection being set up'
        const link = await deadline.race(device.connecting)
        if (!link.closed) return link
      }
    }
    if (options.noNewSocket) {
      throw new DhtnetError('NOT_CONNECTED', `no connection to ${peer.hex} and noNewSocket was set`, {
        hint: 'call connectDevice without noNewSocket to open a connection',
      })
    }
    // Resolve the certificate first so that the device is keyed by its long id. Meanwhile our offer is created
    // (WebRTC library, peer connection, local candidates): local work only, nothing reaches the peer before its
    // certificate was found and trusted (connectNew); the offer is dropped if the lookup fails or finds a shared link.
    let early: EarlyOffer | undefined
    if (!peer.chain) {
      deadline.step = 'looking up the peer certificate on the DHT'
      const lookup = this.findPeerCertificate(peer, deadline)
      lookup.catch(() => {})
      try {
        early = await this.earlyOffer(peer.hex, deadline)
        peer.chain = await lookup
      } catch (err) {
        early?.rtc.close()
        throw err
      }
      const ids = publicKeyIds(peer.chain[0]!)
      peer.longId = ids.longId
      peer.keyId = ids.id
      if (key !== peer.longId) {
        device = this.device(peer.longId)
        if (!options.forceNewSocket) {
          const live = this.liveLink(device)
          if (live || device.connecting) early?.rtc.close()
          if (live) return live
          if (device.connecting) {
            deadline.step = 'waiting for the connection being set up'
            const link = await deadline.race(device.connecting)
            if (!link.closed) return link
          }
        }
      }
    }
    const attempt = this.connectNew(peer, options.connType ?? '', deadline, early)
    device.connecting = attempt
    const clear = () => {
      if (device.connecting === attempt) device.connecting = undefined
    }
    attempt.then(clear, clear)
    return attempt
  }

  private async findPeerCertificate(peer: PeerRef, deadline: Deadline): Promise<X509Certificate[]> {
    let chain: X509Certificate[] | null
    try {
      chain = await deadline.race(this.lookupCertificate(peer.hex, deadline.signal))
    } catch (err) {
      if (isDhtnetError(err) && (err.code === 'TIMEOUT' || err.code === 'ABORTED')) throw err
      throw new DhtnetError('PEER_NOT_FOUND', `looking up the certificate of ${peer.hex} on the DHT failed: ${(err as Error).message}`, {
        cause: err,
        hint: 'check the DHT bootstrap: the node must be connected to the network the peer uses',
      })
    }
    deadline.throwIfAborted()
    if (!chain || chain.length === 0) {
      throw new DhtnetError('CERT_NOT_FOUND', `no certificate found on the DHT for ${peer.hex}`, {
        hint: 'the device must be online (it publishes its certificate when it starts), and the id must be right',
      })
    }
    return chain
  }

  /**
   * SecureDht.findCertificate, raced with a listen at the same key that resolves on the first matching certificate:
   * a DHT get only resolves once its search finished, which on a network with departed nodes means waiting for
   * their timeouts (measured: ~0.6 s), while the first storage node usually answers in a few ms.
   */
  private async lookupCertificate(hex: string, signal: AbortSignal): Promise<X509Certificate[] | null> {
    const { kind } = parsePeerId(hex)
    const where = kind === 'longId' ? sha1Bytes(Buffer.from(hex, 'hex')) : Buffer.from(hex, 'hex')
    const stop = new AbortController()
    const both = AbortSignal.any([signal, stop.signal])
    let listen: { cancel(): void } | undefined
    const early = new Promise<X509Certificate[]>((resolve) => {
      listen = this.dht.listen(where, (values, expired) => {
        if (expired) return
        for (const v of values) {
          if (v.type !== ValueType.CERTIFICATE) continue
          try {
            const chain = certificatesFromValue(v)
            const ids = publicKeyIds(chain[0]!)
            if ((kind === 'longId' ? ids.longId : ids.id) !== hex) continue
            this.dht.registerCertificate(chain)
            resolve(chain)
            return
          } catch {
            // malformed: keep listening
          }
        }
      })
    })
    try {
      return await Promise.race([early, this.dht.findCertificate(hex, { signal: both })])
    } finally {
      stop.abort()
      listen?.cancel()
    }
  }

  /**
   * Our offer, started now (the peer connection is created on the next turn of the event loop, so that a DHT
   * lookup started just before has sent its requests: loading the WebRTC library then overlaps the network wait).
   */
  private async earlyOffer(hex: string, deadline: Deadline): Promise<EarlyOffer> {
    await new Promise<void>((resolve) => setImmediate(resolve))
    deadline.throwIfAborted()
    if (this._closed) throw new DhtnetError('ABORTED', 'the connection manager is closed')
    const rtc = await this.newPeer('offerer', hex)
    this.outgoingRtc.add(rtc)
    rtc.once('close', () => this.outgoingRtc.delete(rtc))
    const offer = this.withMappedCandidate(rtc, rtc.createOffer({ signal: deadline.signal }))
    offer.catch(() => {})
    return { rtc, offer }
  }

  /** A new connection as the requester (offerer): trust check, request, answer, ICE/DTLS, multiplexer. */
  private async connectNew(peer: PeerRef, connType: string, deadline: Deadline, early?: EarlyOffer): Promise<PeerLink> {
    const chain = peer.chain!
    const peerCert = chain[0]!
    const peerId = peer.longId!
    try {
      if (peerId === this.identity.longId) throw new DhtnetError('BAD_PEER_ID', 'cannot connect to our own device id')
      const verdict = this.trust.verify(chain, { anonymous: this.options.anonymous ?? false })
      if (!verdict.ok) {
        throw new DhtnetError('UNTRUSTED', `refusing to connect to ${peer.hex}: ${verdict.reason} (${verdict.code})`, {
          hint: this.options.anonymous ? undefined : 'trust the peer\'s CA, allow the peer, or run in anonymous mode',
        })
      }
    } catch (err) {
      early?.rtc.close()
      throw err
    }
    deadline.step = 'gathering ICE candidates'
    const rtc = early?.rtc ?? (await this.newPeer('offerer', peerId))
    this.outgoingRtc.add(rtc)
    const id = newRequestId()
    const answerKey = id.toString()
    try {
      const offer = await deadline.race(early?.offer ?? this.withMappedCandidate(rtc, rtc.createOffer({ signal: deadline.signal })))
      let resolveAnswer!: (req: PeerConnectionRequest) => void
      const answered = new Promise<PeerConnectionRequest>((resolve) => (resolveAnswer = resolve))
      this.pendingAnswers.set(answerKey, { peerId, resolve: resolveAnswer })
      // Listening starts here at the latest (answers arrive at our keys; a listen also returns what is already
      // stored). Not earlier when not started: the values of earlier runs stored at our keys (answers to previous
      // requests, 10 min) each cost an RSA decryption; here they are decrypted while we wait for the peer's answer
      // instead of delaying the certificate lookup.
      this.startListening()
      deadline.step = 'publishing the request on the DHT'
      // The answer may come before the put completes (a put also waits for slow or dead storage nodes).
      const put = this.dht
        .putEncrypted(
          SecureDht.peerKey(peerId),
          peerCert,
          {
            data: encodeRequest({ id, iceMsg: offer, isAnswer: false, connType, certificate: this.chainPem }),
            userType: PEER_REQUEST_USER_TYPE,
            ...(connType ? { pushType: connType } : {}),
          },
          { signal: deadline.signal },
        )
        .then(
          (r) => ({ put: r.ok, error: undefined as unknown }),
          (error: unknown) => ({ put: false, error }),
        )
      const first = await deadline.race(Promise.race([answered.then((answer) => ({ answer })), put]))
      deadline.step = 'waiting for the answer on the DHT (no answer yet: the peer may be offline)'
      let answer: PeerConnectionRequest
      if ('answer' in first) answer = first.answer
      else {
        if (!first.put) {
          deadline.throwIfAborted()
          throw new DhtnetError(
            'PEER_NOT_FOUND',
            `the connection request to ${peer.hex} could not be stored on the DHT (${first.error ? (first.error as Error).message : 'no node accepted it'})`,
            { hint: 'check the DHT bootstrap and that the node is connected', cause: first.error },
          )
        }
        answer = await deadline.race(answered)
      }
      if (answer.refused) {
        const code = answer.refused === 'BUSY' ? 'REFUSED' : answer.refused
        throw new DhtnetError(code, `${peer.hex}: ${REFUSAL_MESSAGES[answer.refused]}`, {
          hint: answer.refused === 'UNTRUSTED' ? 'the peer must trust our CA (or run anonymous)' : undefined,
        })
      }
      const kind = classifyIceMessage(answer.iceMsg)
      if (kind !== 'sdp') {
        throw new DhtnetError(
          'UNSUPPORTED_TRANSPORT',
          kind === 'dhtnet-ice'
            ? `${peer.hex} runs DHTNet's TLS-over-ICE-TCP transport, which this implementation does not speak`
            : `${peer.hex} answered with an ICE message that is not a WebRTC session description`,
          { hint: 'connect to a peer running DHTNet for Node' },
        )
      }
      rtc.acceptAnswer(answer.iceMsg)
      deadline.step = 'ICE connectivity checks and the DTLS handshake'
      await deadline.race(rtc.waitConnected({ signal: deadline.signal }))
      return this.addLink(id, peerId, chain, true, connType, rtc)
    } catch (err) {
      rtc.close(isDhtnetError(err) ? err : undefined)
      throw err
    } finally {
      this.pendingAnswers.delete(answerKey)
      this.outgoingRtc.delete(rtc)
    }
  }

  private async newPeer(role: 'offerer' | 'answerer', peerId: string): Promise<WebRtcPeer> {
    const mapper = this.options.portMapper
    // With a port mapper: one known local port, so that it can be mapped (libjuice uses one socket per agent).
    let port: number | undefined
    if (mapper) {
      try {
        port = await freeUdpPort(this.options.bindAddress)
      } catch (err) {
        this.log('warn', `UPnP: no free local UDP port to map (${(err as Error).message}); connecting without a mapping`)
      }
    }
    const rtc = new WebRtcPeer({
      role,
      iceServers: this.options.iceServers,
      bindAddress: this.options.bindAddress,
      portRange: port !== undefined ? { begin: port, end: port } : this.options.portRange,
      logger: this.log,
      name: `${role === 'offerer' ? 'to' : 'from'}-${peerId.slice(0, 8)}`,
    })
    if (mapper && port !== undefined) {
      const mapped = port
      const mapping = mapper.mapUdp(mapped, { signal: this.closing.signal }).then(
        (m) => m,
        (err: unknown) => {
          this.log('info', `UPnP: no mapping for ${rtc.name} (${isDhtnetError(err) ? `${err.code}: ` : ''}${(err as Error).message}); connecting without it`)
          return undefined
        },
      )
      this.portMappings.set(rtc, mapping)
      rtc.once('close', () => {
        void mapping.then((m) => (m ? mapper.unmapUdp(mapped) : undefined))
      })
    }
    return rtc
  }

  /** Our description, plus the srflx candidate of the connection's port mapping when there is one. */
  private async withMappedCandidate(rtc: WebRtcPeer, description: Promise<string>): Promise<string> {
    const mapping = this.portMappings.get(rtc)
    if (!mapping) return description
    const [sdp, m] = await Promise.all([description, mapping])
    return m ? addMappedCandidate(sdp, m) : sdp
  }

  /** Wrap a connected peer connection into a multiplexed link and register it. */
  private addLink(id: bigint, peerId: string, chain: X509Certificate[], initiator: boolean, connType: string, rtc: WebRtcPeer): PeerLink {
    const peerCert = chain[0]!
    const mux = new Multiplexer({
      reliable: rtc.reliable,
      datagram: rtc.datagram,
      initiator,
      keepaliveIntervalMs: this.options.keepaliveIntervalMs,
      deadPeerTimeoutMs: this.options.deadPeerTimeoutMs,
      sendHighWaterBytes: 1024 * 1024,
      onChannelRequest: (name) => this.decideChannel(peerCert, name),
      logger: {
        debug: (m) => this.log('debug', m),
        info: (m) => this.log('info', m),
        warn: (m) => this.log('warn', m),
        error: (m) => this.log('error', m),
      },
    })
    const link = new PeerLink(id, peerId, publicKeyIds(peerCert).id, chain, initiator, connType, rtc, mux)
    const device = this.device(peerId)
    device.chain ??= chain
    device.links.add(link)
    mux.on('channel', (ch: ChannelSocket) => {
      this.trackChannel(link, ch)
      this.fireReady(peerId, ch.name, ch)
    })
    mux.on('datagram-channel', (ch: DatagramChannel) => {
      this.trackChannel(link, ch)
      this.fireReady(peerId, ch.name, ch)
    })
    link.once('close', (err?: Error) => {
      device.links.delete(link)
      this.log(err ? 'info' : 'debug', `connection ${id} with ${peerId.slice(0, 16)}… closed${err ? `: ${err.message}` : ''}`)
      this.emit('connection-closed', link.info(), err)
      this.maybeForgetDevice(peerId)
    })
    if (this._closed) {
      link.close(new DhtnetError('CONNECTION_CLOSED', 'the connection manager was closed'))
      throw new DhtnetError('ABORTED', 'the connection manager was closed')
    }
    const info = link.info()
    this.log('info', `connected to ${peerId.slice(0, 16)}… (${initiator ? 'outgoing' : 'incoming'}, ${info.candidatePair ?? '?'} ${info.remoteAddress ?? ''})`)
    this.emit('connection', info)
    return link
  }

  private async decideChannel(peerCert: X509Certificate, name: string): Promise<ChannelRequestDecision> {
    const hook = this.channelRequestHook
    if (!hook) return { accept: false, reason: 'no channel handler on this device' }
    try {
      return await hook(peerCert, name)
    } catch (err) {
      this.log('warn', `onChannelRequest threw: ${(err as Error).message}`)
      return { accept: false, reason: 'the channel handler failed' }
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
    const signer = createHash('sha256').update(value.owner).digest('hex')
    if (signer === this.identity.longId) return
    if (this.treated.checkAndAdd(signer, req.id)) return
    if (req.isAnswer) {
      const pending = this.pendingAnswers.get(req.id.toString())
      if (!pending) {
        this.log('debug', `ignoring an answer ${req.id} nobody waits for`)
        return
      }
      if (pending.peerId !== signer) {
        this.log('warn', `ignoring an answer ${req.id} signed by ${signer.slice(0, 16)}…, not by the device we asked`)
        return
      }
      pending.resolve(req)
      return
    }
    this.handleRequest(req, value.owner, signer, legacy).catch((err: unknown) => {
      this.log('debug', `incoming connection ${req.id} from ${signer.slice(0, 16)}… failed: ${(err as Error).message}`)
    })
  }

  private async handleRequest(req: PeerConnectionRequest, owner: Buffer, signer: string, legacy: boolean): Promise<void> {
    const ownerIds = publicKeyIds(owner)
    const replyKey = SecureDht.peerKey(legacy ? ownerIds.id : ownerIds.longId)
    const ownerKey = createPublicKey({ key: owner, format: 'der', type: 'spki' })
    const deadline = new Deadline(this.connectTimeoutMs, `incoming connection from ${signer.slice(0, 16)}…`, undefined, this.closing.signal)
    deadline.onStep = (step, ms) => this.log('debug', `incoming ${req.id}: +${ms.toFixed(0)} ms: ${step}`)
    const refuse = async (code: RefusalCode, why: string): Promise<void> => {
      this.log('info', `refused a connection from ${ownerIds.id}: ${why}`)
      if (this.options.silentRefusals) return
      try {
        await deadline.race(
          this.dht.putEncrypted(
            replyKey,
            ownerKey,
            { data: encodeRequest({ id: req.id, iceMsg: '', isAnswer: true, connType: '', refused: code }), userType: PEER_REQUEST_USER_TYPE },
            { signal: deadline.signal },
          ),
        )
      } catch (err) {
        this.log('debug', `sending the refusal failed: ${(err as Error).message}`)
      }
    }
    try {
      if (this.incoming.size >= (this.options.maxPendingIncoming ?? 64)) return await refuse('BUSY', 'too many incoming handshakes in progress')
      deadline.step = 'looking up the requester certificate'
      let chain: X509Certificate[] | null = this.chainFromRequest(req, signer)
      if (!chain) {
        try {
          chain = await deadline.race(this.dht.findCertificate(signer, { signal: deadline.signal }))
        } catch (err) {
          if (isDhtnetError(err) && err.code === 'ABORTED') return
        }
      }
      if (!chain || chain.length === 0) return await refuse('CERT_NOT_FOUND', 'its certificate was not found on the DHT')
      if (!publicKeyIds(chain[0]!).longId || publicKeyIds(chain[0]!).longId !== signer) {
        return await refuse('UNTRUSTED', 'the certificate found does not match the signing key')
      }
      const verdict = this.trust.verify(chain, { anonymous: this.options.anonymous ?? false })
      if (!verdict.ok) return await refuse('UNTRUSTED', `${verdict.reason} (${verdict.code})`)
      const hook = this.iceRequestHook
      if (hook) {
        let ok = false
        try {
          ok = await deadline.race(Promise.resolve(hook(chain[0]!)))
        } catch (err) {
          this.log('warn', `onIceRequest failed: ${(err as Error).message}`)
        }
        if (!ok) return await refuse('REFUSED', 'onIceRequest declined it')
      }
      const kind = classifyIceMessage(req.iceMsg)
      if (kind !== 'sdp') {
        return await refuse(
          'UNSUPPORTED_TRANSPORT',
          kind === 'dhtnet-ice' ? "it runs DHTNet's TLS-over-ICE-TCP transport, which this implementation does not speak" : 'its ICE message is not a WebRTC session description',
        )
      }
      deadline.step = 'gathering ICE candidates'
      const rtc = await this.newPeer('answerer', signer)
      this.incoming.add(rtc)
      try {
        const answer = await deadline.race(this.withMappedCandidate(rtc, rtc.createAnswer(req.iceMsg, { signal: deadline.signal })))
        deadline.step = 'publishing the answer on the DHT'
        // Not awaited: the requester gets the answer through its listen as soon as one storage node has it, while
        // the put itself may wait for slow or dead nodes. A lost answer shows up as a timeout on its side.
        this.dht
          .putEncrypted(
            replyKey,
            ownerKey,
            { data: encodeRequest({ id: req.id, iceMsg: answer, isAnswer: true, connType: '' }), userType: PEER_REQUEST_USER_TYPE },
            { signal: deadline.signal },
          )
          .then(
            (r) => {
              if (!r.ok) this.log('warn', `the answer to ${ownerIds.id} could not be stored on the DHT`)
            },
            (err: unknown) => this.log('debug', `publishing the answer to ${ownerIds.id} failed: ${(err as Error).message}`),
          )
        // Our own checks start once the answer had time to reach the requester (see WebRtcPeer.startChecks);
        // until then the requester's checks reach us and are answered, so on loopback or an open network nothing
        // waits for this; behind NATs it delays the hole punching by this much.
        setTimeout(() => rtc.startChecks(), ANSWERER_CHECKS_DELAY_MS).unref()
        deadline.step = 'ICE connectivity checks and the DTLS handshake'
        await deadline.race(rtc.waitConnected({ signal: deadline.signal }))
        this.addLink(req.id, signer, chain, false, req.connType, rtc)
      } catch (err) {
        rtc.close(isDhtnetError(err) ? err : undefined)
        throw err
      } finally {
        this.incoming.delete(rtc)
      }
    } finally {
      deadline.dispose()
    }
  }

  /** The chain a request carries, when it parses and its leaf key is the signer's; null otherwise. */
  private chainFromRequest(req: PeerConnectionRequest, signer: string): X509Certificate[] | null {
    if (!req.certificate) return null
    try {
      const chain = parseCertificateChain(req.certificate, 'the certificate in a connection request')
      if (chain.length === 0 || chain.length > 8 || publicKeyIds(chain[0]!).longId !== signer) return null
      this.dht.registerCertificate(chain)
      return chain
    } catch (err) {
      this.log('debug', `ignoring the certificate of a request: ${(err as Error).message}`)
      return null
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Queries and control

  /** true while a connectDevice for that name is in progress (connection set-up or channel request). */
  isConnecting(peer: string, name: string): boolean {
    return this.lookupDevices(peer).some((d) => (d.pendingByName.get(name)?.size ?? 0) > 0)
  }

  /** true when a live connection to the device exists. */
  isConnected(peer: string): boolean {
    return this.lookupDevices(peer).some((d) => this.liveLink(d) !== undefined)
  }

  /**
   * Close every connection with a device (40/64-hex id) or with every device of an account (the 40-hex id of the
   * issuer CA, as DHTNet's peer URI). Their channels end (quietly: 'close' without 'error'). Returns the number closed.
   */
  closeConnectionsWith(peer: string): number {
    const { hex } = parsePeerId(peer)
    let n = 0
    for (const [key, device] of [...this.devices]) {
      const chain = device.chain
      const ids = chain ? publicKeyIds(chain[0]!) : undefined
      const issuer = chain && chain.length > 1 ? publicKeyIds(chain[1]!) : undefined
      const match = key === hex || ids?.id === hex || ids?.longId === hex || issuer?.id === hex || issuer?.longId === hex
      if (!match) continue
      for (const link of [...device.links]) {
        link.close() // our decision: channels end quietly
        n++
      }
    }
    return n
  }

  /** The network changed: probe every connection now; dead ones close at once (within the probe timeout). */
  connectivityChanged(): void {
    for (const device of this.devices.values()) {
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
    for (const device of peer ? this.lookupDevices(peer) : this.devices.values()) {
      for (const link of device.links) if (!link.closed) out.push(link.info())
    }
    return out
  }

  /** Channels of one connection (by its id or ConnectionInfo). */
  channels(connection: string | ConnectionInfo): ChannelInfo[] {
    const id = typeof connection === 'string' ? connection : connection.id
    for (const device of this.devices.values()) {
      for (const link of device.links) if (link.id.toString() === id && !link.closed) return link.mux.channels()
    }
    return []
  }

  /** Number of live connections. */
  activeConnections(): number {
    let n = 0
    for (const device of this.devices.values()) for (const link of device.links) if (!link.closed) n++
    return n
  }

  // ---------------------------------------------------------------------------------------------------------------

  private peerRef(idOrCert: PeerSpec): PeerRef {
    if (typeof idOrCert === 'string') {
      const { hex, kind } = parsePeerId(idOrCert)
      if (hex === this.identity.id || hex === this.identity.longId) throw new DhtnetError('BAD_PEER_ID', 'cannot connect to our own device id')
      // A device we already know by its short id is keyed by its long id.
      let longId = kind === 'longId' ? hex : undefined
      let chain: X509Certificate[] | undefined
      if (!longId) {
        for (const [key, device] of this.devices) {
          if (device.chain && publicKeyIds(device.chain[0]!).id === hex) {
            longId = key
            chain = device.chain
            break
          }
        }
      }
      return { hex, longId, keyId: kind === 'id' ? hex : undefined, chain }
    }
    const chain = idOrCert instanceof X509Certificate ? [idOrCert] : [...idOrCert]
    if (chain.length === 0 || !(chain[0] instanceof X509Certificate)) throw new DhtnetError('BAD_PEER_ID', 'an empty certificate chain was given')
    const ids = publicKeyIds(chain[0])
    if (ids.longId === this.identity.longId) throw new DhtnetError('BAD_PEER_ID', 'cannot connect to our own device id')
    return { hex: ids.longId, longId: ids.longId, keyId: ids.id, chain }
  }

  private device(key: string): DeviceState {
    let d = this.devices.get(key)
    if (!d) {
      d = { links: new Set(), connecting: undefined, pendingByName: new Map(), chain: undefined }
      this.devices.set(key, d)
    }
    return d
  }

  /** Every device entry for a peer id (either form): the one keyed by its long id, and a placeholder keyed by the
   *  40-hex id while its certificate is being looked up. */
  private lookupDevices(peer: string): DeviceState[] {
    const { hex } = parsePeerId(peer)
    const out: DeviceState[] = []
    for (const [key, device] of this.devices) {
      if (key === hex) out.push(device)
      else if (device.chain) {
        const ids = publicKeyIds(device.chain[0]!)
        if (ids.id === hex || ids.longId === hex) out.push(device)
      }
    }
    return out
  }

  private maybeForgetDevice(key: string): void {
    const d = this.devices.get(key)
    if (d && d.links.size === 0 && !d.connecting && d.pendingByName.size === 0) this.devices.delete(key)
  }

  private liveLink(device: DeviceState): PeerLink | undefined {
    // The oldest live connection, as DHTNet's getConnectedInfo (first in id order).
    for (const link of device.links) if (!link.closed) return link
    return undefined
  }

  /** Remember a channel by name (uniqueName looks channels up in both directions, as DHTNet does). */
  private trackChannel(link: PeerLink, channel: Channel): void {
    link.channelsByName.set(channel.name, channel)
    channel.once('close', () => {
      if (link.channelsByName.get(channel.name) === channel) link.channelsByName.delete(channel.name)
    })
  }

  private findChannel(device: DeviceState, name: string): Channel | undefined {
    for (const link of device.links) {
      if (link.closed) continue
      const found = link.channelsByName.get(name)
      if (found) return found
    }
    return undefined
  }
}
