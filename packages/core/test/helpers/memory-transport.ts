import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { DhtnetError } from '../../src/errors.js'
import type { MessageTransport } from '../../src/transport/transport.js'
import { Multiplexer, type MultiplexerOptions } from '../../src/mux/index.js'
import type { Readable } from 'node:stream'

export interface MemoryTransportOptions {
  /** ordered + reliable (default true); false makes an unreliable transport (see dropEvery) */
  reliable?: boolean
  /** largest message send() accepts (default 262144, as WebRTC) */
  maxMessageSize?: number
  /** send() returns false once bufferedAmount exceeds this (default 1 MiB) */
  highWaterMark?: number
  /** 'drain' fires when bufferedAmount goes from above to at or below this (default 256 KiB) */
  lowWaterMark?: number
  /** bytes delivered to the peer per event-loop turn (default 4 MiB): the "link speed" */
  bytesPerTick?: number
  /** unreliable only: drop every Nth message (0 = never, the default) */
  dropEvery?: number
}

/**
 * One end of an in-memory MessageTransport pair. Messages are copied and delivered to the peer asynchronously
 * (setImmediate), `bytesPerTick` per turn, so `bufferedAmount` rises under load and 'drain' fires like on a data
 * channel. Test controls: pause()/resume() stop and restart delivery (a congested link), blackhole() silently drops
 * everything sent from now on (a cut network path, a dead peer), inject() delivers raw bytes to the peer.
 */
export class MemoryTransport extends EventEmitter implements MessageTransport {
  peer!: MemoryTransport
  readonly reliable: boolean
  readonly maxMessageSize: number
  readonly highWaterMark: number
  readonly lowWaterMark: number
  readonly bytesPerTick: number
  readonly dropEvery: number
  messagesSent = 0
  messagesDropped = 0
  private queue: Buffer[] = []
  private queueHead = 0
  private _bufferedAmount = 0
  private _closed = false
  private paused = false
  private blackholed = false
  private flushScheduled: NodeJS.Immediate | undefined

  constructor(options: MemoryTransportOptions = {}) {
    super()
    this.reliable = options.reliable ?? true
    this.maxMessageSize = options.maxMessageSize ?? 262144
    this.highWaterMark = options.highWaterMark ?? 1024 * 1024
    this.lowWaterMark = options.lowWaterMark ?? 256 * 1024
    this.bytesPerTick = options.bytesPerTick ?? 4 * 1024 * 1024
    this.dropEvery = options.dropEvery ?? 0
  }

  get bufferedAmount(): number {
    return this._bufferedAmount
  }

  get closed(): boolean {
    return this._closed
  }

  send(message: Uint8Array): boolean {
    if (this._closed) throw new DhtnetError('TRANSPORT_CLOSED', 'memory transport is closed')
    if (message.length > this.maxMessageSize) {
      throw new DhtnetError('MESSAGE_TOO_LARGE', `message of ${message.length} bytes exceeds ${this.maxMessageSize}`)
    }
    this.messagesSent++
    if (this.blackholed) return true
    if (!this.reliable && this.dropEvery > 0 && this.messagesSent % this.dropEvery === 0) {
      this.messagesDropped++
      return true
    }
    this.queue.push(Buffer.from(message)) // a copy, like a real transport
    this._bufferedAmount += message.length
    this.scheduleFlush()
    return this._bufferedAmount <= this.highWaterMark
  }

  close(err?: Error): void {
    if (this._closed) return
    this._closed = true
    // like a graceful close: the peer still gets what was queued, then its own 'close'
    const peer = this.peer
    if (this.blackholed) this.dropQueue()
    if (this.queue.length - this.queueHead === 0 || this.paused) {
      this.dropQueue()
      setImmediate(() => {
        this.emit('close', err)
        peer.closeFromPeer()
      })
    } else {
      this.once('flushed', () => {
        this.emit('close', err)
        peer.closeFromPeer()
      })
    }
  }

