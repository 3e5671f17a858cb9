/**
 * The byte stream TLS runs on when the peer is a C++ DHTNet peer: a Duplex over the nominated TCP socket that
 *  - frames outbound TLS bytes one record per RFC 4571 frame (TlsRecordFramer);
 *  - deframes inbound bytes and demultiplexes by the first byte (RFC 7983): TLS records (20-63) go up to TLS, STUN
 *    messages (0-3) are answered when they are valid Binding requests (pjnath may still check the pair) and dropped
 *    otherwise (keepalive indications, late responses); anything else is a protocol error.
 * STUN answers are written only between two frames of the TLS stream, and at most STUN_ANSWER_BURST of them plus
 * one per second are sent, so an authenticated peer cannot make us write without bound.
 */
import { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import { DhtnetError } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { FrameDecoder, MAX_FRAME_PAYLOAD, encodeFrame } from './framing.js'
import { TlsRecordFramer } from './record-framer.js'
import { StunMessage, looksLikeStun } from '../stun/message.js'
import type { StunAnswerer } from './agent.js'

const STUN_ANSWER_BURST = 16
const MAX_QUEUED_STUN = 4

export class FramedDuplex extends Duplex {
  private readonly decoder = new FrameDecoder(MAX_FRAME_PAYLOAD)
  private readonly framer = new TlsRecordFramer()
  private readonly queuedStun: Buffer[] = []
  private tokens = STUN_ANSWER_BURST
  private lastRefill = performance.now()
  private readonly remote: { address: string; port: number }
  /** STUN messages seen after nomination (answered or dropped), for diagnostics and tests. */
  stunSeen = 0

  constructor(
    private readonly socket: Socket,
    remaining: Buffer,
    private readonly answerer: StunAnswerer,
    private readonly logger: Logger,
  ) {
    super({ allowHalfOpen: false, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 })
    this.remote = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
    socket.on('end', () => this.push(null))
    socket.on('error', (err) => this.destroy(err))
    socket.on('close', () => this.destroy())
    socket.on('drain', () => this.onDrain?.())
    if (remaining.length > 0) this.receive(remaining)
  }

  /** Bytes on the wire (frame headers and STUN included). */
  get wireBytesIn(): number {
    return this.socket.bytesRead
  }

  get wireBytesOut(): number {
    return this.socket.bytesWritten
  }

  private onDrain: (() => void) | undefined

  override _read(): void {
    this.socket.resume()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.writeOut(this.framer.frame(chunk), callback)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    const out = chunks.length === 1 ? this.framer.frame(chunks[0]!.chunk) : Buffer.concat(chunks.map((c) => this.framer.frame(c.chunk)))
    this.writeOut(out, callback)
  }

  private writeOut(out: Buffer, callback: (err?: Error | null) => void): void {
    const flushed = this.socket.write(out)
    if (this.framer.atBoundary) this.flushStun()
    if (flushed) callback()
    else
      this.onDrain = () => {
        this.onDrain = undefined
        callback()
      }
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.socket.end(callback)
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.socket.destroy()
    callback(err)
  }

  private receive(chunk: Buffer): void {
    this.decoder.push(chunk)
    // consecutive TLS records go up in one push (fewer crossings into the TLS engine)
    const records: Buffer[] = []
    for (;;) {
      let frame: Buffer | undefined
      try {
        frame = this.decoder.next()
      } catch (err) {
        this.destroy(err as Error)
        return
      }
      if (!frame) break
      const first = frame[0]
      if (first !== undefined && first >= 20 && first <= 63) {
        records.push(frame)
      } else if (looksLikeStun(frame)) {
        this.stun(frame)
      } else if (frame.length > 0) {
        this.destroy(new DhtnetError('TRANSPORT_ERROR', `ICE-TCP: a frame that is neither TLS nor STUN (first byte ${first}) on the nominated connection`))
        return
      }
    }
    if (records.length > 0 && !this.push(records.length === 1 ? records[0] : Buffer.concat(records))) this.socket.pause()
  }

  private stun(frame: Buffer): void {
    this.stunSeen++
    let msg: StunMessage
    try {
      msg = StunMessage.decode(frame)
    } catch {
      return
    }
    if (msg.class !== 'request') return
    const now = performance.now()
    this.tokens = Math.min(STUN_ANSWER_BURST, this.tokens + (now - this.lastRefill) / 1000)
    this.lastRefill = now
    if (this.tokens < 1 || this.queuedStun.length >= MAX_QUEUED_STUN) return
    const answer = this.answerer(msg, this.remote)
    if (!answer) return
    this.tokens -= 1
    this.queuedStun.push(encodeFrame(answer))
    if (this.framer.atBoundary) this.flushStun()
  }

  private flushStun(): void {
    while (this.queuedStun.length > 0) {
      const frame = this.queuedStun.shift()!
      this.logger('debug', 'ice-tcp: answered a STUN check on the nominated connection')
      this.socket.write(frame)
    }
  }
}
