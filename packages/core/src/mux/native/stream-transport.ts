import { EventEmitter } from 'node:events'
import { Duplex } from 'node:stream'
import { DhtnetError } from '../../errors.js'
import type { MessageTransport } from '../../transport/transport.js'
import { prefixLogger, toLogger, type Logger, type LoggerLike } from '../../util/log.js'

const KiB = 1024
const MiB = 1024 * KiB
/** Messages up to this size leave in one buffer with their prefix (copied); larger ones as prefix, then body. */
const COPY_BELOW = 16 * KiB

export interface StreamMessageTransportOptions {
  /** A reliable, ordered byte stream (the TLS socket of an ICE-TCP link). */
  stream: Duplex
  /** Largest message, sent or received (default 262144 bytes, as a WebRTC data channel; the 4-byte prefix is extra).
   *  A larger incoming one closes the transport with PROTOCOL_ERROR. */
  maxMessageSize?: number
  /** send() returns false once bufferedAmount reaches this (default 512 KiB; never below the stream's own mark). */
  highWaterMark?: number
  /** Stop reading the stream while bufferedAmount is above this (default 16 MiB): a peer that does not read what we
   *  send (answers included) gets nothing more read from it either. */
  maxBufferedBytes?: number
  /** close() ends the stream gracefully; after this long it is destroyed (default 5000 ms). */
  closeTimeoutMs?: number
  logger?: LoggerLike
}

/**
 * A reliable MessageTransport over a byte stream: each message is `length u32 BE` + body. It lets our native
 * Multiplexer (which needs message boundaries) run over a TLS socket.
 *
 * - Sending: writes go straight to the stream, corked for the rest of the tick so a burst leaves in one writev;
 *   `bufferedAmount` is the stream's writableLength; 'drain' is the stream's.
 * - Receiving: a message inside one chunk is handed on as a view of it (no copy); one cut across chunks is
 *   assembled once in a buffer of its announced size (bounded by maxMessageSize). Nothing is quadratic.
 *
 * Events: 'message' (Buffer), 'drain', 'close' (err?) once.
 */
export class StreamMessageTransport extends EventEmitter implements MessageTransport {
  readonly reliable = true
  readonly maxMessageSize: number
  private readonly stream: Duplex
  private readonly highWaterMark: number
  private readonly maxBuffered: number
  private readonly closeTimeoutMs: number
  private readonly log: Logger

  // receiving: a prefix cut across chunks, then the body of a message cut across chunks
  private readonly prefix = Buffer.alloc(4)
  private prefixFilled = 0
  private partial: Buffer | undefined
  private partialFilled = 0

  private corked = false
  private readPaused = false
  private destroyTimer: NodeJS.Timeout | undefined
  private _closed = false
  private _bytesIn = 0
  private _bytesOut = 0
  private _messagesIn = 0
  private _messagesOut = 0

  /** `new StreamMessageTransport(stream)` takes every default. */
  constructor(streamOrOptions: Duplex | StreamMessageTransportOptions) {
    super()
    const options: StreamMessageTransportOptions = isDuplex(streamOrOptions) ? { stream: streamOrOptions } : streamOrOptions
    this.stream = options.stream
    this.maxMessageSize = options.maxMessageSize ?? 256 * KiB
    this.highWaterMark = Math.max(options.highWaterMark ?? 512 * KiB, this.stream.writableHighWaterMark)
    this.maxBuffered = Math.max(options.maxBufferedBytes ?? 16 * MiB, this.highWaterMark)
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5000
    this.log = prefixLogger(toLogger(options.logger), 'stream-transport')
    if (!Number.isInteger(this.maxMessageSize) || this.maxMessageSize < 1 || this.maxMessageSize > 0xffffffff) {
      throw new DhtnetError('INVALID_ARGUMENT', `maxMessageSize must be an integer from 1 to 2^32 - 1, got ${this.maxMessageSize}`)
    }
    this.stream.on('data', this.onData)
    this.stream.on('drain', this.onDrain)
    this.stream.on('end', this.onEnd)
    this.stream.on('close', this.onStreamClose)
    this.stream.on('error', this.onError)
    if (this.stream.destroyed || this.stream.readableEnded || this.stream.writableEnded) {
      queueMicrotask(() => this.close(new DhtnetError('TRANSPORT_CLOSED', 'the stream was already closed')))
    }
  }

  get closed(): boolean {
    return this._closed
  }

  /** Bytes queued in the stream and not yet handed to the network. */
  get bufferedAmount(): number {
    return this.stream.writableLength
  }

  /** Stream bytes received / written, prefixes included. */
  get bytesIn(): number {
    return this._bytesIn
  }

  get bytesOut(): number {
    return this._bytesOut
  }

  get messagesIn(): number {
    return this._messagesIn
  }

  get messagesOut(): number {
    return this._messagesOut
  }

