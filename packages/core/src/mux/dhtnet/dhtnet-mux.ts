import { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import { DhtnetError, isDhtnetError } from '../../errors.js'
import { Fifo } from '../../util/fifo.js'
import { prefixLogger, toLogger, type Logger, type LoggerLike } from '../../util/log.js'
import type { ChannelInfo, ChannelKind, ChannelRequestDecision, Mux, OpenChannelOptions } from '../mux.js'
import type { DatagramChannel } from '../native/datagram-channel.js'
import { DHTNET_CAPABILITIES, DhtnetChannel, type DhtnetChannelHost } from './channel.js'
import { parseControlBody, type ControlHandler } from './control.js'
import { FrameDecoder, type FrameSink } from './decoder.js'
import {
  BEACON_PING,
  BEACON_PONG,
  CONTROL_CHANNEL,
  INITIATOR_FIRST_CHANNEL,
  MAX_FRAME_DATA,
  PROTOCOL_CHANNEL,
  RESPONDER_FIRST_CHANNEL,
  RequestState,
  VERSION_MESSAGE,
  encodeChannelRequest,
  encodeFrame,
  encodeFrameHeader,
  frameHeaderSize,
  writeFrameHeader,
} from './wire.js'

const KiB = 1024
const MiB = 1024 * KiB
/** Frames with less data than this leave in one buffer (header + data copied); larger ones as header, then data. */
const ONE_SHOT_BELOW = 8192
/** Requests this mux gave up on (timeout, abort) whose answer is still awaited, to close what the peer accepts. */
const MAX_ABANDONED_OPENS = 1024

export interface DhtnetMuxOptions {
  /** The connection's secured byte stream (the TLS socket of an ICE-TCP link). */
  stream: Duplex
  /**
   * true on the side that called connectDevice (DHTNet: ICE controlled, TLS server): it allocates channel ids from
   * 0x8000. false on the side that answered the DHT request (ICE controlling, TLS client; `dnc -l`): ids from 0x0001.
   */
  initiator: boolean
  /** Decide on a channel the peer requests (kind is always 'stream'). Default: accept when a 'channel' listener
   *  exists. A declined request's reason stays local: DHTNet's DECLINE carries none. */
  onChannelRequest?: (name: string, kind: ChannelKind) => ChannelRequestDecision | Promise<ChannelRequestDecision>
  /** Default timeout of openChannel (default 30000 ms). */
  openTimeoutMs?: number
  /** Default timeout of probe() (default 3000 ms, DHTNet's beacon timeout). */
  probeTimeoutMs?: number
  /** Send a beacon ping when nothing was received for this long; 0 disables the keepalive (default 15000 ms). Only
   *  towards a peer that announced version ≥ 1 (it answers beacons). */
  keepaliveIntervalMs?: number
  /** Close with PEER_UNREACHABLE when nothing was received for this long while the keepalive runs (default 60000 ms). */
  deadPeerTimeoutMs?: number
  /** Most channels at once, both directions, pending ones included (default 4096; DHTNet allows 65534). */
  maxChannels?: number
  /** Most of the peer's requests waiting for onChannelRequest; more are declined (default 256). */
  maxPendingRequests?: number
  /** Longest channel name in UTF-8 bytes, ours and the peer's (longer requests are declined; default 4096). */
  maxChannelNameBytes?: number
  /** Readable buffer of a channel: above it the connection stops reading until the reader catches up (default 256 KiB). */
  channelReadableHighWaterMark?: number
  /** Writable buffer of a channel (default 64 KiB). */
  channelWritableHighWaterMark?: number
  /** All channels' unread data together: above it the connection stops reading (default 16 MiB). */
  maxReceiveBufferBytes?: number
  /** Stop sending data frames while the stream's writableLength is at least this (default 256 KiB). */
  sendHighWaterBytes?: number
  /** Stop reading while the stream's writableLength is above this: control answers (pongs, request answers) to a
   *  peer that does not read pile up no further (default 4 MiB). */
  maxWriteBufferBytes?: number
  /** After close(): how long the stream may take to end gracefully before it is destroyed (default 5000 ms). */
  closeTimeoutMs?: number
  logger?: LoggerLike
}

export interface DhtnetMuxStats {
  channels: number
  pendingOpens: number
  pendingRequests: number
  /** Our requests given up (timeout, abort) whose answer is still awaited. */
  abandonedOpens: number
  /** Beacon pings waiting for a pong (probes and keepalive). */
  pendingPings: number
  /** Channels waiting in the send scheduler. */
  scheduled: number
  /** Live timers owned by the multiplexer (0 once closed and the stream is gone). */
  timers: number
  /** Data frames for channels that do not exist (here), and their bytes. */
  droppedFrames: number
  droppedBytes: number
  /** Objects that were not frames, skipped. */
  skippedObjects: number
  /** Control messages not understood, or answers to requests we did not make. */
  ignoredMessages: number
  /** Reading the stream is paused (a reader is behind, or the peer does not read our answers). */
  readPaused: boolean
  /** Unread bytes held by the channels (an upper estimate). */
  receiveBuffered: number
  bytesIn: number
  bytesOut: number
}

interface PendingOpen {
  name: string
  resolve: (ch: DhtnetChannel) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
  cleanupSignal?: () => void
}

interface PendingRequest {
  name: string
  nameBytes: Buffer
}

interface PendingProbe {
  startedAt: number
  resolve: (rttMs: number) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * DHTNet's MultiplexedSocket v1 over one byte stream (the TLS socket), byte-compatible with the C++ library: named
 * channels opened with one round trip, beacons, EOF frames. See README.md in this folder for the wire format and
 * where its semantics differ from our native multiplexer (no half-close, no per-channel flow control, no reasons).
 *
 * Events: 'channel' (DhtnetChannel) for accepted incoming channels; 'close' (err?: Error) once.
 */
export class DhtnetMux extends EventEmitter implements Mux {
  readonly protocol = 'dhtnet'
  readonly capabilities = DHTNET_CAPABILITIES
  readonly initiator: boolean

  private readonly stream: Duplex
  private readonly onChannelRequest: DhtnetMuxOptions['onChannelRequest']
  private readonly log: Logger
  private readonly openTimeoutMs: number
  private readonly probeTimeoutMs: number
  private readonly keepaliveIntervalMs: number
  private readonly deadPeerTimeoutMs: number
  private readonly maxChannels: number
  private readonly maxPendingRequests: number
  private readonly maxNameBytes: number
  private readonly channelReadableHwm: number
  private readonly channelWritableHwm: number
  private readonly maxReceiveBuffer: number
  private readonly sendHighWater: number
  private readonly maxWriteBuffer: number
  private readonly closeTimeoutMs: number

  private readonly decoder: FrameDecoder
  private readonly channelTable = new Map<number, DhtnetChannel>()
  private readonly pendingOpens = new Map<number, PendingOpen>()
  private readonly pendingRequests = new Map<number, PendingRequest>()
  private readonly abandoned = new Set<number>()
  private nextChannelId: number
  private peerVersion: number | undefined

  /** beacon pings awaiting a pong, in order: a probe, or null for a keepalive ping */
  private readonly pings = new Fifo<PendingProbe | null>()
  private probeCount = 0

  // sending
  private readonly ready = new Fifo<DhtnetChannel>()
  private pumping = false
  private pumpQueued = false

  // receiving and its flow control
  private rxTarget: DhtnetChannel | undefined
  private readonly blocked = new Set<DhtnetChannel>()
  private readonly holding = new Set<DhtnetChannel>()
  private rxBuffered = 0
  private writeBlocked = false
  private readPaused = false

  private keepaliveTimer: NodeJS.Timeout | undefined
  private destroyTimer: NodeJS.Timeout | undefined
  private receivedSinceTick = false
  private lastReceivedAt = Date.now()

  private _bytesIn = 0
  private _bytesOut = 0
  private droppedFrames = 0
  private droppedBytes = 0
  private skippedObjects = 0
  private ignoredMessages = 0
  private _closed = false
  private closeError: Error | undefined

  private readonly channelHost: DhtnetChannelHost
  private readonly sink: FrameSink
  private readonly controlHandler: ControlHandler

  constructor(options: DhtnetMuxOptions) {
    super()
    this.stream = options.stream
    this.initiator = options.initiator
    this.onChannelRequest = options.onChannelRequest
    this.log = prefixLogger(toLogger(options.logger), 'dhtnet-mux')
    this.openTimeoutMs = options.openTimeoutMs ?? 30000
    this.probeTimeoutMs = options.probeTimeoutMs ?? 3000
    this.keepaliveIntervalMs = options.keepaliveIntervalMs ?? 15000
    this.deadPeerTimeoutMs = options.deadPeerTimeoutMs ?? 60000
    this.maxChannels = Math.min(options.maxChannels ?? 4096, 65534)
    this.maxPendingRequests = options.maxPendingRequests ?? 256
    // the request [name, id, state] must fit one frame
    this.maxNameBytes = Math.min(options.maxChannelNameBytes ?? 4096, MAX_FRAME_DATA - 9)
    this.channelReadableHwm = options.channelReadableHighWaterMark ?? 256 * KiB
    this.channelWritableHwm = options.channelWritableHighWaterMark ?? 64 * KiB
    this.maxReceiveBuffer = options.maxReceiveBufferBytes ?? 16 * MiB
    // at or above the stream's own mark, so that stopping there means its write() returned false and 'drain' comes
    this.sendHighWater = Math.max(options.sendHighWaterBytes ?? 256 * KiB, this.stream.writableHighWaterMark)
    this.maxWriteBuffer = Math.max(options.maxWriteBufferBytes ?? 4 * MiB, this.sendHighWater)
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5000
    this.nextChannelId = this.initiator ? INITIATOR_FIRST_CHANNEL : RESPONDER_FIRST_CHANNEL
    if (this.maxChannels < 1) throw new DhtnetError('INVALID_ARGUMENT', 'maxChannels must be at least 1')

    this.channelHost = {
      closedError: () => (this._closed ? this.channelCloseError() : undefined),
      wantSend: (ch) => this.schedule(ch),
      sendEof: (ch) => this.sendEof(ch),
      forget: (ch) => this.forget(ch),
      readBlocked: (ch) => this.blocked.add(ch),
      readProgress: (ch) => this.readProgress(ch),
    }
    this.sink = {
      frameStart: (channel, length) => this.onFrameStart(channel, length),
      frameData: (_channel, data) => this.onFrameData(data),
      control: (channel, body) => parseControlBody(channel, body, this.controlHandler),
      skipped: (reason) => {
        this.skippedObjects++
        this.debugSometimes(this.skippedObjects, `skipped ${reason}`)
      },
      fatal: (reason) => this.shutdown(protocolError(reason)),
    }
    this.controlHandler = {
      version: (v) => this.onVersion(v),
      beacon: (ping) => (ping ? this.sendControl(PROTOCOL_CHANNEL, BEACON_PONG) : this.onPong()),
      request: (name, id, state) => {
        if (state === RequestState.REQUEST) this.onRequest(name, id)
        else if (state === RequestState.ACCEPT) this.onAccept(id)
        else this.onDecline(id) // DECLINE, or any other state (C++ treats them alike)
      },
      ignored: (reason) => {
        this.ignoredMessages++
        this.debugSometimes(this.ignoredMessages, `ignored a control message: ${reason}`)
      },
    }
    this.decoder = new FrameDecoder(this.sink)

    this.stream.on('data', this.onStreamData)
    this.stream.on('end', this.onStreamEnd)
    this.stream.on('close', this.onStreamClose)
    this.stream.on('error', this.onStreamError)
    this.stream.on('drain', this.onDrain)
    if (this.stream.destroyed || this.stream.readableEnded || this.stream.writableEnded) {
      // never throw from here for a stream that died early: close asynchronously like any other death
      queueMicrotask(() => this.shutdown(new DhtnetError('CONNECTION_CLOSED', 'the connection was already closed')))
      return
    }
    // DHTNet sends its version as its read loop starts; nothing waits for the peer's
    this.sendControl(PROTOCOL_CHANNEL, VERSION_MESSAGE)
    if (this.keepaliveIntervalMs > 0) this.startKeepalive()
  }

  get closed(): boolean {
    return this._closed
  }

  /** Raw bytes received on the stream (every frame byte). */
  get bytesIn(): number {
    return this._bytesIn
  }

  /** Raw bytes written to the stream (every frame byte). */
  get bytesOut(): number {
    return this._bytesOut
  }

  /** The version the peer announced ({"v": n}); undefined until it arrived. */
  get peerProtocolVersion(): number | undefined {
    return this.peerVersion
  }

  /** Open a channel: one round trip on a live connection. */
  openChannel(name: string, options: OpenChannelOptions = {}): Promise<DhtnetChannel> {
    if (typeof name !== 'string') return Promise.reject(new DhtnetError('BAD_CHANNEL_NAME', 'channel name must be a string'))
    const nameBytes = Buffer.from(name, 'utf8')
    if (nameBytes.length > this.maxNameBytes) {
      return Promise.reject(
        new DhtnetError('BAD_CHANNEL_NAME', `channel name is ${nameBytes.length} bytes; the limit is ${this.maxNameBytes}`, {
          hint: 'use a shorter channel name',
        }),
      )
    }
    const { signal } = options
    if (signal?.aborted) return Promise.reject(new DhtnetError('ABORTED', `opening channel "${name}" was aborted`, { cause: signal.reason }))
    if (this._closed) return Promise.reject(this.operationCloseError())
    const id = this.openCount() < this.maxChannels ? this.allocateChannelId() : undefined
    if (id === undefined) {
      return Promise.reject(
        new DhtnetError('TOO_MANY_CHANNELS', `${this.openCount()} channels are already open on this connection`, {
          hint: 'close unused channels',
        }),
      )
    }
    const timeoutMs = options.timeoutMs ?? this.openTimeoutMs
    return new Promise<DhtnetChannel>((resolve, reject) => {
      const giveUp = (err: Error): void => {
        if (this.pendingOpens.get(id) !== pending) return
        this.forgetPendingOpen(id)
        // DHTNet cannot cancel a request: remember the id, and close the channel if the peer accepts it later
        this.abandoned.add(id)
        if (this.abandoned.size > MAX_ABANDONED_OPENS) this.abandoned.delete(this.abandoned.values().next().value!)
        reject(err)
      }
      const timer = setTimeout(() => giveUp(new DhtnetError('TIMEOUT', `the peer did not answer the request for channel "${name}" within ${timeoutMs} ms`)), timeoutMs)
      timer.unref()
      const pending: PendingOpen = { name, resolve, reject, timer }
      if (signal) {
        const onAbort = (): void => giveUp(new DhtnetError('ABORTED', `opening channel "${name}" was aborted`, { cause: signal.reason }))
        signal.addEventListener('abort', onAbort, { once: true })
        pending.cleanupSignal = () => signal.removeEventListener('abort', onAbort)
      }
      this.pendingOpens.set(id, pending)
      this.sendControl(CONTROL_CHANNEL, encodeChannelRequest(nameBytes, id, RequestState.REQUEST))
    })
  }

  /** DHTNet has no datagram channels. */
  openDatagramChannel(name: string): Promise<DatagramChannel> {
    return Promise.reject(
      new DhtnetError('UNSUPPORTED_TRANSPORT', `datagram channel "${name}": DHTNet's multiplexer has no datagram channels`, {
        hint: 'open a stream channel instead, or connect to a peer that speaks our native multiplexer',
      }),
    )
  }

  /**
   * Send a beacon ping and resolve with the round trip in ms; no pong within `timeoutMs` (default 3000) closes the
   * multiplexer with PEER_UNREACHABLE. A peer that has not announced version ≥ 1 cannot answer beacons: as DHTNet's
   * canSendBeacon, nothing is sent and the promise resolves with NaN.
   */
  probe(timeoutMs?: number): Promise<number> {
    if (this._closed) return Promise.reject(this.operationCloseError())
    if (!this.peerAnswersBeacons()) return Promise.resolve(NaN)
    const timeout = timeoutMs ?? this.probeTimeoutMs
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new DhtnetError('PEER_UNREACHABLE', `the peer did not answer a beacon within ${timeout} ms`, {
          hint: 'the network path to the peer is gone; a new connection is needed',
        })
        reject(err)
        this.shutdown(err)
      }, timeout)
      timer.unref()
      this.probeCount++
      this.pings.push({ startedAt: performance.now(), resolve, reject, timer })
      this.sendControl(PROTOCOL_CHANNEL, BEACON_PING)
    })
  }

  /** Open channels, both directions (DHTNet's getChannelList). */
  channels(): ChannelInfo[] {
    const out: ChannelInfo[] = []
    for (const ch of this.channelTable.values()) {
      out.push({
        id: ch.channelId,
        name: ch.name,
        kind: 'stream',
        initiator: ch.initiator,
        bytesIn: ch.bytesRead,
        bytesOut: ch.bytesWritten,
        createdAt: ch.createdAt,
      })
    }
    return out
  }

  stats(): DhtnetMuxStats {
    let timers = this.pendingOpens.size + this.probeCount
    if (this.keepaliveTimer) timers++
    if (this.destroyTimer) timers++
    return {
      channels: this.channelTable.size,
      pendingOpens: this.pendingOpens.size,
      pendingRequests: this.pendingRequests.size,
      abandonedOpens: this.abandoned.size,
      pendingPings: this.pings.length,
      scheduled: this.ready.length,
      timers,
      droppedFrames: this.droppedFrames,
      droppedBytes: this.droppedBytes,
      skippedObjects: this.skippedObjects,
      ignoredMessages: this.ignoredMessages,
      readPaused: this.readPaused,
      receiveBuffered: this.rxBuffered,
      bytesIn: this._bytesIn,
      bytesOut: this._bytesOut,
    }
  }

  /**
   * Close the multiplexer and end the stream (destroyed after closeTimeoutMs if the peer does not end it). Every
   * open channel ends: with `err` when given ('error' then 'close'), otherwise quietly. Idempotent.
   */
  close(err?: Error): void {
    this.shutdown(err)
  }

  // ---- channels ----------------------------------------------------------------------------------------------

  private openCount(): number {
    return this.channelTable.size + this.pendingOpens.size + this.pendingRequests.size
  }

  private idInUse(id: number): boolean {
    return this.channelTable.has(id) || this.pendingOpens.has(id) || this.pendingRequests.has(id) || this.abandoned.has(id)
  }

  /** DHTNet's addChannel: the next id from our start, uint16 wrap-around, skipping 0, 0xffff and ids in use. */
  private allocateChannelId(): number | undefined {
    for (let i = 0; i < 0x10000; i++) {
      const id = this.nextChannelId
      this.nextChannelId = (id + 1) & 0xffff
      if (id === CONTROL_CHANNEL || id === PROTOCOL_CHANNEL || this.idInUse(id)) continue
      return id
    }
    return undefined
  }

  private forgetPendingOpen(id: number): PendingOpen | undefined {
    const pending = this.pendingOpens.get(id)
    if (!pending) return undefined
    this.pendingOpens.delete(id)
    clearTimeout(pending.timer)
    pending.cleanupSignal?.()
    return pending
  }

  private newChannel(id: number, name: string, initiator: boolean): DhtnetChannel {
    const ch = new DhtnetChannel({
      host: this.channelHost,
      name,
      channelId: id,
      initiator,
      readableHighWaterMark: this.channelReadableHwm,
      writableHighWaterMark: this.channelWritableHwm,
    })
    this.channelTable.set(id, ch)
    return ch
  }

  private onRequest(nameBytes: Buffer, id: number): void {
    const decline = (why: string): void => {
      this.log('debug', `declined channel ${id}: ${why}`)
      this.sendControl(CONTROL_CHANNEL, encodeChannelRequest(nameBytes, id, RequestState.DECLINE))
    }
    if (id === CONTROL_CHANNEL || id === PROTOCOL_CHANNEL) return decline(`channel ${id} is reserved`)
    if (this.idInUse(id)) return decline('the channel already exists')
    if (nameBytes.length > this.maxNameBytes) return decline(`the name is longer than ${this.maxNameBytes} bytes`)
    if (this.openCount() >= this.maxChannels) return decline(`too many channels (limit ${this.maxChannels})`)
    if (this.pendingRequests.size >= this.maxPendingRequests) return decline('too many requests waiting for an answer')
    const request: PendingRequest = { name: nameBytes.toString('utf8'), nameBytes: Buffer.from(nameBytes) }
    this.pendingRequests.set(id, request)

    let decision: ChannelRequestDecision | Promise<ChannelRequestDecision>
    try {
      decision = this.onChannelRequest ? this.onChannelRequest(request.name, 'stream') : this.listenerCount('channel') > 0
    } catch (err) {
      this.log('warn', `onChannelRequest threw: ${(err as Error | undefined)?.message ?? String(err)}`)
      decision = { accept: false, reason: 'the channel request handler failed' }
    }
    if (decision instanceof Promise) {
      decision.then(
        (d) => this.answerRequest(id, request, d),
        (err) => {
          this.log('warn', `onChannelRequest failed: ${(err as Error | undefined)?.message ?? String(err)}`)
          this.answerRequest(id, request, { accept: false, reason: 'the channel request handler failed' })
        },
      )
    } else {
      this.answerRequest(id, request, decision)
    }
  }

  // decision: what the application returned (a JavaScript caller may return anything, null included)
  private answerRequest(id: number, request: PendingRequest, decision: ChannelRequestDecision | null | undefined): void {
    if (this._closed || this.pendingRequests.get(id) !== request) return
    this.pendingRequests.delete(id)
    if (decision !== true) {
      const reason = typeof decision === 'object' && decision && typeof decision.reason === 'string' ? decision.reason : 'declined'
      // DHTNet's DECLINE has no room for a reason: it stays in our log
      this.log('debug', `declined channel "${request.name}" (${id}): ${reason}`)
      this.sendControl(CONTROL_CHANNEL, encodeChannelRequest(request.nameBytes, id, RequestState.DECLINE))
      return
    }
    this.sendControl(CONTROL_CHANNEL, encodeChannelRequest(request.nameBytes, id, RequestState.ACCEPT))
    this.emit('channel', this.newChannel(id, request.name, false))
  }

  private onAccept(id: number): void {
    const pending = this.forgetPendingOpen(id)
    if (pending) {
      const ch = this.newChannel(id, pending.name, true)
      ch.muxHoldUntilDelivered()
      pending.resolve(ch)
      // the caller's continuation runs in a microtask; a setImmediate runs after it
      setImmediate(() => ch.muxDelivered())
      return
    }
    if (this.abandoned.delete(id)) {
      // accepted after we gave up: close it at once
      this.writeFrame(encodeFrame(id))
      return
    }
    this.ignoredMessages++
    this.debugSometimes(this.ignoredMessages, `ignored an ACCEPT for channel ${id}, which we did not request`)
  }

  private onDecline(id: number): void {
    const pending = this.forgetPendingOpen(id)
    if (pending) {
      pending.reject(
        new DhtnetError('CHANNEL_DECLINED', `the peer declined channel "${pending.name}"`, {
          hint: 'the peer does not offer this service to us (DHTNet gives no reason)',
        }),
      )
      return
    }
    if (this.abandoned.delete(id)) return
    this.ignoredMessages++
    this.debugSometimes(this.ignoredMessages, `ignored a DECLINE for channel ${id}, which we did not request`)
  }

  private sendEof(ch: DhtnetChannel): void {
    if (this.channelTable.get(ch.channelId) !== ch) return
    this.channelTable.delete(ch.channelId)
    this.writeFrame(encodeFrame(ch.channelId))
  }

  private forget(ch: DhtnetChannel): void {
    if (this.channelTable.get(ch.channelId) === ch) this.channelTable.delete(ch.channelId)
  }

  // ---- sending -----------------------------------------------------------------------------------------------

  private sendControl(channel: number, body: Buffer): void {
    this.writeFrame(encodeFrame(channel, body))
  }

  private writeFrame(frame: Buffer): void {
    if (this._closed) return
    this._bytesOut += frame.length
    this.stream.write(frame)
    if (!this.writeBlocked && this.stream.writableLength > this.maxWriteBuffer) {
      this.writeBlocked = true
      this.updateReadPause()
    }
  }

  private schedule(ch: DhtnetChannel): void {
    if (this._closed) return
    if (!ch.scheduled) {
      ch.scheduled = true
      this.ready.push(ch)
    }
    // on a microtask: the writes of one tick leave corked together
    if (!this.pumpQueued && !this.pumping) {
      this.pumpQueued = true
      queueMicrotask(() => {
        this.pumpQueued = false
        this.pump()
      })
    }
  }

  /**
   * Hand data frames to the stream, one frame per channel in turn (round robin), until the stream holds
   * sendHighWater bytes; resume on 'drain'. A short stream queue is what lets a small message on one channel
   * overtake a bulk transfer on another.
   */
  private pump(): void {
    if (this.pumping || this._closed) return
    this.pumping = true
    let corked = false
    try {
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- the loop body can close us (TypeScript keeps the narrowing from the check above)
      while (this.ready.length > 0 && !this._closed) {
        if (this.stream.writableLength >= this.sendHighWater) break // 'drain' resumes
        const ch = this.ready.shift()!
        ch.scheduled = false
        if (!ch.hasFrame()) continue
        const { data, done } = ch.takeFrame()
        if (!corked) {
          this.stream.cork()
          corked = true
        }
        this.writeDataFrame(ch.channelId, data)
        if (ch.hasFrame()) {
          ch.scheduled = true
          this.ready.push(ch)
        }
        // the write callback may write again synchronously: that lands at the end of the round
        done?.()
      }
    } catch (err) {
      this.shutdown(new DhtnetError('CONNECTION_CLOSED', 'the connection failed while sending', { cause: err }))
    } finally {
      this.pumping = false
      if (corked) this.stream.uncork()
    }
  }

  private writeDataFrame(id: number, data: Buffer): void {
    const headerBytes = frameHeaderSize(id, data.length)
    this._bytesOut += headerBytes + data.length
    if (data.length < ONE_SHOT_BELOW) {
      const frame = Buffer.allocUnsafe(headerBytes + data.length)
      writeFrameHeader(frame, 0, id, data.length)
      data.copy(frame, headerBytes)
      this.stream.write(frame)
    } else {
      // as C++: the header, then the data (not copied here)
      this.stream.write(encodeFrameHeader(id, data.length))
      this.stream.write(data)
    }
  }

  private readonly onDrain = (): void => {
    if (this._closed) return
    if (this.writeBlocked && this.stream.writableLength <= this.maxWriteBuffer) {
      this.writeBlocked = false
      this.updateReadPause()
    }
    this.pump()
  }

  // ---- receiving ---------------------------------------------------------------------------------------------

  private readonly onStreamData = (chunk: Buffer): void => {
    if (this._closed) return
    this._bytesIn += chunk.length
    this.receivedSinceTick = true
    try {
      this.decoder.push(chunk)
    } catch (err) {
      // a bug here or in an application listener: never let it escape into the stream's event loop
      this.log('error', `error while handling received data: ${(err as Error | undefined)?.stack ?? String(err)}`)
      this.shutdown(
        isDhtnetError(err, 'PROTOCOL_ERROR')
          ? err
          : new DhtnetError('INTERNAL_ERROR', `error while handling received data: ${(err as Error | undefined)?.message ?? String(err)}`, { cause: err }),
      )
      return
    }
    this.updateReadPause()
  }

  private onFrameStart(channel: number, length: number): void {
    const ch = this.channelTable.get(channel)
    if (length === 0) {
      // EOF. Unknown: the channel was closed here too (both sides ended at once), or never existed.
      this.rxTarget = undefined
      if (!ch) return
      this.channelTable.delete(channel)
      ch.muxEof()
      return
    }
    this.rxTarget = ch
    ch?.muxFrameStart(length)
    if (!ch) {
      this.droppedFrames++
      this.debugSometimes(this.droppedFrames, `dropped a frame of ${length} bytes for channel ${channel}, which does not exist`)
    }
  }

  private onFrameData(data: Buffer): void {
    const ch = this.rxTarget
    if (!ch) {
      this.droppedBytes += data.length
      return
    }
    this.rxBuffered += data.length
    this.holding.add(ch)
    ch.muxData(data)
  }

  private onVersion(v: number): void {
    if (this.peerVersion === undefined) this.log('debug', `peer multiplexer version ${v}${v >= 1 ? '' : ' (no beacons)'}`)
    this.peerVersion = v
  }

  private peerAnswersBeacons(): boolean {
    return this.peerVersion !== undefined && this.peerVersion >= 1
  }

  private onPong(): void {
    if (this.pings.length === 0) {
      this.ignoredMessages++
      return
    }
    const probe = this.pings.shift()
    if (!probe) return // a keepalive ping's pong
    this.probeCount--
    clearTimeout(probe.timer)
    probe.resolve(performance.now() - probe.startedAt)
  }

  // ---- receive flow control: the connection stops reading while a reader is behind ---------------------------

  private readProgress(ch: DhtnetChannel): void {
    this.blocked.delete(ch)
    if (ch.destroyed || ch.readableEnded) this.holding.delete(ch)
    if (this.readPaused) this.updateReadPause()
  }

  private overReceiveBudget(): boolean {
    if (this.rxBuffered <= this.maxReceiveBuffer) return false
    // the running sum only grows between checks: recount what the channels really hold
    let total = 0
    for (const ch of this.holding) {
      const held = ch.destroyed ? 0 : ch.readableLength
      if (held === 0) this.holding.delete(ch)
      total += held
    }
    this.rxBuffered = total
    return total > this.maxReceiveBuffer
  }

  private updateReadPause(): void {
    if (this._closed) return
    const pause = this.blocked.size > 0 || this.writeBlocked || this.overReceiveBudget()
    if (pause && !this.readPaused) {
      this.readPaused = true
      this.stream.pause()
    } else if (!pause && this.readPaused) {
      this.readPaused = false
      this.stream.resume()
    }
  }

  // ---- keepalive ---------------------------------------------------------------------------------------------

  private startKeepalive(): void {
    const tick = Math.max(10, Math.min(this.keepaliveIntervalMs, Math.floor(this.deadPeerTimeoutMs / 4)))
    let lastPingAt = 0
    this.keepaliveTimer = setInterval(() => {
      const now = Date.now()
      // while we do not read, silence proves nothing
      if (this.receivedSinceTick || this.readPaused) {
        this.receivedSinceTick = false
        this.lastReceivedAt = now
      }
      if (!this.peerAnswersBeacons()) return
      const silentFor = now - this.lastReceivedAt
      if (silentFor >= this.deadPeerTimeoutMs) {
        this.shutdown(
          new DhtnetError('PEER_UNREACHABLE', `nothing received from the peer for ${silentFor} ms`, {
            hint: 'the peer process died or the network path is gone',
          }),
        )
        return
      }
      if (silentFor >= this.keepaliveIntervalMs && now - lastPingAt >= this.keepaliveIntervalMs) {
        lastPingAt = now
        this.pings.push(null)
        this.sendControl(PROTOCOL_CHANNEL, BEACON_PING)
      }
    }, tick)
    this.keepaliveTimer.unref()
  }

  // ---- closing -----------------------------------------------------------------------------------------------

  private readonly onStreamEnd = (): void => {
    const partial = this.decoder.atBoundary ? '' : ' in the middle of a frame'
    this.shutdown(new DhtnetError('CONNECTION_CLOSED', `the peer closed the connection${partial}`))
  }

  private readonly onStreamClose = (): void => {
    this.shutdown(new DhtnetError('CONNECTION_CLOSED', 'the connection closed'))
  }

  private readonly onStreamError = (err: Error): void => {
    // stays attached after close: a late error of a dying stream is not an uncaught exception
    if (this._closed) return
    this.shutdown(new DhtnetError('CONNECTION_CLOSED', `the connection failed: ${err.message}`, { cause: err }))
  }

  private channelCloseError(): Error {
    return this.closeError ?? new DhtnetError('CONNECTION_CLOSED', 'the multiplexer is closed')
  }

  private operationCloseError(): Error {
    return this.closeError ?? new DhtnetError('CONNECTION_CLOSED', 'the connection is closed')
  }

  private shutdown(err: Error | undefined): void {
    if (this._closed) return
    this._closed = true
    this.closeError = err
    if (err) this.log('debug', `closing: ${err.message}`)
    this.decoder.stop()
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer)
    this.keepaliveTimer = undefined

    const stream = this.stream
    stream.off('data', this.onStreamData)
    stream.off('end', this.onStreamEnd)
    stream.off('close', this.onStreamClose)
    stream.off('drain', this.onDrain)

    const opErr = this.operationCloseError()
    for (const id of [...this.pendingOpens.keys()]) this.forgetPendingOpen(id)?.reject(opErr)
    while (this.pings.length > 0) {
      const probe = this.pings.shift()
      if (!probe) continue
      clearTimeout(probe.timer)
      probe.reject(opErr)
    }
    this.probeCount = 0
    this.pendingRequests.clear()
    this.abandoned.clear()
    this.ready.clear()
    this.blocked.clear()
    this.holding.clear()
    const open = [...this.channelTable.values()]
    this.channelTable.clear()
    for (const ch of open) ch.muxAbort(err)

    if (!stream.destroyed) {
      // keep reading (and discarding) so the peer's close reaches us
      stream.resume()
      if (isDhtnetError(err, 'PROTOCOL_ERROR') || isDhtnetError(err, 'PEER_UNREACHABLE')) {
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
    this.emit('close', err)
  }

  /** Debug-log the first occurrences of a counted event, then every 1000th. */
  private debugSometimes(count: number, message: string): void {
    if (count <= 10 || count % 1000 === 0) this.log('debug', `${message} (${count} so far)`)
  }
}

function protocolError(reason: string): DhtnetError {
  return new DhtnetError('PROTOCOL_ERROR', `DHTNet multiplexer protocol error: ${reason}`)
}