  /** Stop delivering to the peer: bufferedAmount grows, send() starts returning false. */
  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    this.scheduleFlush()
  }

  /** Drop everything sent from now on, silently (what the peer sees when we die without a word). */
  blackhole(): void {
    this.blackholed = true
    this.dropQueue()
  }

  /** Deliver raw bytes to the peer, bypassing everything (for malformed-frame tests). */
  inject(raw: Uint8Array): void {
    this.queue.push(Buffer.from(raw))
    this._bufferedAmount += raw.length
    this.scheduleFlush()
  }

  private closeFromPeer(): void {
    if (this._closed) return
    this._closed = true
    this.dropQueue()
    this.emit('close', undefined)
  }

  private dropQueue(): void {
    this.queue = []
    this.queueHead = 0
    this._bufferedAmount = 0
    if (this.flushScheduled) clearImmediate(this.flushScheduled)
    this.flushScheduled = undefined
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.paused) return
    this.flushScheduled = setImmediate(() => this.flush())
  }

  private flush(): void {
    this.flushScheduled = undefined
    if (this.paused) return
    const peer = this.peer
    let budget = this.bytesPerTick
    const wasAboveLow = this._bufferedAmount > this.lowWaterMark
    while (this.queueHead < this.queue.length && budget > 0) {
      const msg = this.queue[this.queueHead]!
      this.queue[this.queueHead++] = undefined as unknown as Buffer
      this._bufferedAmount -= msg.length
      budget -= msg.length
      if (!peer._closed) peer.emit('message', msg)
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- a 'message' listener can pause us
      if (this.paused) break
    }
    if (this.queueHead >= this.queue.length) {
      this.queue = []
      this.queueHead = 0
    }
    if (wasAboveLow && this._bufferedAmount <= this.lowWaterMark && !this._closed) this.emit('drain')
    if (this.queueHead < this.queue.length) this.scheduleFlush()
    else this.emit('flushed')
  }
}

export function createMemoryTransportPair(options: MemoryTransportOptions = {}, optionsB: MemoryTransportOptions = options): [MemoryTransport, MemoryTransport] {
  const a = new MemoryTransport(options)
  const b = new MemoryTransport(optionsB)
  a.peer = b
  b.peer = a
  return [a, b]
}

// ---- multiplexer test helpers ----

export interface MuxPair {
  a: Multiplexer
  b: Multiplexer
  /** reliable transports: ta is a's end, tb is b's end */
  ta: MemoryTransport
  tb: MemoryTransport
  /** datagram transports when requested */
  da?: MemoryTransport
  db?: MemoryTransport
}

export function createMuxPair(
  options: {
    a?: Partial<MultiplexerOptions>
    b?: Partial<MultiplexerOptions>
    transport?: MemoryTransportOptions
    datagram?: MemoryTransportOptions | false
  } = {},
): MuxPair {
  const [ta, tb] = createMemoryTransportPair(options.transport)
  let da: MemoryTransport | undefined
  let db: MemoryTransport | undefined
  if (options.datagram) [da, db] = createMemoryTransportPair({ reliable: false, ...options.datagram })
  const a = new Multiplexer({ reliable: ta, datagram: da, initiator: true, ...options.a })
  const b = new Multiplexer({ reliable: tb, datagram: db, initiator: false, ...options.b })
  return { a, b, ta, tb, ...(da ? { da, db } : {}) }
}

/** Close both sides and wait until both transports reported 'close'. */
export async function closeMuxPair(pair: MuxPair): Promise<void> {
  const transports = [pair.ta, pair.tb, pair.da, pair.db].filter((t): t is MemoryTransport => t !== undefined)
  const closed = transports.map((t) => (t.closed ? Promise.resolve() : new Promise<void>((r) => t.once('close', () => r()))))
  pair.a.close()
  pair.b.close()
  await Promise.all(closed)
  await new Promise((r) => setImmediate(r))
}

/** Timers and immediates keeping the loop alive (ours are unref'd: see Multiplexer.stats().timers). */
export function activeTimerHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length
}

export function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.once('end', () => resolve(Buffer.concat(chunks)))
    stream.once('error', reject)
  })
}

export function waitFor<T>(emitter: EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, (v: T) => resolve(v)))
}

/** Run a test body over a fresh pair and check that nothing is left behind: maps empty, no timers. */
export async function withPair(options: Parameters<typeof createMuxPair>[0], body: (pair: MuxPair) => Promise<void>): Promise<void> {
  const handlesBefore = activeTimerHandles()
  const pair = createMuxPair(options)
  // the multiplexer's timers are unref'd (a real transport holds the loop open): hold it open during the test
  const keepAlive = setInterval(() => {}, 1000)
  try {
    await body(pair)
  } finally {
    await closeMuxPair(pair)
    clearInterval(keepAlive)
  }
  for (const mux of [pair.a, pair.b]) {
    const s = mux.stats()
    assert.equal(s.timers, 0, 'timers left after close')
    assert.equal(s.channels + s.pendingOpens + s.pendingRequests + s.pendingProbes, 0, 'state left after close')
  }
  assert.ok(activeTimerHandles() <= handlesBefore, 'timer handles left after the test')
}
