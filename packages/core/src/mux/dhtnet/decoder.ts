/**
 * Incremental, bounded decoder of the MultiplexedSocket byte stream: a sequence of msgpack objects, each expected to
 * be a frame `[channel uint, data bin]`.
 *
 * - Data frames are streamed: their bodies are handed on as views of the incoming chunks, never reassembled, so a
 *   claimed length allocates nothing (a 4 GiB bin32 costs the sender 4 GiB of traffic, not us memory).
 * - Control frames (channel 0 and 0xffff) are collected whole (at most 65535 bytes, what C++ can write) and parsed.
 * - A well-formed msgpack object that is not a frame (another type, a channel over 0xffff, data that is not bin or
 *   str, a control frame over 65535 bytes) is skipped as C++ does (it logs and continues), as long as it ends
 *   within `maxSkippedObjectBytes`; counters of nested objects are checked against that bound, so nothing grows.
 * - The stream cannot be resynchronised after the byte 0xc1 (never valid msgpack) or a non-frame object larger than
 *   the bound: the decoder then stops and reports a protocol error (C++ closes the socket on the parse error too).
 * A header split across chunks is stashed (at most 8 bytes); nothing else is copied, except control bodies.
 */
import { CONTROL_CHANNEL, Kind, MAX_FRAME_DATA, PROTOCOL_CHANNEL, childObjects, payloadBytes, readHeader, type MsgHeader } from './wire.js'

export interface FrameSink {
  /** A data frame for `channel` begins; `length` bytes of data follow (0: the EOF frame). */
  frameStart(channel: number, length: number): void
  /** A piece of the current data frame (a view of the incoming chunk: consume or copy it now). */
  frameData(channel: number, data: Buffer): void
  /** A whole frame on channel 0 or 0xffff. */
  control(channel: number, body: Buffer): void
  /** A well-formed object that is not a frame was skipped. */
  skipped(reason: string): void
  /** The stream cannot be parsed any further. */
  fatal(reason: string): void
}

const Stage = {
  FRAME: 0, // expecting a frame's array header
  CHANNEL: 1, // expecting the channel
  DATA: 2, // expecting the data's bin/str header
  BODY: 3, // streaming a data frame's body
  CONTROL_BODY: 4, // collecting a control frame's body
  SKIP: 5, // skipping the rest of an object that is not a frame
} as const
type Stage = (typeof Stage)[keyof typeof Stage]

export interface FrameDecoderOptions {
  /** Largest object that is not a frame and is skipped (default 65535 + 64 bytes); a larger one is fatal. */
  maxSkippedObjectBytes?: number
}

export class FrameDecoder {
  private stage: Stage = Stage.FRAME
  private readonly h: MsgHeader = { kind: 0, value: 0 }
  private stash: Buffer | undefined
  private channel = 0
  private bodyRemaining = 0
  private control: Buffer | undefined
  private controlFilled = 0
  // skipping: raw bytes still to skip, objects still to skip, bytes of the skipped object so far, why
  private skipBytes = 0
  private skipObjects = 0
  private skipUsed = 0
  private skipReason = ''
  private failed = false
  private readonly maxSkip: number

  constructor(
    private readonly sink: FrameSink,
    options: FrameDecoderOptions = {},
  ) {
    this.maxSkip = options.maxSkippedObjectBytes ?? MAX_FRAME_DATA + 64
  }

  get stopped(): boolean {
    return this.failed
  }

  /** Stop decoding (the multiplexer closed): later pushes are ignored. */
  stop(): void {
    this.failed = true
    this.stash = undefined
    this.control = undefined
  }

  /** true between frames (no partial object pending): where a stream may end cleanly. */
  get atBoundary(): boolean {
    return this.stage === Stage.FRAME && this.stash === undefined
  }

