/**
 * RFC 4571 framing: every packet on an ICE-TCP connection is a 2-byte big-endian length, then the packet.
 *
 * FrameDecoder is fed whatever the socket delivers and yields whole frames. A frame that lies inside one received
 * chunk is returned as a view of it (no copy); only a frame split across chunks is copied, once. Buffered bytes stay
 * below one frame plus one chunk because the caller drains frames after each push; a declared length above the
 * limit is refused before anything is allocated for it.
 */
import { DhtnetError } from '../../errors.js'

/** The largest payload a 2-byte length can carry. */
export const MAX_FRAME_PAYLOAD = 0xffff

export class FrameDecoder {
  private chunks: Buffer[] = []
  /** Index of the first unconsumed chunk, and the read offset inside it. */
  private first = 0
  private offset = 0
  private buffered = 0

  /** @param maxFrameBytes largest payload accepted; can be raised later (e.g. once the peer authenticated). */
  constructor(public maxFrameBytes: number = MAX_FRAME_PAYLOAD) {}

  /** Bytes received and not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** Length of the next frame's payload once its 2-byte header has arrived, else undefined. */
  peekLength(): number | undefined {
    if (this.buffered < 2) return undefined
    const c = this.chunks[this.first]!
    if (c.length - this.offset >= 2) return (c[this.offset]! << 8) | c[this.offset + 1]!
    return (this.byteAt(0) << 8) | this.byteAt(1)
  }

  /**
   * The next whole frame's payload, or undefined when it has not fully arrived. Throws DhtnetError
   * ('TRANSPORT_ERROR') when the declared length is above `maxFrameBytes` (the connection should be closed).
   */
  next(): Buffer | undefined {
    const length = this.peekLength()
    if (length === undefined) return undefined
    if (length > this.maxFrameBytes) {
      throw new DhtnetError('TRANSPORT_ERROR', `RFC 4571 frame of ${length} bytes, more than the ${this.maxFrameBytes} accepted here`)
    }
    if (this.buffered < 2 + length) return undefined
    const c = this.chunks[this.first]!
    let frame: Buffer
    if (c.length - this.offset >= 2 + length) {
      frame = c.subarray(this.offset + 2, this.offset + 2 + length)
      this.skip(2 + length)
    } else {
      this.skip(2)
      frame = this.copyOut(length)
    }
    return frame
  }

  /** Everything buffered and not returned as frames (then the decoder is empty): the bytes that follow the last
   *  frame when a connection switches to unframed data. */
  takeRemaining(): Buffer {
    const rest = this.copyOut(this.buffered)
    this.chunks = []
    this.first = 0
    this.offset = 0
    return rest
  }

  private byteAt(index: number): number {
    let i = this.first
    let pos = this.offset + index
    while (pos >= this.chunks[i]!.length) {
      pos -= this.chunks[i]!.length
      i++
    }
    return this.chunks[i]![pos]!
  }

  private skip(n: number): void {
    this.buffered -= n
    while (n > 0) {
      const c = this.chunks[this.first]!
      const avail = c.length - this.offset
      if (n < avail) {
        this.offset += n
        return
      }
      n -= avail
      this.first++
      this.offset = 0
    }
    this.compact()
  }

  private copyOut(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    let written = 0
    while (written < n) {
      const c = this.chunks[this.first]!
      const take = Math.min(n - written, c.length - this.offset)
      c.copy(out, written, this.offset, this.offset + take)
      written += take
      this.offset += take
      if (this.offset === c.length) {
        this.first++
        this.offset = 0
      }
    }
    this.buffered -= n
    this.compact()
    return out
  }

  /** Drop consumed chunk references (amortised: the array is sliced only when the consumed prefix is long). */
  private compact(): void {
    if (this.first === this.chunks.length) {
      this.chunks = []
      this.first = 0
    } else if (this.first > 32 && this.first * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.first)
      this.first = 0
    }
  }
}

/** `payload` with its 2-byte length header, in one buffer. */
export function encodeFrame(payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new DhtnetError('INVALID_ARGUMENT', `a frame carries at most ${MAX_FRAME_PAYLOAD} bytes`)
  const out = Buffer.allocUnsafe(2 + payload.length)
  out.writeUInt16BE(payload.length, 0)
  out.set(payload, 2)
  return out
}

/** The 2-byte header alone (to write header and payload with writev, without copying the payload). */
export function frameHeader(length: number): Buffer {
  if (length > MAX_FRAME_PAYLOAD || length < 0) throw new DhtnetError('INVALID_ARGUMENT', `a frame carries at most ${MAX_FRAME_PAYLOAD} bytes`)
  const out = Buffer.allocUnsafe(2)
  out.writeUInt16BE(length, 0)
  return out
}
