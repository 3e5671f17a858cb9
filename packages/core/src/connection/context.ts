/**
 * What the requester and the responder share with the ConnectionManager that owns them.
 */
import type { X509Certificate } from 'node:crypto'
import type { Identity } from '../identity/types.js'
import type { TrustStore } from '../identity/truststore.js'
import type { SecureDht } from '../dht/secure-dht.js'
import type { Logger } from '../util/log.js'
import type { Link, Transport } from '../transport/transport.js'
import type { ChannelRequestDecision, Mux } from '../mux/mux.js'
import type { PeerCertificates } from './peer-certificates.js'
import type { PeerLink } from './peer-link.js'
import type { TransportPolicy } from './transports.js'

/** The parameters of a new connection, once its link and multiplexer are up. */
export interface NewConnection {
  readonly id: bigint
  readonly peerId: string
  readonly chain: readonly X509Certificate[]
  readonly initiator: boolean
  readonly connType: string
  readonly link: Link
  readonly mux: Mux
}

export interface ManagerContext {
  readonly identity: Identity
  readonly dht: SecureDht
  readonly trust: TrustStore
  readonly anonymous: boolean
  readonly log: Logger
  readonly certificates: PeerCertificates
  /** Every configured transport (the policy picks among them per connection). */
  readonly transports: readonly Transport[]
  readonly policy: TransportPolicy
  /** Speak as a C++ DHTNet device: no signalling extensions, ICE-TCP + TLS and DHTNet's multiplexer only. */
  readonly emulateDhtnet: boolean
  /** Our chain in PEM, sent with our requests. */
  readonly chainPem: string
  readonly connectTimeoutMs: number
  /** Aborted when the manager closes. */
  readonly closing: AbortSignal
  /** Our multiplexer's keepalive settings. */
  readonly keepaliveIntervalMs: number | undefined
  readonly deadPeerTimeoutMs: number | undefined
  /** Decide on a channel the peer opens (the application's hook, guarded). */
  decideChannel(peerCert: X509Certificate, name: string): ChannelRequestDecision | Promise<ChannelRequestDecision>
  /** Register a new live connection (channels, events, device registry). */
  register(connection: NewConnection): PeerLink
  /** Listen at our keys if not done yet (answers to our requests arrive there). */
  startListening(): void
}
