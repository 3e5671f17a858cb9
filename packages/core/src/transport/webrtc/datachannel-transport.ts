/**
 * A node-datachannel DataChannel as a MessageTransport, with real flow control.
 *
 * `sendMessageBinary` returning false means "queued", not "failed" (node-datachannel's own DataChannelStream gets
 * this wrong): every accepted message is kept by the native SCTP send queue. We report back-pressure ourselves:
 * `send` returns false once `bufferedAmount()` reaches the high-water mark, and 'drain' fires when the native
 * `onBufferedAmountLow` callback reports the queue went down to the low-water mark.
 */
import { EventEmitter } from 'node:events'
import type { DataChannel } from 'node-datachannel'
import { DhtnetError } from '../../errors.js'
import type { MessageTransport } from '../transport.js'

export interface DataChannelTransportOptions {
  reliable: boolean
  /** send() returns false at or above this many buffered bytes (default 4 MiB reliable, 1 MiB datagram). */
  highWaterMark?: number
  /** 'drain' fires when buffered bytes go down to this (default highWaterMark / 4). */
  lowWaterMark?: number
  /** Largest message we send; the SDP of both sides announces 256 KiB. */
  maxMessageSize?: number
}

const DEFAULT_MAX_MESSAGE = 256 * 1024
/** Bytes a peer may send before our first 'message' listener exists (its multiplexer's opening burst). */
const MAX_EARLY_BYTES = 8 * 1024 * 1024

export class DataChannelTransport extends EventEmitter implements MessageTransport {
  readonly reliable: boolean
  private readonly dc: DataChannel
  private readonly highWaterMark: number
  private readonly configuredMax: number
  private _closed = false
  private _opened = false
  private _bytesSent = 0
  private _bytesReceived = 0
  /** Messages received before the first 'message' listener (undefined once delivered). */
  private early: Buffer[] | undefined = []
  private earlyBytes = 0
  /** takeFirstMessage() waiting for a message. */
  private firstWaiter: ((message: Buffer) => void) | undefined

  constructor(dc: DataChannel, options: DataChannelTransportOptions) {
    super()
    this.dc = dc
    this.reliable = options.reliable
    this.highWaterMark = options.highWaterMark ?? (options.reliable ? 4 * 1024 * 1024 : 1024 * 1024)
    const low = options.lowWaterMark ?? Math.floor(this.highWaterMark / 4)
    this.configuredMax = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE
    dc.setBufferedAmountLowThreshold(low)
    dc.onBufferedAmountLow(() => {
      if (!this._closed) this.emit('drain')
    })
    dc.onOpen(() => {
      this._opened = true
      this.emit('open')
    })
    dc.onMessage((msg) => {
      if (this._closed) return
      const buf = Buffer.isBuffer(msg) ? msg : typeof msg === 'string' ? Buffer.from(msg, 'utf8') : Buffer.from(msg)
      this._bytesReceived += buf.length
      if (this.firstWaiter) {
        const waiter = this.firstWaiter
        this.firstWaiter = undefined
        waiter(buf)
        return
      }
      if (this.early) {
        // Nobody listens yet: the peer's side was ready first. Keep the messages (bounded) for the first listener.
        this.earlyBytes += buf.length
        if (this.earlyBytes > MAX_EARLY_BYTES) {
          this.close(new DhtnetError('PROTOCOL_ERROR', `the peer sent over ${MAX_EARLY_BYTES} bytes before the connection was set up`))
          return
        }
        this.early.push(buf)
        return
      }
      this.emit('message', buf)
    })
    this.on('newListener', (event: string) => {
      if (event !== 'message' || !this.early) return
      // deliver after the listener is attached (newListener fires before)
      queueMicrotask(() => {
        const queued = this.early
        this.early = undefined
        for (const m of queued ?? []) {
          if (this._closed) break
          this.emit('message', m)
        }
      })
    })
    dc.onError((err) => {
      this.close(new DhtnetError('TRANSPORT_ERROR', `data channel ${this.label}: ${err}`))
    })
    dc.onClosed(() => {
      // The peer (or our PeerConnection) closed the channel: a clean end of the transport.
      this.close()
    })
    if (dc.isOpen()) this._opened = true
  }

  /**
   * The first message, taken before any 'message' listener exists (a link-level preamble): the messages after it
   * stay queued for the first listener. Rejects when the transport closes or the signal aborts.
   */
  takeFirstMessage(signal: AbortSignal): Promise<Buffer> {
    if (!this.early) return Promise.reject(new DhtnetError('INTERNAL_ERROR', 'takeFirstMessage() after a message listener was attached'))
    const queued = this.early.shift()
    if (queued) {
      this.earlyBytes -= queued.length
      return Promise.resolve(queued)
    }
    if (this._closed) return Promise.reject(new DhtnetError('TRANSPORT_CLOSED', `data channel ${this.label} is closed`))
    return new Promise<Buffer>((resolve, reject) => {
      const done = (): void => {
        this.firstWaiter = undefined
        signal.removeEventListener('abort', onAbort)
        this.off('close', onClose)
      }
      const onAbort = (): void => {
        done()
        reject(new DhtnetError('ABORTED', 'aborted while waiting for the first message', { cause: signal.reason }))
      }
      const onClose = (err?: Error): void => {
        done()
        reject(err ?? new DhtnetError('TRANSPORT_CLOSED', `data channel ${this.label} closed`))
      }
      if (signal.aborted) return onAbort()
      this.firstWaiter = (message) => {
        done()
        resolve(message)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.on('close', onClose)
    })
  }

  get label(): string {
    try {
      return this.dc.getLabel()
    } catch {
      return '?'
    }
  }

  get isOpen(): boolean {
    return this._opened && !this._closed
  }

  get closed(): boolean {
    return this._closed
  }

  get maxMessageSize(): number {
    let native = DEFAULT_MAX_MESSAGE
    try {
      if (!this._closed) native = this.dc.maxMessageSize() || DEFAULT_MAX_MESSAGE
    } catch {
      // closed under us: keep the default
    }
    return Math.min(native, this.configuredMax)
  }

  get bufferedAmount(): number {
    if (this._closed) return 0
    try {
      return this.dc.bufferedAmount()
    } catch {
      return 0
    }
  }

  get bytesSent(): number {
    return this._bytesSent
  }

  get bytesReceived(): number {
    return this._bytesReceived
  }

  send(message: Uint8Array): boolean {
    if (this._closed) throw new DhtnetError('TRANSPORT_CLOSED', `data channel ${this.label} is closed`)
    if (message.length > this.maxMessageSize) {
      throw new DhtnetError('MESSAGE_TOO_LARGE', `message of ${message.length} bytes exceeds the data channel limit of ${this.maxMessageSize}`)
    }
    try {
      // false = queued natively (not a failure)
      this.dc.sendMessageBinary(message)
    } catch (err) {
      const e = new DhtnetError('TRANSPORT_CLOSED', `data channel ${this.label}: send failed: ${(err as Error).message}`, { cause: err })
      this.close(e)
      throw e
    }
    this._bytesSent += message.length
    return this.bufferedAmount < this.highWaterMark
  }

  close(err?: Error): void {
    if (this._closed) return
    this._closed = true
    try {
      this.dc.close()
    } catch {
      // already closed natively
    }
    this.emit('close', err)
  }
}
