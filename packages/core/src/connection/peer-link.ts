/**
 * One live connection to a device: a WebRTC peer connection and the multiplexer running over its data channels.
 * Either side closing, or either layer dying, closes both (and every channel ends with the error).
 */
import { EventEmitter } from 'node:events'
import type { X509Certificate } from 'node:crypto'
import type { Multiplexer } from '../mux/native/multiplexer.js'
import type { ChannelSocket } from '../mux/native/channel-socket.js'
import type { DatagramChannel } from '../mux/native/datagram-channel.js'
import type { WebRtcPeer } from '../transport/webrtc/webrtc.js'

export interface ConnectionInfo {
  /** Connection id: the request id of the DHT exchange that created it (decimal). */
  id: string
  /** Peer device, 64-hex long id (PkId). */
  peerId: string
  /** Peer device, 40-hex key id. */
  peerKeyId: string
  /** true when we asked for this connection (connectDevice); false when the peer did. */
  initiator: boolean
  /** Peer address "ip:port" of the selected ICE pair. */
  remoteAddress: string | undefined
  /** Our address "ip:port" of the selected ICE pair. */
  localAddress: string | undefined
  /** Selected candidate pair type, local/remote: 'host/host', 'srflx/relay', ... */
  candidatePair: string | undefined
  /** Bytes received/sent by the multiplexer (frame headers included). */
  bytesIn: number
  bytesOut: number
  /** Bytes on the wire including DTLS/SCTP overhead. */
  wireBytesIn: number
  wireBytesOut: number
  createdAt: number
  ageMs: number
  channels: number
  connType: string
}

export class PeerLink extends EventEmitter {
  readonly createdAt = Date.now()
  /** Open channels by name, both directions (the last one opened under a name wins). */
  readonly channelsByName = new Map<string, ChannelSocket | DatagramChannel>()
  private _closed = false

  constructor(
    readonly id: bigint,
    readonly peerId: string,
    readonly peerKeyId: string,
    readonly peerChain: readonly X509Certificate[],
    readonly initiator: boolean,
    readonly connType: string,
    readonly rtc: WebRtcPeer,
    readonly mux: Multiplexer,
  ) {
    super()
    rtc.once('close', (err?: Error) => this.close(err))
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
    this.rtc.close(err)
    this.emit('close', err)
  }

  info(): ConnectionInfo {
    const pair = this.rtc.selectedCandidatePair()
    const fmt = (c: { address: string; port: number } | undefined) =>
      c ? (c.address.includes(':') ? `[${c.address}]:${c.port}` : `${c.address}:${c.port}`) : undefined
    return {
      id: this.id.toString(),
      peerId: this.peerId,
      peerKeyId: this.peerKeyId,
      initiator: this.initiator,
      remoteAddress: fmt(pair?.remote),
      localAddress: fmt(pair?.local),
      candidatePair: pair?.type,
      bytesIn: this.mux.bytesIn,
      bytesOut: this.mux.bytesOut,
      wireBytesIn: this.rtc.bytesReceived,
      wireBytesOut: this.rtc.bytesSent,
      createdAt: this.createdAt,
      ageMs: Date.now() - this.createdAt,
      channels: this.mux.closed ? 0 : this.mux.channels().length,
      connType: this.connType,
    }
  }
}
