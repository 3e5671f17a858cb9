/**
 * Outbound framing of a TLS byte stream for a C++ DHTNet peer: pjnath hands every RFC 4571 frame to GnuTLS as one
 * packet, and the captures show exactly one TLS record per frame. This framer reads the 5-byte record headers in
 * the stream the TLS engine writes and puts each record in its own frame (split at 65535 bytes if a record were ever
 * longer, which TLS does not produce).
 *
 * A record may be cut anywhere between writes: its frame header is written as soon as the record header is known
 * and the record bytes follow as they come, so nothing but a split 5-byte record header is ever held back.
 */
import { MAX_FRAME_PAYLOAD } from './framing.js'

const RECORD_HEADER = 5

export class TlsRecordFramer {
  /** Bytes of the current frame still to come. */
  private frameRemaining = 0
  /** Bytes of the current record (header included) not yet covered by a frame header. */
  private recordRemaining = 0
  private pendingHeader: Buffer | undefined

  /** true between two frames: another frame (a STUN answer) may be written now without cutting one. */
  get atBoundary(): boolean {
    return this.frameRemaining === 0 && this.recordRemaining === 0 && this.pendingHeader === undefined
  }

  /** Frame the next bytes of the stream: returns one buffer to write (headers interleaved with the data). */
  frame(chunk: Buffer): Buffer {
    // worst case: the held-back header bytes, and a frame header for every 5-byte record
    const held = this.pendingHeader?.length ?? 0
    const out = Buffer.allocUnsafe(held + chunk.length + 2 * (Math.ceil((held + chunk.length) / RECORD_HEADER) + 1))
    let w = 0
    let r = 0
    while (r < chunk.length) {
      if (this.frameRemaining > 0) {
        const take = Math.min(this.frameRemaining, chunk.length - r)
        chunk.copy(out, w, r, r + take)
        w += take
        r += take
        this.frameRemaining -= take
        continue
      }
      if (this.recordRemaining > 0) {
        w = this.startFrame(out, w)
        continue
      }
      // a new record: collect its 5-byte header
      const have = this.pendingHeader?.length ?? 0
      const take = Math.min(RECORD_HEADER - have, chunk.length - r)
      const header = have > 0 ? Buffer.concat([this.pendingHeader!, chunk.subarray(r, r + take)]) : chunk.subarray(r, r + take)
      r += take
      if (header.length < RECORD_HEADER) {
        this.pendingHeader = Buffer.from(header)
        break
      }
      this.pendingHeader = undefined
      this.recordRemaining = RECORD_HEADER + header.readUInt16BE(3)
      w = this.startFrame(out, w)
      header.copy(out, w)
      w += RECORD_HEADER
      this.frameRemaining -= RECORD_HEADER
    }
    return out.subarray(0, w)
  }

  private startFrame(out: Buffer, w: number): number {
    const size = Math.min(this.recordRemaining, MAX_FRAME_PAYLOAD)
    out.writeUInt16BE(size, w)
    this.recordRemaining -= size
    this.frameRemaining = size
    return w + 2
  }
}
