/**
 * One live connection to a device: an authenticated transport link and the multiplexer running over it.
 * Either side closing, or either layer dying, closes both (and every channel ends with the error).
 */
import { EventEmitter } from 'node:events'
import type { X509Certificate } from 'node:crypto'
import type { Mux, MuxProtocol, StreamChannel } from '../mux/mux.js'
import type { DatagramChannel } from '../mux/native/datagram-channel.js'
import type { Link, TransportName } from '../transport/transport.js'

export interface ConnectionInfo {
  /** Connection id: the request id of the DHT exchange that created it (decimal). */
  id: string
  /** Peer device, 64-hex long id (PkId). */
  peerId: string
  /** Peer device, 40-hex key id. */
  peerKeyId: string
  /** true when we asked for this connection (connectDevice); false when the peer did. */
  initiator: boolean
  /** The transport carrying it: 'ice-tcp' (TLS over ICE-TCP, DHTNet's) or 'webrtc' (DTLS/SCTP over ICE-UDP). */
  transport: TransportName
  /** The multiplexer: 'native' (ours) or 'dhtnet' (DHTNet's MultiplexedSocket, a C++ peer). */
  mux: MuxProtocol
  /** When a side of the selected pair is a TURN relay: the protocol to that relay. */
  relay: 'udp' | 'tcp' | undefined
  /** A one-line description of the path: "ice-tcp host/host 10.0.0.1:4000 → 10.0.0.2:5000", "webrtc relay (UDP) …". */
  path: string
  /** Peer address "ip:port" of the selected pair. */
  remoteAddress: string | undefined
  /** Our address "ip:port" of the selected pair. */
  localAddress: string | undefined
  /** Selected candidate pair type, local/remote: 'host/host', 'srflx/relay', ... */
  candidatePair: string | undefined
  /** Bytes received/sent by the multiplexer (frame headers included). */
  bytesIn: number
  bytesOut: number
  /** Bytes on the wire including the transport's own overhead. */
  wireBytesIn: number
  wireBytesOut: number
  createdAt: number
  ageMs: number
  channels: number
  connType: string
}

export type Channel = StreamChannel | DatagramChannel

/** How long a cleanly closed connection may take to flush and end before its link is torn down. */
const LINK_CLOSE_GRACE_MS = 3000

export class PeerLink extends EventEmitter {
  readonly createdAt = Date.now()
  /** Open channels by name, both directions (the last one opened under a name wins). */
  readonly channelsByName = new Map<string, Channel>()
  private _closed = false

  constructor(
    readonly id: bigint,
    readonly peerId: string,
    readonly peerKeyId: string,
    readonly peerChain: readonly X509Certificate[],
    readonly initiator: boolean,
    readonly connType: string,
    readonly link: Link,
    readonly mux: Mux,
  ) {
    super()
    link.once('close', (err?: Error) => this.close(err))
    mux.once('close', (err?: Error) => this.close(err))
  }

  get closed(): boolean {
    return this._closed
  }

  get peerCertificate(): X509Certificate {
    return this.peerChain[0]!
  }

  /** Close both layers; 'close' (err?) fires once. */
  close(err?: Error): void {
    if (this._closed) return
    this._closed = true
    this.mux.close(err)
    if (err || this.link.closed) this.link.close(err)
    else {
      // a clean close: the multiplexer ends its stream gracefully (what it queued still leaves, then TLS
      // close_notify); the link closes once the peer answers, or after a grace period
      const timer = setTimeout(() => this.link.close(), LINK_CLOSE_GRACE_MS)
      timer.unref()
      this.link.once('close', () => clearTimeout(timer))
    }
    this.emit('close', err)
  }

  info(): ConnectionInfo {
    const path = this.link.path
    const relay = path.relay ? ` relay (${path.relay.toUpperCase()})` : ''
    return {
      id: this.id.toString(),
      peerId: this.peerId,
      peerKeyId: this.peerKeyId,
      initiator: this.initiator,
      transport: this.link.transport,
      mux: this.mux.protocol,
      relay: path.relay,
      path: `${path.transport}${relay} ${path.candidatePair ?? '?'} ${path.localAddress ?? '?'} → ${path.remoteAddress ?? '?'}`,
      remoteAddress: path.remoteAddress,
      localAddress: path.localAddress,
      candidatePair: path.candidatePair,
      bytesIn: this.mux.bytesIn,
      bytesOut: this.mux.bytesOut,
      wireBytesIn: this.link.wireBytesIn,
      wireBytesOut: this.link.wireBytesOut,
      createdAt: this.createdAt,
      ageMs: Date.now() - this.createdAt,
      channels: this.mux.closed ? 0 : this.mux.channels().length,
      connType: this.connType,
    }
  }
}
