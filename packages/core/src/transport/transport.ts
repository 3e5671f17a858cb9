import type { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import type { X509Certificate } from 'node:crypto'

/**
 * A message-oriented transport between two peers, as the multiplexer needs it.
 * Over WebRTC it is one data channel: `reliable` ones are ordered and retransmitted, unreliable ones are not.
 *
 * Events:
 *  - 'message' (message: Buffer): one whole message from the peer, boundaries kept.
 *  - 'drain': bufferedAmount went down to the low-water mark; sending may resume.
 *  - 'close' (err?: Error): the transport is gone (err undefined for a clean close). Emitted once.
 */
export interface MessageTransport extends EventEmitter {
  /** true: ordered and reliable; false: unordered, no retransmission (datagrams). */
  readonly reliable: boolean
  /** Largest message `send` accepts, in bytes. */
  readonly maxMessageSize: number
  /** Bytes queued locally and not yet handed to the network. */
  readonly bufferedAmount: number
  /**
   * Queue one message. Returns false when the caller should wait for 'drain' before sending more:
   * the message IS queued, nothing is lost. Throws DhtnetError('TRANSPORT_CLOSED') once closed.
   */
  send(message: Uint8Array): boolean
  /** Close the transport; emits 'close' once. */
  close(err?: Error): void
  readonly closed: boolean
}

// ---------------------------------------------------------------------------------------------------------------
// The transport plug-in interface. A transport turns signalling (a description each side puts in the DHT request
// or answer) into an authenticated Link. The connection layer offers every enabled transport in one request, starts
// the ones both sides share, and keeps the first Link that authenticates (connection/transports.ts).

export type TransportName = 'webrtc' | 'ice-tcp'

/** How a connection reaches the peer: what connections() and --verbose show. */
export interface PathInfo {
  readonly transport: TransportName
  /** Candidate types of the selected pair, local/remote: 'host/host', 'srflx/relay', ... */
  readonly candidatePair?: string | undefined
  /** When a side of the pair is a TURN relay: the protocol between that side and its relay. */
  readonly relay?: 'udp' | 'tcp' | undefined
  /** "ip:port" ([v6]:port) of each end of the selected pair. */
  readonly localAddress?: string | undefined
  readonly remoteAddress?: string | undefined
}

/**
 * An authenticated connection to one device, ready for a multiplexer: either a byte stream (ICE-TCP + TLS) or a
 * pair of message transports (WebRTC data channels). The peer behind it proved it holds the key the connection
 * layer expected; nothing has been sent on it by the layers above yet.
 *
 * Events: 'close' (err?: Error), once.
 */
export interface Link extends EventEmitter {
  readonly transport: TransportName
  /** The path as selected (may be refined once known). */
  readonly path: PathInfo
  /** Byte-stream links: the secured, ordered, reliable stream. */
  readonly stream?: Duplex | undefined
  /** Message links: the reliable, ordered message transport. */
  readonly reliable?: MessageTransport | undefined
  /** Message links: the unreliable, unordered one, when the path has one. */
  readonly datagram?: MessageTransport | undefined
  /** Bytes on the wire, all overheads included. */
  readonly wireBytesIn: number
  readonly wireBytesOut: number
  readonly closed: boolean
  /** Close everything under the link (sockets, ICE, allocations, timers); 'close' fires once. Never throws. */
  close(err?: Error): void
}

/** What a transport session is told when it starts. */
export interface TransportSessionContext {
  /** 'requester' called connectDevice (DHTNet: ICE controlled, TLS server); 'responder' answers the DHT request. */
  readonly role: 'requester' | 'responder'
  /** The connection id of the DHT exchange (request id). */
  readonly connectionId: bigint
  /** The peer's certificate chain (leaf first) as found and trusted by the connection layer: the link must prove the
   *  peer holds the private key of `peerChain[0]`. */
  readonly peerChain: readonly X509Certificate[]
  /** For the responder: the requester's description of this transport. */
  readonly remoteDescription?: string | undefined
  /** true when the peer is one of ours (our signalling extension present): a transport may use faster framings that
   *  a C++ DHTNet peer would not understand. Known at start for the responder; given to connect() for the requester. */
  readonly peerIsNative?: boolean | undefined
  readonly signal: AbortSignal
}

export interface TransportConnectOptions {
  /** The peer's description of this transport (the requester gets it from the answer). */
  readonly remoteDescription?: string | undefined
  /** See TransportSessionContext.peerIsNative (the requester learns it from the answer). */
  readonly peerIsNative?: boolean | undefined
  /** The peer's chain, when the session was started before it was known (it replaces the context's). */
  readonly peerChain?: readonly X509Certificate[] | undefined
  readonly signal: AbortSignal
}

export interface TransportSession {
  /** Our description, to put in the request (requester) or the answer (responder). */
  readonly localDescription: string
  /**
   * Connect and authenticate. The requester gives the peer's description (from the answer); the responder gave it
   * at start. Rejects with a DhtnetError (ICE_FAILED, TLS_FAILED, UNTRUSTED, TIMEOUT, ABORTED, ...).
   */
  connect(options: TransportConnectOptions): Promise<Link>
  /** Give up (a failed or losing attempt): frees every socket, allocation and timer. Idempotent, never throws. */
  close(err?: Error): void
}

export interface Transport {
  readonly name: TransportName
  /** Gather local candidates (and for the responder, read the requester's description); resolves once our
   *  description is ready to be sent. */
  createSession(context: TransportSessionContext): Promise<TransportSession>
  /** Release what the transport holds for all sessions (listening sockets, mappings). */
  close(): Promise<void>
}
