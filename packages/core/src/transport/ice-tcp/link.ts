/**
 * The Link an ICE-TCP session resolves with: the TLS socket as the stream, the selected path, wire counters.
 * Nothing has been read from or written to the stream by us after the handshake; the layer above starts its
 * multiplexer on it. close() destroys TLS and the TCP socket; 'close' fires once.
 */
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { X509Certificate } from 'node:crypto'
import type { Link, PathInfo } from '../transport.js'
import type { FramedDuplex } from './framed-duplex.js'
import type { TlsMode } from './tls-link.js'

export class IceTcpLink extends EventEmitter implements Link {
  readonly transport = 'ice-tcp' as const
  private _closed = false

  constructor(
    readonly stream: TLSSocket,
    private readonly raw: Socket,
    private readonly framed: FramedDuplex | undefined,
    readonly path: PathInfo,
    /** 'framed' (C++ peer: one TLS record per RFC 4571 frame) or 'native' (TLS directly on TCP). */
    readonly mode: TlsMode,
    /** The certificate chain the peer presented in TLS, leaf first. */
    readonly peerChain: readonly X509Certificate[],
  ) {
    super()
    stream.once('close', () => this.close())
    raw.once('close', () => this.close())
  }

  get wireBytesIn(): number {
    return this.framed?.wireBytesIn ?? this.raw.bytesRead
  }

  get wireBytesOut(): number {
    return this.framed?.wireBytesOut ?? this.raw.bytesWritten
  }

  get closed(): boolean {
    return this._closed
  }

  close(err?: Error): void {
    if (this._closed) return
    this._closed = true
    this.stream.on('error', () => {})
    this.raw.on('error', () => {})
    this.stream.destroy()
    this.raw.destroy()
    this.emit('close', err)
  }
}