  send(message: Uint8Array): boolean {
    if (this._closed) throw new DhtnetError('TRANSPORT_CLOSED', 'the transport is closed')
    const n = message.length
    if (n > this.maxMessageSize) {
      throw new DhtnetError('MESSAGE_TOO_LARGE', `a message of ${n} bytes exceeds the transport's ${this.maxMessageSize}`)
    }
    if (!this.corked) {
      // everything sent in this tick leaves in one write of the stream
      this.corked = true
      this.stream.cork()
      process.nextTick(this.uncork)
    }
    if (n < COPY_BELOW) {
      const buf = Buffer.allocUnsafe(4 + n)
      buf.writeUInt32BE(n, 0)
      buf.set(message, 4)
      this.stream.write(buf)
    } else {
      const prefix = Buffer.allocUnsafe(4)
      prefix.writeUInt32BE(n, 0)
      this.stream.write(prefix)
      this.stream.write(message)
    }
    this._bytesOut += 4 + n
    this._messagesOut++
    const buffered = this.stream.writableLength
    if (buffered > this.maxBuffered && !this.readPaused) {
      this.readPaused = true
      this.stream.pause()
    }
    return buffered < this.highWaterMark
  }

  /** Close: the stream is ended gracefully (what was sent still leaves), destroyed after closeTimeoutMs; on a
   *  protocol error it is destroyed at once. Emits 'close' once. */
  close(err?: Error): void {
    if (this._closed) return
    this._closed = true
    const stream = this.stream
    stream.off('data', this.onData)
    stream.off('drain', this.onDrain)
    stream.off('end', this.onEnd)
    stream.off('close', this.onStreamClose)
    // onError stays: a late error of a dying stream must not become an uncaught exception
    this.partial = undefined
    if (this.corked) this.uncork()
    if (!stream.destroyed) {
      stream.resume() // the peer's end must reach us
      if (err instanceof DhtnetError && err.code === 'PROTOCOL_ERROR') {
        stream.destroy()
      } else {
        stream.end()
        this.destroyTimer = setTimeout(() => {
          this.destroyTimer = undefined
          stream.destroy()
        }, this.closeTimeoutMs)
        this.destroyTimer.unref()
        stream.once('close', () => {
          if (this.destroyTimer) clearTimeout(this.destroyTimer)
          this.destroyTimer = undefined
        })
      }
    }
    if (err) this.log('debug', `closing: ${err.message}`)
    this.emit('close', err)
  }

  /** Live timers (the destroy timer after a graceful close, until the stream is gone). */
  get timers(): number {
    return this.destroyTimer ? 1 : 0
  }

  private readonly uncork = (): void => {
    if (!this.corked) return
    this.corked = false
    this.stream.uncork()
  }

  private readonly onDrain = (): void => {
    if (this._closed) return
    if (this.readPaused && this.stream.writableLength <= this.maxBuffered) {
      this.readPaused = false
      this.stream.resume()
    }
    this.emit('drain')
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this._closed) return
    this._bytesIn += chunk.length
    const len = chunk.length
    let off = 0
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- the loop body can close us (TypeScript keeps the narrowing from the check above)
    while (off < len && !this._closed) {
      const partial = this.partial
      if (partial) {
        const n = Math.min(partial.length - this.partialFilled, len - off)
        chunk.copy(partial, this.partialFilled, off, off + n)
        this.partialFilled += n
        off += n
        if (this.partialFilled < partial.length) return
        this.partial = undefined
        this.deliver(partial)
        continue
      }
      let size: number
      if (this.prefixFilled === 0 && len - off >= 4) {
        size = chunk.readUInt32BE(off)
        off += 4
      } else {
        const n = Math.min(4 - this.prefixFilled, len - off)
        chunk.copy(this.prefix, this.prefixFilled, off, off + n)
        this.prefixFilled += n
        off += n
        if (this.prefixFilled < 4) return
        this.prefixFilled = 0
        size = this.prefix.readUInt32BE(0)
      }
      if (size > this.maxMessageSize) {
        this.close(new DhtnetError('PROTOCOL_ERROR', `the peer sent a message of ${size} bytes; the limit is ${this.maxMessageSize}`))
        return
      }
      if (len - off >= size) {
        // whole in this chunk: a view, no copy
        this.deliver(chunk.subarray(off, off + size))
        off += size
      } else {
        this.partial = Buffer.allocUnsafe(size)
        this.partialFilled = 0
      }
    }
  }

  private deliver(message: Buffer): void {
    this._messagesIn++
    try {
      this.emit('message', message)
    } catch (err) {
      // a listener's bug must not escape into the stream's event loop
      this.log('error', `a 'message' listener threw: ${(err as Error | undefined)?.stack ?? String(err)}`)
      this.close(new DhtnetError('INTERNAL_ERROR', `a 'message' listener threw: ${(err as Error | undefined)?.message ?? String(err)}`, { cause: err }))
    }
  }

  private readonly onEnd = (): void => {
    const midMessage = this.partial !== undefined || this.prefixFilled > 0
    this.close(midMessage ? new DhtnetError('TRANSPORT_CLOSED', 'the stream ended in the middle of a message') : undefined)
  }

  private readonly onStreamClose = (): void => {
    this.close(new DhtnetError('TRANSPORT_CLOSED', 'the stream closed'))
  }

  private readonly onError = (err: Error): void => {
    if (this._closed) return
    this.close(new DhtnetError('TRANSPORT_ERROR', `the stream failed: ${err.message}`, { cause: err }))
  }
}

function isDuplex(value: Duplex | StreamMessageTransportOptions): value is Duplex {
  return value instanceof Duplex || typeof (value as { pipe?: unknown }).pipe === 'function'
}
