import { Duplex } from 'node:stream'
import { DhtnetError } from '../../errors.js'
import type { MuxCapabilities, StreamChannel } from '../mux.js'
import { MAX_FRAME_DATA } from './wire.js'

/** What DHTNet's MultiplexedSocket can do (dhtnet-core.md §4.6, §4.8). */
export const DHTNET_CAPABILITIES: MuxCapabilities = Object.freeze({
  halfClose: false,
  resetReasons: false,
  perChannelFlowControl: false,
  datagrams: false,
})

/** What a channel needs from its multiplexer. Internal. */
export interface DhtnetChannelHost {
  /** Set once the multiplexer is closed: the error writes fail with. */
  closedError(): Error | undefined
  /** The channel has a frame to send: schedule it. */
  wantSend(channel: DhtnetChannel): void
  /** Write the channel's EOF frame now (all its data frames are already out) and forget the channel. */
  sendEof(channel: DhtnetChannel): void
  /** Forget the channel without sending anything. */
  forget(channel: DhtnetChannel): void
  /** Data pushed into the readable buffer filled it to its high-water mark: the connection should stop reading. */
  readBlocked(channel: DhtnetChannel): void
  /** The reader took data, or the channel ended: the connection may read again. */
  readProgress(channel: DhtnetChannel): void
}

export interface DhtnetChannelInit {
  host: DhtnetChannelHost
  name: string
  channelId: number
  initiator: boolean
  readableHighWaterMark: number
  writableHighWaterMark: number
}

interface PendingWrite {
  chunks: Buffer[]
  index: number
  offset: number
  cb: (err?: Error | null) => void
}

type WriteCallback = (error: Error | null | undefined) => void

/**
 * One channel of a DhtnetMux: a Node Duplex with DHTNet's semantics.
 *
 * - No half-close: `end()` sends EOF once every written byte left and ends the readable side too (unread data
 *   stays readable; what the peer sends afterwards is dropped). An EOF from the peer ends the readable side after
 *   the data before it, and ends the writable side: a write afterwards errors with CHANNEL_CLOSED (a write that was
 *   still queued errors too, once the reader has had the data the peer sent), never a silent drop.
 * - `destroy(err?)` sends EOF (DHTNet has no reset and no reason); the peer sees a normal end.
 * - Each write is cut into frames of at most 65535 bytes on its own, as C++ `ChannelSocket::write` does: writes are
 *   never merged, so the frames on the wire are those a C++ peer would send for the same writes.
 * - Flow control is the connection's: when this channel's readable buffer reaches its high-water mark the
 *   multiplexer stops reading the connection until the reader catches up (DHTNet has no per-channel window).
 */
export class DhtnetChannel extends Duplex implements StreamChannel {
  readonly capabilities = DHTNET_CAPABILITIES
  readonly name: string
  readonly channelId: number
  readonly initiator: boolean
  readonly createdAt: number

  /** In the multiplexer's round-robin queue (managed by the multiplexer). */
  scheduled = false

  private readonly host: DhtnetChannelHost
  private _bytesRead = 0
  private _bytesWritten = 0
  private current: PendingWrite | null = null
  private localEnded = false
  private remoteEnded = false
  /** Removed from the multiplexer's table (EOF sent or received, destroyed, or the multiplexer closed). */
  private forgotten = false
  private muxGone = false
  private eofPushed = false
  private delivered = true
  private deferredFate: (() => void) | undefined
  /** Message mode (setMessageMode): the largest frame kept, and the frame being reassembled. */
  private messageMax = 0
  private messageParts: Buffer[] = []
  private messageSize = 0
  private messageExpected = 0
  private messageDropping = false
  private _droppedMessages = 0

  /** @internal created by DhtnetMux only */
  constructor(init: DhtnetChannelInit) {
    super({
      allowHalfOpen: true, // the ends are managed here, DHTNet's way
      readableHighWaterMark: init.readableHighWaterMark,
      writableHighWaterMark: init.writableHighWaterMark,
    })
    this.host = init.host
    this.name = init.name
    this.channelId = init.channelId
    this.initiator = init.initiator
    this.createdAt = Date.now()
    this.once('end', () => this.host.readProgress(this))
  }

  /** Payload bytes received from the peer. */
  get bytesRead(): number {
    return this._bytesRead
  }