  push(chunk: Buffer): void {
    if (this.failed) return
    let off = 0
    const len = chunk.length
    if (this.stash) {
      // a header split across chunks: at most 9 bytes, so 9 more always complete it
      const joined = Buffer.concat([this.stash, chunk.subarray(0, 9)])
      const n = readHeader(joined, 0, this.h)
      if (n === 0) {
        this.stash = joined
        return
      }
      if (n < 0) return this.fail('invalid msgpack byte 0xc1')
      off = n - this.stash.length
      this.stash = undefined
      this.onHeader(n)
    }
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- onHeader() and the stages can fail (TypeScript keeps an earlier narrowing)
    while (off < len && !this.failed) {
      switch (this.stage) {
        case Stage.BODY: {
          const n = Math.min(this.bodyRemaining, len - off)
          this.bodyRemaining -= n
          if (this.bodyRemaining === 0) this.stage = Stage.FRAME
          this.sink.frameData(this.channel, chunk.subarray(off, off + n))
          off += n
          break
        }
        case Stage.CONTROL_BODY: {
          const body = this.control!
          const n = Math.min(body.length - this.controlFilled, len - off)
          chunk.copy(body, this.controlFilled, off, off + n)
          this.controlFilled += n
          off += n
          if (this.controlFilled === body.length) {
            this.control = undefined
            this.stage = Stage.FRAME
            this.sink.control(this.channel, body)
          }
          break
        }
        default: {
          if (this.stage === Stage.SKIP && this.skipBytes > 0) {
            const n = Math.min(this.skipBytes, len - off)
            this.skipBytes -= n
            off += n
            if (this.skipBytes === 0 && this.skipObjects === 0) this.endSkip()
            break
          }
          const n = readHeader(chunk, off, this.h)
          if (n === 0) {
            this.stash = Buffer.from(chunk.subarray(off))
            return
          }
          if (n < 0) return this.fail('invalid msgpack byte 0xc1')
          off += n
          this.onHeader(n)
        }
      }
    }
  }

  private onHeader(headerBytes: number): void {
    const h = this.h
    switch (this.stage) {
      case Stage.FRAME:
        if (h.kind === Kind.ARRAY && h.value === 2) {
          this.stage = Stage.CHANNEL
          return
        }
        return this.beginSkip('an object that is not a frame', headerBytes, 0)
      case Stage.CHANNEL:
        if (h.kind === Kind.UINT && h.value <= 0xffff) {
          this.channel = h.value
          this.stage = Stage.DATA
          return
        }
        // the data element follows: skip it too
        return this.beginSkip('a frame whose channel is not a uint16', headerBytes + 1, 1)
      case Stage.DATA: {
        if (h.kind !== Kind.BIN && h.kind !== Kind.STR) return this.beginSkip('a frame whose data is not bin', headerBytes + 2, 0)
        const length = h.value
        const channel = this.channel
        if (channel === CONTROL_CHANNEL || channel === PROTOCOL_CHANNEL) {
          if (length === 0) {
            this.stage = Stage.FRAME
            return this.sink.skipped('an empty control frame')
          }
          if (length > MAX_FRAME_DATA) return this.beginSkip('a control frame over 65535 bytes', headerBytes + 3, 0)
          this.control = Buffer.allocUnsafe(length)
          this.controlFilled = 0
          this.stage = Stage.CONTROL_BODY
          return
        }
        this.bodyRemaining = length
        this.stage = length === 0 ? Stage.FRAME : Stage.BODY
        return this.sink.frameStart(channel, length)
      }
      default: // SKIP: one more nested object
        this.skipObjects--
        this.addToSkip(headerBytes)
    }
  }

  /** Skip the object whose header was just read, plus `moreObjects` siblings. */
  private beginSkip(reason: string, bytesSoFar: number, moreObjects: number): void {
    this.stage = Stage.SKIP
    this.skipReason = reason
    this.skipUsed = 0
    this.skipBytes = 0
    this.skipObjects = moreObjects
    this.addToSkip(bytesSoFar)
  }

  private addToSkip(headerBytes: number): void {
    const payload = payloadBytes(this.h)
    this.skipObjects += childObjects(this.h)
    this.skipBytes = payload
    this.skipUsed += headerBytes + payload
    // every object still to come takes at least one byte
    if (this.skipUsed + this.skipObjects > this.maxSkip) {
      return this.fail(`${this.skipReason} larger than ${this.maxSkip} bytes`)
    }
    if (this.skipBytes === 0 && this.skipObjects === 0) this.endSkip()
  }

  private endSkip(): void {
    this.stage = Stage.FRAME
    this.sink.skipped(this.skipReason)
  }

  private fail(reason: string): void {
    this.stop()
    this.sink.fatal(reason)
  }
}
