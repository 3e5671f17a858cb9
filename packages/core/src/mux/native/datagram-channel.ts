import { EventEmitter } from 'node:events'
import { DhtnetError } from '../../errors.js'

/** What a datagram channel needs from its multiplexer. Internal. */
export interface DatagramChannelHost {
  /** Hand one datagram to the transport; false when it was dropped (congested or closed). */
  sendDatagram(channel: DatagramChannel, payload: Uint8Array): boolean
  /** Largest payload one datagram may carry. */
  maxDatagramPayload(): number
  /** The application closed the channel: tell the peer and forget it. */
  closeDatagram(channel: DatagramChannel): void
}

/**
 * An unordered, unreliable message channel (no retransmission): for traffic such as VPN packets.
 *
 * Events: 'message' (payload: Buffer) — one datagram; 'close' (err?: Error) — once, with an error when the peer
 * reset the channel or the connection died (no 'error' event: a lost datagram channel is not a crash).
 */
export class DatagramChannel extends EventEmitter {
  readonly name: string
  readonly channelId: number
  readonly initiator: boolean
  readonly createdAt: number
  messagesIn = 0
  messagesOut = 0
  bytesIn = 0
  bytesOut = 0
  /** Datagrams send() dropped because the transport was congested or gone. */
  drops = 0
  private _closed = false
  private readonly host: DatagramChannelHost

  /** @internal created by the Multiplexer only */
  constructor(init: { host: DatagramChannelHost; name: string; channelId: number; initiator: boolean }) {
    super()
    this.host = init.host
    this.name = init.name
    this.channelId = init.channelId
    this.initiator = init.initiator
    this.createdAt = Date.now()
  }

  get closed(): boolean {
    return this._closed
  }

  /** Largest payload send() accepts, in bytes. */
  get maxMessageSize(): number {
    return this.host.maxDatagramPayload()
  }

  /**
   * Send one datagram. Never blocks and never queues beyond the transport's buffer: returns true when the datagram
   * was handed to the transport, false when it was dropped (congestion; counted in `drops`). Delivery is not
   * guaranteed either way. Throws CHANNEL_CLOSED after close and MESSAGE_TOO_LARGE above maxMessageSize.
   */
  send(payload: Uint8Array): boolean {
    if (this._closed) throw new DhtnetError('CHANNEL_CLOSED', `datagram channel "${this.name}" is closed`)
    const max = this.host.maxDatagramPayload()
    if (payload.length > max) {
      throw new DhtnetError('MESSAGE_TOO_LARGE', `datagram of ${payload.length} bytes exceeds the limit of ${max} bytes`, {
        hint: 'split the payload or use a stream channel',
      })
    }
    if (!this.host.sendDatagram(this, payload)) {
      this.drops++
      return false
    }
    this.messagesOut++
    this.bytesOut += payload.length
    return true
  }

  /** Close the channel (the peer's channel emits 'close'). Idempotent. */
  close(): void {
    if (this._closed) return
    this.host.closeDatagram(this)
    this.muxClose(undefined)
  }

  /** @internal a datagram from the peer */
  muxDeliver(payload: Buffer): void {
    if (this._closed) return
    this.messagesIn++
    this.bytesIn += payload.length
    this.emit('message', payload)
  }

  /** @internal the channel ended (peer closed or reset it, or the multiplexer closed) */
  muxClose(err: Error | undefined): void {
    if (this._closed) return
    this._closed = true
    this.emit('close', err)
  }
}
