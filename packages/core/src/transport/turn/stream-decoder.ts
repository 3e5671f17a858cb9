/**
 * STUN over a TCP or TLS stream as TURN uses it (RFC 8656 §3.2, RFC 8489 §6.2.2): messages back to back, no RFC 4571
 * length prefix; each one's size is in its own header (20 + length). ChannelData messages (first two bits 01,
 * RFC 8656 §12.5) may share the stream, padded to 4 bytes over TCP: we never bind channels, so one is skipped.
 *
 * Bounded: a declared size above `maxMessageBytes` is refused as soon as the 4 bytes that declare it are in, so the
 * buffer never holds more than one message plus one received chunk. Anything whose first two bits are neither 00
 * nor 01 means the stream is out of step: the connection must be closed (the caller does).
 */
import { DhtnetError } from '../../errors.js'
import { HEADER_BYTES } from '../stun/constants.js'

export type StreamItem = { kind: 'stun'; message: Buffer } | { kind: 'channel-data'; bytes: number }

export class StunStreamDecoder {
  private buf: Buffer = Buffer.alloc(0)

  constructor(readonly maxMessageBytes: number) {}

  get bufferedBytes(): number {
    return this.buf.length
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
  }

  /**
   * The next whole item, or undefined until it has fully arrived. A STUN message is a copy when it was split
   * across chunks, else a view. Throws DhtnetError('STUN_ERROR') when the stream cannot be a TURN stream.
   */
  next(): StreamItem | undefined {
    if (this.buf.length < 4) return undefined
    const first = this.buf[0]! >> 6
    const length = this.buf.readUInt16BE(2)
    let total: number
    if (first === 0) {
      if ((length & 3) !== 0) throw new DhtnetError('STUN_ERROR', `STUN length ${length} is not a multiple of 4: the TURN stream is out of step`)
      total = HEADER_BYTES + length
    } else if (first === 1) {
      total = 4 + ((length + 3) & ~3)
    } else {
      throw new DhtnetError('STUN_ERROR', `byte 0x${this.buf[0]!.toString(16)} starts neither a STUN message nor ChannelData: the TURN stream is out of step`)
    }
    if (total > this.maxMessageBytes) {
      throw new DhtnetError('STUN_ERROR', `a ${total}-byte message from the TURN server, more than the ${this.maxMessageBytes} accepted`)
    }
    if (this.buf.length < total) return undefined
    const item = this.buf.subarray(0, total)
    this.buf = this.buf.length === total ? Buffer.alloc(0) : this.buf.subarray(total)
    return first === 0 ? { kind: 'stun', message: item } : { kind: 'channel-data', bytes: total }
  }

  /** What is buffered after the items returned so far (the decoder is empty afterwards). */
  takeRemaining(): Buffer {
    const rest = this.buf
    this.buf = Buffer.alloc(0)
    return rest
  }
}
