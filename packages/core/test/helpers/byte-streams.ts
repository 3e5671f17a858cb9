// Byte streams for multiplexer tests: a scripted stream (feed bytes in, collect what is written), a connected Duplex
// pair with real backpressure, and stamped bulk writes checked with SHA-256 on the other side.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { Duplex, type Readable, type Writable } from 'node:stream'

/** A Duplex whose readable side the test feeds and whose written bytes the test collects. */
export class ScriptedStream extends Duplex {
  readonly writes: Buffer[] = []
  writeCount = 0
  /** Calls that handed bytes over: one per write, one per corked batch. */
  batches = 0

  constructor() {
    super({ allowHalfOpen: true })
  }

  /** Deliver bytes to whoever reads this stream (the multiplexer under test). */
  feed(chunk: Buffer): void {
    this.push(chunk)
  }

  /** The peer ends its side. */
  feedEnd(): void {
    this.push(null)
  }

  written(): Buffer {
    return Buffer.concat(this.writes)
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writes.push(Buffer.from(chunk))
    this.writeCount++
    this.batches++
    cb()
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    for (const { chunk } of chunks) this.writes.push(Buffer.from(chunk))
    this.writeCount += chunks.length
    this.batches++
    cb()
  }
}

/**
 * Two connected Duplex ends. Bytes written to one are read from the other, asynchronously; a write callback fires
 * once the bytes were delivered to the peer's readable buffer and that buffer is below its high-water mark, so a
 * reader that stops reading stops the writer (like a socket whose window closed).
 */
export function createDuplexPair(highWaterMark = 64 * 1024): [Duplex, Duplex] {
  class End extends Duplex {
    peer!: End
    private pendingCb: (() => void) | undefined
    constructor() {
      super({ allowHalfOpen: false, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark })
    }
    override _read(): void {
      const cb = this.peer.pendingCb
      this.peer.pendingCb = undefined
      cb?.()
    }
    override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
      setImmediate(() => {
        if (this.peer.destroyed) return cb()
        if (this.peer.push(Buffer.from(chunk))) cb()
        else this.pendingCb = () => cb()
      })
    }
    override _final(cb: (err?: Error | null) => void): void {
      setImmediate(() => {
        this.peer.push(null)
        cb()
      })
    }
    override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
      const pending = this.pendingCb
      this.pendingCb = undefined
      pending?.()
      if (!this.peer.destroyed) setImmediate(() => this.peer.destroy())
      cb(err)
    }
  }
  const a = new End()
  const b = new End()
  a.peer = b
  b.peer = a
  return [a, b]
}

/**
 * Write `blocks` copies of `block`, each stamped with its index (bytes 0–3) and `tag` (byte 4) so that a reordered or
 * misrouted block changes the hash, waiting for 'drain' when asked. Resolves with the SHA-256 (hex) of what was written.
 */
export async function sendStamped(stream: Writable, blocks: number, block: Buffer, tag: number): Promise<string> {
  const h = createHash('sha256')
  for (let i = 0; i < blocks; i++) {
    const chunk = Buffer.from(block)
    chunk.writeUInt32BE(i, 0)
    chunk[4] = tag
    h.update(chunk)
    if (!stream.write(chunk)) await once(stream, 'drain')
  }
  return h.digest('hex')
}

/** The SHA-256 (hex) of the first `bytes` bytes read from `stream`; rejects on 'error' or when more bytes arrive. */
export function hashUntil(stream: Readable, bytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256')
    let got = 0
    const onData = (c: Buffer): void => {
      h.update(c)
      got += c.length
      if (got < bytes) return
      stream.off('data', onData)
      if (got > bytes) reject(new Error(`${got} bytes arrived, ${bytes} expected`))
      else resolve(h.digest('hex'))
    }
    stream.on('data', onData)
    stream.once('error', reject)
  })
}
