import { Duplex } from 'node:stream'
import { DhtnetError } from '../../errors.js'
import { Fifo } from '../../util/fifo.js'
import { NATIVE_CAPABILITIES } from '../mux.js'
import { FrameType, encodeFrame, encodeReason, encodeWindow } from './frames.js'

/** What a channel needs from its multiplexer. Internal. */
export interface StreamChannelHost {
  /** Set once the multiplexer is closed: the error writes fail with. */
  closedError(): Error | undefined
  /** Send a control frame now (ahead of queued data). */
  sendControl(frame: Buffer): void
  /** The channel has data and credit: schedule it. */
  wantSend(channel: ChannelSocket): void
  /** Forget the channel (both directions finished, or reset). */
  release(channel: ChannelSocket): void
  /** Received bytes left the connection's receive budget (read by the application, or dropped): credit for the
   *  connection window. */
  connectionConsumed(bytes: number): void
}

export interface ChannelSocketInit {
  host: StreamChannelHost
  name: string
  channelId: number
  initiator: boolean
  /** Bytes the peer lets us send before its first WINDOW frame. */
  sendCredit: number
  /** Bytes we let the peer send before our first WINDOW frame (what we announced). */
  receiveWindow: number
  readableHighWaterMark?: number
  writableHighWaterMark?: number
}

interface PendingWrite {
  buf: Buffer
  offset: number
  cb: (err?: Error | null) => void
}

/**
 * One ordered, reliable byte stream of a Multiplexer.
 *
 * Flow control: the peer may send at most the window we announced, plus what we return in WINDOW frames as the
 * application reads. Received bytes wait in `pending` until the Readable side asks for them (`_read`), so a reader
 * that stops reading stops its sender after one window, on this channel only.
 * Half-close: end() sends EOF after every written byte was handed to the transport; the peer sees 'end' and may
 * keep writing. destroy(err) sends RESET(reason); the peer's socket errors with CHANNEL_RESET.
 */
export class ChannelSocket extends Duplex {
  readonly capabilities = NATIVE_CAPABILITIES
  readonly name: string
  readonly channelId: number
  /** true when this side opened the channel. */
  readonly initiator: boolean
  readonly createdAt: number

  private readonly host: StreamChannelHost
  private _bytesRead = 0
  private _bytesWritten = 0

  // send side
  private sendCredit: number
  private current: PendingWrite | null = null
  private localEnded = false
  /** in the multiplexer's round-robin queue (managed by the multiplexer) */
  scheduled = false

  // receive side
  /** receive window announced to the peer */
  readonly receiveWindow: number
  private readonly windowUpdateThreshold: number
  /** bytes the peer may still send without a new WINDOW frame */
  private receiveAllowance: number
  /** bytes handed to the reader but not yet returned to the peer as credit */
  private unacknowledged = 0
  private readonly pending = new Fifo<Buffer>()
  private pendingBytes = 0
  private wantsData = false
  private remoteEnded = false
  private eofPushed = false

  private released = false
  private resetByPeer = false
  private muxGone = false