  /** Payload bytes handed to the connection. */
  get bytesWritten(): number {
    return this._bytesWritten
  }

  /** Message mode: frames from the peer dropped because they were larger than its bound. */
  get droppedMessages(): number {
    return this._droppedMessages
  }

  /** true once setMessageMode() was called. */
  get messageMode(): boolean {
    return this.messageMax > 0
  }

  /**
   * Message mode, for the channel protocols whose unit is one C++ `write()` (DHTNet's dvpn: one IP packet per
   * write): from now on every data frame the peer sends is emitted whole as one `'message'` event (Buffer),
   * reassembled when it arrived in pieces, instead of going to the readable side, so message boundaries survive
   * whatever the TLS records did to them. A frame larger than `maxMessageBytes` (default 65535, the largest frame a
   * C++ peer writes) is dropped and counted (`droppedMessages`); nothing is allocated for it. Data already in the
   * readable buffer stays there. The peer's EOF still ends the readable side (`'end'`: keep it flowing, e.g.
   * `resume()`, to see it). Our writes are frames as always: one write of at most 65535 bytes is one message for
   * the peer. A listener throwing is the mux's problem as for any data handler: keep `'message'` handlers safe.
   */
  setMessageMode(maxMessageBytes: number = MAX_FRAME_DATA): this {
    if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 1) {
      throw new DhtnetError('INVALID_ARGUMENT', `maxMessageBytes must be a positive integer, got ${maxMessageBytes}`)
    }
    this.messageMax = maxMessageBytes
    return this
  }

  /** true once the peer sent EOF. */
  get endedByPeer(): boolean {
    return this.remoteEnded
  }

  // ---- Writable side ----

  override write(chunk: unknown, encoding?: BufferEncoding | WriteCallback, cb?: WriteCallback): boolean {
    if (this.remoteEnded && (this.writableEnded || this.destroyed)) {
      this.closedByPeerWrite(typeof encoding === 'function' ? encoding : cb)
      return false
    }
    return super.write(chunk, encoding as BufferEncoding, cb)
  }

  // end(data) after the peer's EOF is a write too: CHANNEL_CLOSED rather than Node's write-after-end error
  override end(...args: unknown[]): this {
    const chunk: unknown = args[0]
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function' && this.remoteEnded && (this.writableEnded || this.destroyed)) {
      const cb = args.find((a: unknown) => typeof a === 'function') as WriteCallback | undefined
      this.closedByPeerWrite(cb)
      return this
    }
    return super.end(...(args as []))
  }

  private closedByPeerWrite(cb: WriteCallback | undefined): void {
    const err = new DhtnetError('CHANNEL_CLOSED', `channel "${this.name}" was closed by the peer; nothing more can be written`, {
      hint: 'DHTNet channels have no half-close: either side ending closes both directions',
    })
    if (cb) process.nextTick(cb, err)
    // once closed, the callback is all Node lets us tell (no 'error' after 'close')
    if (!this.destroyed) this.destroy(err)
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.enqueue([chunk], cb)
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.enqueue(
      chunks.map((c) => c.chunk),
      cb,
    )
  }

  private enqueue(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    const err = this.writeError()
    if (err) return cb(err)
    let total = 0
    for (const c of chunks) total += c.length
    // an empty frame is DHTNet's EOF: an empty write sends nothing
    if (total === 0) return cb()
    let index = 0
    while (chunks[index]!.length === 0) index++
    this.current = { chunks, index, offset: 0, cb }
    this.host.wantSend(this)
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.remoteEnded || this.forgotten) {
      // the peer ended the channel (or it is gone): nothing to tell anyone
      this.pushEof()
      return cb()
    }
    const err = this.host.closedError()
    if (err) return cb(err)
    this.localEnded = true
    this.forgotten = true
    this.host.sendEof(this)
    this.pushEof()
    cb()
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    const write = this.current
    this.current = null
    if (!this.forgotten) {
      this.forgotten = true
      if (!this.muxGone && !this.localEnded && !this.remoteEnded) this.host.sendEof(this)
      else this.host.forget(this)
    }
    if (write) write.cb(err ?? new DhtnetError('CHANNEL_CLOSED', `channel "${this.name}" was destroyed before this write was sent`))
    this.host.readProgress(this)
    cb(err)
  }

  private writeError(): Error | undefined {
    if (this.remoteEnded) {
      return new DhtnetError('CHANNEL_CLOSED', `channel "${this.name}" was closed by the peer; nothing more can be written`, {
        hint: 'DHTNet channels have no half-close: either side ending closes both directions',
      })
    }
    const closed = this.host.closedError()
    if (closed) return closed
    if (this.forgotten) return new DhtnetError('CHANNEL_CLOSED', `channel "${this.name}" is closed`)
    return undefined
  }

  // ---- Readable side ----

  override _read(): void {
    this.host.readProgress(this)
  }

  private pushEof(): void {
    if (this.eofPushed || this.destroyed) return
    this.eofPushed = true
    this.push(null)
  }

  // ---- called by DhtnetMux ----

  /** @internal A data frame of `length` bytes (> 0) from the peer begins; its data follows in muxData calls. */
  muxFrameStart(length: number): void {
    if (this.messageMax === 0) return
    this.messageParts = []
    this.messageSize = 0
    this.messageExpected = length
    this.messageDropping = length > this.messageMax
    if (this.messageDropping) this._droppedMessages++
  }

  /** @internal Data from the peer (a view of the connection's buffer). */
  muxData(data: Buffer): void {
    this._bytesRead += data.length
    if (this.destroyed || this.eofPushed) return
    if (this.messageMax > 0) return this.messageData(data)
    if (!this.push(data)) this.host.readBlocked(this)
  }

  private messageData(data: Buffer): void {
    if (this.messageDropping) return
    // the common case: the whole frame in one piece, handed on as the view it is
    if (this.messageSize === 0 && data.length === this.messageExpected) {
      this.messageExpected = 0
      this.emit('message', data)
      return
    }
    this.messageParts.push(data)
    this.messageSize += data.length
    if (this.messageSize < this.messageExpected) return
    const message = Buffer.concat(this.messageParts, this.messageSize)
    this.messageParts = []
    this.messageSize = 0
    this.messageExpected = 0
    this.emit('message', message)
  }

  /** @internal EOF from the peer; the multiplexer already forgot the channel. */
  muxEof(): void {
    if (this.remoteEnded) return
    this.remoteEnded = true
    this.forgotten = true
    this.pushEof()
    const write = this.current
    if (write) {
      // this write can never be sent: fail it, once the reader has had what the peer sent before its EOF
      const fail = (): void => {
        if (this.current !== write) return
        this.current = null
        write.cb(this.writeError())
      }
      if (this.readableLength === 0 && this.readableFlowing !== true) fail()
      else this.once('end', fail)
    } else if (!this.writableEnded && !this.destroyed) {
      this.end() // 'finish' without sending anything: _final sees remoteEnded
    }
  }

  /** @internal The multiplexer closed: end without sending anything. */
  muxAbort(err: Error | undefined): void {
    this.muxGone = true
    this.forgotten = true
    if (this.delivered) this.destroy(err)
    else if (!this.deferredFate) this.deferredFate = () => this.destroy(err)
  }

  /** @internal The opener's `await openChannel()` has not resumed yet: hold errors until it has. */
  muxHoldUntilDelivered(): void {
    this.delivered = false
  }

  /** @internal Called one event-loop turn after the open resolved. */
  muxDelivered(): void {
    this.delivered = true
    const fate = this.deferredFate
    this.deferredFate = undefined
    fate?.()
  }

  /** @internal A data frame can be taken now. */
  hasFrame(): boolean {
    return this.current !== null && !this.forgotten
  }

  /**
   * @internal The next frame's data (at most 65535 bytes, never empty: a view of the written buffer). `done`, when
   * set, is the write callback, to call once the frame was handed to the connection.
   */
  takeFrame(): { data: Buffer; done?: () => void } {
    const w = this.current!
    const chunk = w.chunks[w.index]!
    const n = Math.min(MAX_FRAME_DATA, chunk.length - w.offset)
    const data = chunk.subarray(w.offset, w.offset + n)
    w.offset += n
    this._bytesWritten += n
    // advance past this chunk and any empty ones
    while (w.index < w.chunks.length && w.offset >= w.chunks[w.index]!.length) {
      w.index++
      w.offset = 0
    }
    if (w.index < w.chunks.length) return { data }
    this.current = null
    return { data, done: () => w.cb() }
  }
}