  /** @internal created by the Multiplexer only */
  constructor(init: ChannelSocketInit) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: init.readableHighWaterMark ?? 64 * 1024,
      writableHighWaterMark: init.writableHighWaterMark ?? 64 * 1024,
    })
    this.host = init.host
    this.name = init.name
    this.channelId = init.channelId
    this.initiator = init.initiator
    this.createdAt = Date.now()
    this.sendCredit = init.sendCredit
    this.receiveWindow = init.receiveWindow
    this.receiveAllowance = init.receiveWindow
    this.windowUpdateThreshold = Math.max(1, Math.floor(init.receiveWindow / 4))
  }

  /** Payload bytes received from the peer. */
  get bytesRead(): number {
    return this._bytesRead
  }

  /** Payload bytes handed to the transport. */
  get bytesWritten(): number {
    return this._bytesWritten
  }

  /** Bytes received and not yet handed to the reader (bounded by the receive window). */
  get pendingReceiveBytes(): number {
    return this.pendingBytes
  }

  // ---- Writable side ----

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.enqueueWrite(chunk, cb)
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    // coalesce small writes into fewer, larger frames
    this.enqueueWrite(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb)
  }

  private enqueueWrite(chunk: Buffer, cb: (err?: Error | null) => void): void {
    const err = this.writeError()
    if (err) return cb(err)
    if (chunk.length === 0) return cb()
    this.current = { buf: chunk, offset: 0, cb }
    if (this.sendCredit > 0) this.host.wantSend(this)
  }

  override _final(cb: (err?: Error | null) => void): void {
    const err = this.writeError()
    if (err) return cb(err)
    this.localEnded = true
    this.host.sendControl(encodeFrame(FrameType.EOF, this.channelId))
    if (this.remoteEnded) this.release()
    cb()
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    const write = this.current
    this.current = null
    if (write) write.cb(err ?? new DhtnetError('CHANNEL_CLOSED', `channel "${this.name}" was destroyed before this write was sent`))
    if (!this.released) {
      if (!this.muxGone && !this.resetByPeer && !(this.localEnded && this.remoteEnded)) {
        const reason = err ? err.message || String(err) : 'channel closed by the application before the end of the stream'
        this.host.sendControl(encodeReason(FrameType.RESET, this.channelId, reason))
      }
      this.release()
    }
    this.pending.clear()
    if (this.pendingBytes > 0) this.host.connectionConsumed(this.pendingBytes)
    this.pendingBytes = 0
    cb(err)
  }

  private writeError(): Error | undefined {
    const closed = this.host.closedError()
    if (closed) return closed
    if (this.released || this.muxGone) {
      return new DhtnetError('CHANNEL_CLOSED', `channel "${this.name}" is closed`)
    }
    return undefined
  }

  // ---- Readable side ----

  override _read(): void {
    this.wantsData = true
    this.flush()
  }

  private flush(): void {
    while (this.wantsData && this.pending.length > 0) {
      const buf = this.pending.shift()!
      this.pendingBytes -= buf.length
      this.consumed(buf.length)
      this.wantsData = this.push(buf)
    }
    if (this.remoteEnded && this.pending.length === 0 && !this.eofPushed) {
      this.eofPushed = true
      this.push(null)
    }
  }

  /** The reader took `n` bytes: give the peer its credit back, in batches of a quarter window. */
  private consumed(n: number): void {
    this.host.connectionConsumed(n)
    if (this.remoteEnded || this.released) return
    this.unacknowledged += n
    if (this.unacknowledged >= this.windowUpdateThreshold) {
      const credit = this.unacknowledged
      this.unacknowledged = 0
      this.receiveAllowance += credit
      this.host.sendControl(encodeWindow(this.channelId, credit))
    }
  }

  private release(): void {
    if (this.released) return
    this.released = true
    this.host.release(this)
  }

  // ---- called by the Multiplexer ----

  /** @internal DATA from the peer. Returns false when the peer broke the protocol (over the window, data after EOF). */
  muxData(payload: Buffer): boolean {
    if (this.remoteEnded || payload.length > this.receiveAllowance) return false
    this.receiveAllowance -= payload.length
    this._bytesRead += payload.length
    if (this.destroyed) {
      this.host.connectionConsumed(payload.length)
      return true
    }
    if (this.wantsData && this.pending.length === 0) {
      this.consumed(payload.length)
      this.wantsData = this.push(payload)
    } else {
      this.pending.push(payload)
      this.pendingBytes += payload.length
    }
    return true
  }

  /** @internal EOF from the peer. Returns false on a duplicate EOF. */
  muxEof(): boolean {
    if (this.remoteEnded) return false
    this.remoteEnded = true
    if (this.localEnded) this.release()
    if (!this.destroyed) this.flush()
    return true
  }

  /** @internal RESET from the peer. */
  muxReset(reason: string): void {
    this.resetByPeer = true
    this.release()
    this.destroyWhenDelivered(new DhtnetError('CHANNEL_RESET', `channel "${this.name}" was reset by the peer: ${reason || 'no reason given'}`))
  }

  /**
   * @internal Until the opener's `await openChannel()` has resumed, an error must not be emitted: nobody could
   * listen yet (an ACCEPT followed at once by a RESET arrive in the same turn). The Multiplexer calls this one
   * event-loop turn after resolving the open.
   */
  muxDelivered(): void {
    this.delivered = true
    const fate = this.deferredFate
    this.deferredFate = undefined
    fate?.()
  }

  private delivered = true
  private deferredFate: (() => void) | undefined

  /** @internal the opener side starts undelivered */
  muxHoldUntilDelivered(): void {
    this.delivered = false
  }

  private destroyWhenDelivered(err: Error | undefined): void {
    if (this.delivered) this.destroy(err)
    else if (!this.deferredFate) this.deferredFate = () => this.destroy(err)
  }

  /** @internal WINDOW from the peer. */
  muxCredit(credit: number): void {
    this.sendCredit += credit
    if (this.current && !this.scheduled) this.host.wantSend(this)
  }

  /** @internal the multiplexer closed: end this channel without sending anything. */
  muxAbort(err: Error | undefined): void {
    this.muxGone = true
    this.released = true
    this.destroyWhenDelivered(err)
  }

  /** @internal true when a DATA frame can be taken now. */
  canSend(): boolean {
    return this.current !== null && this.sendCredit > 0 && !this.released
  }

  /**
   * @internal Take the next DATA frame of at most `maxPayload` bytes. `done`, when set, is the write callback to
   * call once the frame was handed to the transport.
   */
  takeFrame(maxPayload: number): { frame: Buffer; payloadBytes: number; done?: () => void } {
    const w = this.current!
    const n = Math.min(maxPayload, this.sendCredit, w.buf.length - w.offset)
    const frame = encodeFrame(FrameType.DATA, this.channelId, w.buf, w.offset, w.offset + n)
    w.offset += n
    this.sendCredit -= n
    this._bytesWritten += n
    if (w.offset < w.buf.length) return { frame, payloadBytes: n }
    this.current = null
    return { frame, payloadBytes: n, done: () => w.cb() }
  }
}
