import { EventEmitter } from 'node:events'
import { DhtnetError } from '../../errors.js'
import type { MessageTransport } from '../../transport/transport.js'
import { NATIVE_CAPABILITIES, type ChannelInfo, type ChannelRequestDecision, type Mux, type MuxCapabilities, type OpenChannelOptions } from '../mux.js'
import { toLogger, type Logger, type LoggerLike } from '../../util/log.js'
import { ChannelSocket, type StreamChannelHost } from './channel-socket.js'
import { DatagramChannel, type DatagramChannelHost } from './datagram-channel.js'
import { Fifo } from '../../util/fifo.js'
import {
  FRAME_HEADER_BYTES,
  FrameType,
  HELLO_FLAG_CONNECTION_WINDOW,
  HELLO_FLAG_DATAGRAM_TRANSPORT,
  PING_BODY_BYTES,
  MAX_CHANNEL_NAME_BYTES,
  MUX_PROTOCOL_VERSION,
  encodeAccept,
  encodeFrame,
  encodeHello,
  encodeOpen,
  encodePing,
  encodeWindow,
  encodeReason,
  type ChannelKind,
} from './frames.js'

export type { ChannelKind } from './frames.js'
export type { ChannelRequestDecision, OpenChannelOptions, ChannelInfo } from '../mux.js'

/** The library's logger shape (transport/types.ts): a (level, message) function or an object with one method per level. */
export type MuxLogger = LoggerLike

export interface MultiplexerOptions {
  /** Ordered, reliable transport: carries every stream channel and all control frames. */
  reliable: MessageTransport
  /** Optional unordered, unreliable transport for datagram channels (without it, datagrams ride `reliable`). */
  datagram?: MessageTransport
  /** true on the side that initiated the connection: it allocates odd channel ids, the other side even ones. */
  initiator: boolean
  /** Decide on a channel the peer opens. Default: accept when a 'channel'/'datagram-channel' listener exists. */
  onChannelRequest?: (name: string, kind: ChannelKind) => ChannelRequestDecision | Promise<ChannelRequestDecision>
  /** Send a PING when nothing was received for this long (default 5000 ms). */
  keepaliveIntervalMs?: number
  /** Close with PEER_UNREACHABLE when nothing was received for this long (default 20000 ms). */
  deadPeerTimeoutMs?: number
  /** Receive window per stream channel, in bytes (default 1 MiB). */
  channelWindowBytes?: number
  /** Stop feeding the reliable transport while its bufferedAmount is at least this (default 512 KiB). */
  sendHighWaterBytes?: number
  /** The same while more than one channel is open (default: sendHighWaterBytes): a small message on one channel then
   *  waits behind at most this much of another's bulk (a dsh keystroke beside a transfer). Only for a transport that
   *  emits 'drain' below it (a TLS socket's empties to 0); above a data channel's bufferedAmountLowThreshold, 'drain'
   *  never comes and the 20 ms poll would pace the sender. */
  sharedSendHighWaterBytes?: number
  /** Drop datagrams while the datagram transport's bufferedAmount is at least this (default 256 KiB). */
  datagramHighWaterBytes?: number
  /** Largest DATA frame payload (default 64 KiB, capped by the transport's maxMessageSize). */
  maxFramePayloadBytes?: number
  /** Most channels open at once (both directions, pending requests included); more are declined (default 1024). */
  maxChannels?: number
  /** Most of the peer's channel requests waiting for onChannelRequest; more are declined (default 512). */
  maxPendingRequests?: number
  /**
   * Receive window of the whole connection, in bytes (default 16 MiB): what the peer may have in flight or waiting
   * unread, all channels together. With the per-channel windows it bounds what one peer can make us hold: this plus
   * each open channel's readable buffer (64 KiB).
   */
  connectionWindowBytes?: number
  /** Replies we owe the peer (PONG, DECLINE, ...) beyond the send high water: past this many queued bytes the peer
   *  is not reading what it asks for, and the connection is closed (default 4 MiB). */
  maxControlBacklogBytes?: number
  /** Default timeout of openChannel/openDatagramChannel (default 30000 ms). */
  openTimeoutMs?: number
  /**
   * Send nothing until the peer's HELLO arrived ('hello' event), then answer with ours. The connection layer uses it
   * on the requester's side when several transports race: the responder picks the winning link by starting its
   * multiplexer there first, and the requester keeps the link whose HELLO came first.
   */
  awaitPeerHello?: boolean
  logger?: LoggerLike
}

export interface MultiplexerStats {
  /** Open channels (stream + datagram) in the channel table. */
  channels: number
  /** Our OPENs waiting for ACCEPT/DECLINE. */
  pendingOpens: number
  /** The peer's OPENs waiting for onChannelRequest. */
  pendingRequests: number
  /** Probes waiting for a PONG. */
  pendingProbes: number
  /** Stream channels waiting in the send scheduler. */
  scheduled: number
  /** Live timers owned by the multiplexer (0 once closed). */
  timers: number
  /** Frames ignored: unknown type or unknown channel. */
  ignoredFrames: number
  bytesIn: number
  bytesOut: number
}

type Channel = ChannelSocket | DatagramChannel

interface PendingOpen {
  name: string
  kind: ChannelKind
  resolve: (ch: Channel) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
  cleanupSignal?: () => void
}

interface PendingRequest {
  name: string
  kind: ChannelKind
  window: number
}

interface PendingProbe {
  startedAt: number
  resolve: (rttMs: number) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

const KiB = 1024

function frameTypeName(type: number): string {
  for (const [name, code] of Object.entries(FrameType)) if (code === type) return name
  return `0x${type.toString(16)}`
}

function protocolError(message: string): DhtnetError {
  return new DhtnetError('PROTOCOL_ERROR', `multiplexer protocol error: ${message}`, {
    hint: 'the peer runs an incompatible or faulty implementation',
  })
}

/**
 * Many named channels over one connection: stream channels (ChannelSocket, a Duplex with per-channel credit flow
 * control and half-close) on the reliable transport, datagram channels on the unreliable one.
 *
 * Events: 'channel' (ChannelSocket) and 'datagram-channel' (DatagramChannel) for accepted incoming channels;
 * 'hello' (version) when the peer's HELLO arrived; 'close' (err?: Error) once.
 */
export class Multiplexer extends EventEmitter implements Mux {
  readonly protocol = 'native'
  readonly capabilities: MuxCapabilities = NATIVE_CAPABILITIES
  readonly initiator: boolean
  private readonly reliable: MessageTransport
  private readonly datagram: MessageTransport | undefined
  private readonly onChannelRequest: MultiplexerOptions['onChannelRequest']
  private readonly log: Logger
  private drainPollWarned = false

  private readonly keepaliveIntervalMs: number
  private readonly deadPeerTimeoutMs: number
  private readonly channelWindow: number
  private readonly sendHighWater: number
  private readonly sharedSendHighWater: number
  private readonly datagramHighWater: number
  private readonly maxDataPayload: number
  private readonly maxChannels: number
  private readonly maxPendingRequests: number
  private readonly openTimeoutMs: number
  private readonly connectionWindow: number
  private readonly maxControlBacklog: number
  /** DATA bytes the peer lets us send on the whole connection (its HELLO sets it; Infinity for a peer without it). */
  private connectionSendCredit = 0
  /** DATA bytes we still let the peer send before our next connection WINDOW. */
  private connectionReceiveAllowance: number
  /** Bytes that left our receive budget and were not yet returned to the peer as connection credit. */
  private connectionUnacknowledged = 0

  private readonly channelTable = new Map<number, Channel>()
  private readonly pendingOpens = new Map<number, PendingOpen>()
  private readonly pendingRequests = new Map<number, PendingRequest>()
  private readonly probes = new Map<number, PendingProbe>()
  private nextChannelId: number
  private nextProbeNonce = 1

  /** round-robin queue of stream channels with data and credit */
  private readonly ready = new Fifo<ChannelSocket>()
  private pumping = false
  /** the reliable transport asked us to wait for 'drain' */
  private transportFull = false
  private drainPoll: NodeJS.Timeout | undefined

  private keepaliveTimer: NodeJS.Timeout | undefined
  private lastReceivedAt = Date.now()
  private receivedSinceTick = false
  private sentSinceTick = false

  private _bytesIn = 0
  private _bytesOut = 0
  private ignoredFrames = 0
  private _closed = false
  private closeError: Error | undefined
  private peerVersion: number | undefined
  /** awaitPeerHello: our HELLO waits for the peer's. */
  private helloPending: boolean

  private readonly streamHost: StreamChannelHost
  private readonly datagramHost: DatagramChannelHost

  constructor(options: MultiplexerOptions) {
    super()
    this.reliable = options.reliable
    this.datagram = options.datagram
    this.initiator = options.initiator
    this.onChannelRequest = options.onChannelRequest
    this.log = toLogger(options.logger)
    this.keepaliveIntervalMs = options.keepaliveIntervalMs ?? 5000
    this.deadPeerTimeoutMs = options.deadPeerTimeoutMs ?? 20000
    this.channelWindow = Math.min(options.channelWindowBytes ?? 1024 * KiB, 0xffffffff)
    this.sendHighWater = options.sendHighWaterBytes ?? 512 * KiB
    this.sharedSendHighWater = Math.min(options.sharedSendHighWaterBytes ?? this.sendHighWater, this.sendHighWater)
    this.datagramHighWater = options.datagramHighWaterBytes ?? 256 * KiB
    this.maxDataPayload = Math.max(1, Math.min(options.maxFramePayloadBytes ?? 64 * KiB, this.reliable.maxMessageSize - FRAME_HEADER_BYTES))
    this.maxChannels = options.maxChannels ?? 1024
    this.maxPendingRequests = options.maxPendingRequests ?? 512
    this.openTimeoutMs = options.openTimeoutMs ?? 30000
    this.connectionWindow = Math.min(options.connectionWindowBytes ?? 16 * 1024 * KiB, 0xffffffff)
    this.connectionReceiveAllowance = this.connectionWindow
    this.maxControlBacklog = options.maxControlBacklogBytes ?? 4 * 1024 * KiB
    this.nextChannelId = this.initiator ? 1 : 2
    this.helloPending = options.awaitPeerHello ?? false
    if (!this.reliable.reliable) throw new DhtnetError('INVALID_ARGUMENT', 'the multiplexer needs a reliable transport')
    if (this.channelWindow < 1) throw new DhtnetError('INVALID_ARGUMENT', 'channelWindowBytes must be at least 1')
    if (this.connectionWindow < this.maxDataPayload) throw new DhtnetError('INVALID_ARGUMENT', 'connectionWindowBytes must hold at least one frame')

    this.streamHost = {
      closedError: () => (this._closed ? this.channelCloseError() : undefined),
      sendControl: (frame) => this.sendControl(frame),
      wantSend: (ch) => this.schedule(ch),
      release: (ch) => this.releaseChannel(ch),
      connectionConsumed: (bytes) => this.connectionConsumed(bytes),
    }
    this.datagramHost = {
      sendDatagram: (ch, payload) => this.sendDatagram(ch, payload),
      maxDatagramPayload: () => (this.datagram ?? this.reliable).maxMessageSize - FRAME_HEADER_BYTES,
      closeDatagram: (ch) => {
        if (this.channelTable.get(ch.channelId) !== ch) return
        this.channelTable.delete(ch.channelId)
        this.sendControl(encodeFrame(FrameType.EOF, ch.channelId))
      },
    }

    this.reliable.on('message', this.onReliableMessage)
    this.reliable.on('drain', this.onDrain)
    this.reliable.on('close', this.onTransportClose)
    if (this.datagram) {
      this.datagram.on('message', this.onDatagramMessage)
      this.datagram.on('close', this.onTransportClose)
    }

    if (this.reliable.closed || this.datagram?.closed) {
      // never throw from here for a transport that died early: close asynchronously like any other death
      queueMicrotask(() => this.close(new DhtnetError('CONNECTION_CLOSED', 'the transport was already closed')))
      return
    }
    if (!this.helloPending) this.sayHello()
  }

  private sayHello(): void {
    this.sendControl(encodeHello(MUX_PROTOCOL_VERSION, this.datagram ? HELLO_FLAG_DATAGRAM_TRANSPORT : 0, this.connectionWindow))
    this.startKeepalive()
  }

  get closed(): boolean {
    return this._closed
  }

  /** Bytes received on both transports, frame headers included. */
  get bytesIn(): number {
    return this._bytesIn
  }

  /** Bytes handed to both transports, frame headers included. */
  get bytesOut(): number {
    return this._bytesOut
  }

  /** Version the peer announced in its HELLO (undefined until it arrived). */
  get peerProtocolVersion(): number | undefined {
    return this.peerVersion
  }

  /** Open a stream channel. One round trip on a live multiplexer. */
  openChannel(name: string, options: OpenChannelOptions = {}): Promise<ChannelSocket> {
    return this.open(name, 'stream', options) as Promise<ChannelSocket>
  }

  /** Open a datagram channel (unordered, unreliable). */
  openDatagramChannel(name: string, options: OpenChannelOptions = {}): Promise<DatagramChannel> {
    return this.open(name, 'datagram', options) as Promise<DatagramChannel>
  }

  /**
   * Ping the peer now and resolve with the round-trip time in ms. A missing PONG within `timeoutMs` (default: the
   * keepalive interval, at least 1 s) closes the multiplexer with PEER_UNREACHABLE.
   */
  probe(timeoutMs?: number): Promise<number> {
    if (this._closed) return Promise.reject(this.operationCloseError())
    const timeout = timeoutMs ?? Math.max(1000, this.keepaliveIntervalMs)
    const nonce = this.nextProbeNonce
    this.nextProbeNonce = this.nextProbeNonce >= 0xffffffff ? 1 : this.nextProbeNonce + 1
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.probes.delete(nonce)
        const err = new DhtnetError('PEER_UNREACHABLE', `the peer did not answer a probe within ${timeout} ms`, {
          hint: 'the network path to the peer is gone; a new connection is needed',
        })
        reject(err)
        this.close(err)
      }, timeout)
      timer.unref()
      this.probes.set(nonce, { startedAt: performance.now(), resolve, reject, timer })
      this.sendControl(encodePing(FrameType.PING, nonce))
    })
  }

  /** Open channels, both directions. */
  channels(): ChannelInfo[] {
    const out: ChannelInfo[] = []
    for (const ch of this.channelTable.values()) {
      const stream = ch instanceof ChannelSocket
      out.push({
        id: ch.channelId,
        name: ch.name,
        kind: stream ? 'stream' : 'datagram',
        initiator: ch.initiator,
        bytesIn: stream ? ch.bytesRead : ch.bytesIn,
        bytesOut: stream ? ch.bytesWritten : ch.bytesOut,
        createdAt: ch.createdAt,
      })
    }
    return out
  }

  stats(): MultiplexerStats {
    let timers = this.pendingOpens.size + this.probes.size
    if (this.keepaliveTimer) timers++
    if (this.drainPoll) timers++
    return {
      channels: this.channelTable.size,
      pendingOpens: this.pendingOpens.size,
      pendingRequests: this.pendingRequests.size,
      pendingProbes: this.probes.size,
      scheduled: this.ready.length,
      timers,
      ignoredFrames: this.ignoredFrames,
      bytesIn: this._bytesIn,
      bytesOut: this._bytesOut,
    }
  }

  /**
   * Close the multiplexer and its transports. Every open channel ends: with `err` when given (a ChannelSocket
   * emits 'error' then 'close'), otherwise quietly ('close'). Pending opens and probes reject. Idempotent.
   */
  close(err?: Error): void {
    this.shutdown(err, true)
  }

  // ---------------------------------------------------------------------------------------------------------------

  private open(name: string, kind: ChannelKind, options: OpenChannelOptions): Promise<Channel> {
    if (typeof name !== 'string') return Promise.reject(new DhtnetError('BAD_CHANNEL_NAME', 'channel name must be a string'))
    const nameBytes = Buffer.from(name, 'utf8')
    if (nameBytes.length > MAX_CHANNEL_NAME_BYTES) {
      return Promise.reject(
        new DhtnetError('BAD_CHANNEL_NAME', `channel name is ${nameBytes.length} bytes; the limit is ${MAX_CHANNEL_NAME_BYTES}`, {
          hint: 'use a shorter channel name',
        }),
      )
    }
    const { signal } = options
    if (signal?.aborted) return Promise.reject(new DhtnetError('ABORTED', `opening channel "${name}" was aborted`, { cause: signal.reason }))
    if (this._closed) return Promise.reject(this.operationCloseError())
    if (this.channelTable.size + this.pendingOpens.size + this.pendingRequests.size >= this.maxChannels) {
      return Promise.reject(
        new DhtnetError('TOO_MANY_CHANNELS', `${this.maxChannels} channels are already open on this connection`, {
          hint: 'close unused channels',
        }),
      )
    }
    const id = this.allocateChannelId()
    const timeoutMs = options.timeoutMs ?? this.openTimeoutMs

    return new Promise<Channel>((resolve, reject) => {
      const fail = (err: Error, why: string): void => {
        if (this.pendingOpens.get(id) !== pending) return
        this.forgetPendingOpen(id)
        // the peer may have accepted meanwhile: tell it to drop the channel
        this.sendControl(encodeReason(FrameType.RESET, id, why))
        reject(err)
      }
      const timer = setTimeout(
        () => fail(new DhtnetError('TIMEOUT', `the peer did not answer the request for channel "${name}" within ${timeoutMs} ms`), 'open timed out'),
        timeoutMs,
      )
      timer.unref()
      const pending: PendingOpen = { name, kind, resolve, reject, timer }
      if (signal) {
        const onAbort = (): void => fail(new DhtnetError('ABORTED', `opening channel "${name}" was aborted`, { cause: signal.reason }), 'open aborted')
        signal.addEventListener('abort', onAbort, { once: true })
        pending.cleanupSignal = () => signal.removeEventListener('abort', onAbort)
      }
      this.pendingOpens.set(id, pending)
      this.sendControl(encodeOpen(id, kind, kind === 'stream' ? this.channelWindow : 0, nameBytes))
    })
  }

  private forgetPendingOpen(id: number): PendingOpen | undefined {
    const pending = this.pendingOpens.get(id)
    if (!pending) return undefined
    this.pendingOpens.delete(id)
    clearTimeout(pending.timer)
    pending.cleanupSignal?.()
    return pending
  }

  /** Odd ids on the initiator, even on the responder; never one in use; uint32 with wrap-around. */
  private allocateChannelId(): number {
    for (;;) {
      const id = this.nextChannelId
      this.nextChannelId += 2
      if (this.nextChannelId > 0xffffffff) this.nextChannelId = this.initiator ? 1 : 2
      if (!this.channelTable.has(id) && !this.pendingOpens.has(id)) return id
    }
  }

  private isPeerChannelId(id: number): boolean {
    return id !== 0 && (id % 2 === 1) !== this.initiator
  }

  private newStreamChannel(id: number, name: string, initiator: boolean, sendCredit: number): ChannelSocket {
    const ch = new ChannelSocket({
      host: this.streamHost,
      name,
      channelId: id,
      initiator,
      sendCredit,
      receiveWindow: this.channelWindow,
    })
    this.channelTable.set(id, ch)
    return ch
  }

  private newDatagramChannel(id: number, name: string, initiator: boolean): DatagramChannel {
    const ch = new DatagramChannel({ host: this.datagramHost, name, channelId: id, initiator })
    this.channelTable.set(id, ch)
    return ch
  }

  private releaseChannel(ch: ChannelSocket): void {
    if (this.channelTable.get(ch.channelId) === ch) this.channelTable.delete(ch.channelId)
  }

  // ---- sending ----

  private transportSend(transport: MessageTransport, frame: Buffer): boolean {
    this._bytesOut += frame.length
    this.sentSinceTick = true
    return transport.send(frame)
  }

  /**
   * Control frames go out at once, ahead of the data waiting in the scheduler. `reply`: a frame the peer's own
   * frame asked for (PONG, DECLINE): when those pile up beyond the backlog bound, the peer is asking without reading.
   */
  private sendControl(frame: Buffer, reply = false): void {
    if (this._closed) return
    if (reply && this.reliable.bufferedAmount > this.sendHighWater + this.maxControlBacklog) {
      this.shutdown(protocolError(`the peer keeps sending requests but does not read the answers (${this.reliable.bufferedAmount} bytes queued)`), false)
      return
    }
    try {
      if (!this.transportSend(this.reliable, frame)) this.transportFull = true
    } catch (err) {
      this.shutdown(new DhtnetError('CONNECTION_CLOSED', 'the connection closed while sending', { cause: err }), false)
    }
  }

  private schedule(ch: ChannelSocket): void {
    if (this._closed || ch.scheduled) return
    ch.scheduled = true
    this.ready.push(ch)
    // pump on a microtask: writes issued in the same tick queue up behind the first one and leave as few,
    // large frames (_writev) instead of one frame each
    if (!this.pumpQueued && !this.pumping) {
      this.pumpQueued = true
      queueMicrotask(this.runQueuedPump)
    }
  }

  private pumpQueued = false
  private readonly runQueuedPump = (): void => {
    this.pumpQueued = false
    this.pump()
  }

  private sendBlocked(): boolean {
    return this.transportFull || this.reliable.bufferedAmount >= this.sendHighWaterNow()
  }

  /** Measured with dsh's keystroke benchmark: 64 KiB took the median from 3.4 to 0.6 ms beside a bulk session on the
   *  same connection (p99 25 → 13 ms) for 25% less bulk throughput, which a connection with one channel keeps. */
  private sendHighWaterNow(): number {
    return this.channelTable.size > 1 ? this.sharedSendHighWater : this.sendHighWater
  }

  /**
   * Feed DATA frames to the reliable transport, one frame per channel in turn (round robin), until the transport
   * holds sendHighWater bytes; resume on 'drain'. Keeping the transport's buffer short is what lets a small message
   * on one channel overtake a bulk transfer on another.
   */
  private pump(): void {
    if (this.pumping || this._closed) return
    this.pumping = true
    try {
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- the loop body can close us (TypeScript keeps the narrowing from the check above)
      while (this.ready.length > 0 && !this._closed) {
        if (this.sendBlocked()) {
          this.waitForDrain()
          break
        }
        if (this.connectionSendCredit <= 0) break // the peer's connection WINDOW resumes us
        const ch = this.ready.shift()!
        ch.scheduled = false
        if (!ch.canSend()) continue
        const { frame, payloadBytes, done } = ch.takeFrame(Math.min(this.maxDataPayload, this.connectionSendCredit))
        this.connectionSendCredit -= payloadBytes
        if (!this.transportSend(this.reliable, frame)) this.transportFull = true
        if (ch.canSend()) {
          ch.scheduled = true
          this.ready.push(ch)
        }
        // the write callback may write again synchronously: it lands at the end of the round
        done?.()
      }
    } catch (err) {
      this.shutdown(new DhtnetError('CONNECTION_CLOSED', 'the connection closed while sending', { cause: err }), false)
    } finally {
      this.pumping = false
    }
  }

  private waitForDrain(): void {
    if (this.drainPoll) return
    // 'drain' resumes us; this poll is a safety net for a transport whose low-water mark is above our high water
    this.drainPoll = setInterval(() => {
      if (this.reliable.bufferedAmount >= this.sendHighWaterNow() / 2) return
      if (!this.drainPollWarned) {
        this.drainPollWarned = true
        this.log('debug', `multiplexer: the transport did not emit 'drain' (its low-water mark is probably above ${this.sendHighWaterNow() / 2} bytes); resuming by polling`)
      }
      this.onDrain()
    }, 20)
    this.drainPoll.unref()
  }

  private readonly onDrain = (): void => {
    this.transportFull = false
    if (this.drainPoll) {
      clearInterval(this.drainPoll)
      this.drainPoll = undefined
    }
    this.pump()
  }

  private sendDatagram(ch: DatagramChannel, payload: Uint8Array): boolean {
    if (this._closed || this.channelTable.get(ch.channelId) !== ch) return false
    const transport = this.datagram ?? this.reliable
    if (transport.closed || transport.bufferedAmount >= this.datagramHighWater) return false
    try {
      this.transportSend(transport, encodeFrame(FrameType.DGRAM, ch.channelId, payload))
      return true
    } catch {
      return false
    }
  }

  // ---- receiving ----

  private readonly onReliableMessage = (message: Buffer): void => this.onMessage(message)
  private readonly onDatagramMessage = (message: Buffer): void => this.onMessage(message)

  private onMessage(raw: Uint8Array): void {
    if (this._closed) return
    const message = Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
    this._bytesIn += message.length
    this.receivedSinceTick = true
    try {
      this.handleFrame(message)
    } catch (err) {
      // a bug here or in an application listener: never let it escape into the transport's event loop
      this.log('error', `multiplexer: error while handling a frame: ${(err as Error | undefined)?.stack ?? String(err)}`)
      this.shutdown(
        err instanceof DhtnetError && err.code === 'PROTOCOL_ERROR'
          ? err
          : new DhtnetError('INTERNAL_ERROR', `error while handling a frame: ${(err as Error | undefined)?.message ?? String(err)}`, { cause: err }),
        true,
      )
    }
  }

  private handleFrame(frame: Buffer): void {
    if (frame.length < FRAME_HEADER_BYTES) throw protocolError(`truncated frame of ${frame.length} bytes`)
    const type = frame[0]!
    if (this.helloPending && type !== FrameType.HELLO && type !== FrameType.GOAWAY) {
      throw protocolError(`${frameTypeName(type)} frame before HELLO`)
    }
    const id = frame.readUInt32BE(1)
    const body = frame.subarray(FRAME_HEADER_BYTES)
    switch (type) {
      case FrameType.DATA: {
        if (body.length > this.connectionReceiveAllowance) {
          throw protocolError(`peer sent ${body.length} bytes of data beyond the connection window`)
        }
        this.connectionReceiveAllowance -= body.length
        const ch = this.channelTable.get(id)
        if (!(ch instanceof ChannelSocket)) {
          this.connectionConsumed(body.length)
          return this.ignore(type, id)
        }
        if (!ch.muxData(body)) throw protocolError(`peer sent data beyond its window or after EOF on channel ${id}`)
        return
      }
      case FrameType.DGRAM: {
        const ch = this.channelTable.get(id)
        if (!(ch instanceof DatagramChannel)) return this.ignore(type, id)
        ch.muxDeliver(body)
        return
      }
      case FrameType.WINDOW: {
        if (body.length < 4) throw protocolError('truncated WINDOW frame')
        if (id === 0) return this.onConnectionCredit(body.readUInt32BE(0))
        const ch = this.channelTable.get(id)
        if (!(ch instanceof ChannelSocket)) return this.ignore(type, id)
        ch.muxCredit(body.readUInt32BE(0))
        return
      }
      case FrameType.HELLO:
        return this.onHello(body)
      case FrameType.OPEN:
        return this.onOpen(id, body)
      case FrameType.ACCEPT:
        return this.onAccept(id, body)
      case FrameType.DECLINE:
        return this.onDecline(id, body.toString('utf8'))
      case FrameType.EOF: {
        const ch = this.channelTable.get(id)
        if (ch instanceof ChannelSocket) {
          if (!ch.muxEof()) throw protocolError(`duplicate EOF on channel ${id}`)
        } else if (ch instanceof DatagramChannel) {
          this.channelTable.delete(id)
          ch.muxClose(undefined)
        } else {
          this.ignore(type, id)
        }
        return
      }
      case FrameType.RESET:
        return this.onReset(id, body.toString('utf8'))
      case FrameType.PING:
        if (body.length !== PING_BODY_BYTES) throw protocolError(`PING frame with a ${body.length}-byte body`)
        this.sendControl(encodeFrame(FrameType.PONG, 0, body), true)
        return
      case FrameType.PONG:
        return this.onPong(body)
      case FrameType.GOAWAY: {
        const reason = body.toString('utf8')
        this.shutdown(new DhtnetError('CONNECTION_CLOSED', `the peer closed the connection${reason ? `: ${reason}` : ''}`), false)
        return
      }
      default:
        // unknown types are skipped so that a later version may add frames
        return this.ignore(type, id)
    }
  }

  private ignore(type: number, id: number): void {
    this.ignoredFrames++
    this.log('debug', `multiplexer: ignored ${frameTypeName(type)} frame for channel ${id}`)
  }

  private onHello(body: Buffer): void {
    if (body.length < 1) throw protocolError('truncated HELLO frame')
    const version = body[0]!
    if (this.peerVersion !== undefined) throw protocolError('a second HELLO')
    this.peerVersion = version
    const flags = body[1] ?? 0
    if (flags & HELLO_FLAG_CONNECTION_WINDOW) {
      if (body.length < 6) throw protocolError('truncated HELLO frame (connection window)')
      this.connectionSendCredit = body.readUInt32BE(2)
    } else {
      this.connectionSendCredit = Infinity // a peer without connection flow control
    }
    if (version !== MUX_PROTOCOL_VERSION) {
      throw new DhtnetError('PROTOCOL_ERROR', `the peer speaks multiplexer protocol version ${version}; this implementation speaks ${MUX_PROTOCOL_VERSION}`, {
        hint: 'upgrade the older side',
      })
    }
    if (this.helloPending) {
      this.helloPending = false
      this.sayHello()
    }
    this.emit('hello', version)
  }

  private onOpen(id: number, body: Buffer): void {
    if (body.length < 5) throw protocolError('truncated OPEN frame')
    if (!this.isPeerChannelId(id)) throw protocolError(`peer opened channel ${id}, which is outside its id space`)
    if (this.channelTable.has(id) || this.pendingRequests.has(id)) throw protocolError(`peer reopened channel ${id}, which is in use`)
    const kindCode = body[0]
    const window = body.readUInt32BE(1)
    const nameBytes = body.subarray(5)
    const decline = (reason: string): void => this.sendControl(encodeReason(FrameType.DECLINE, id, reason), true)
    if (kindCode !== 0 && kindCode !== 1) return decline(`unknown channel kind ${kindCode}`)
    if (nameBytes.length > MAX_CHANNEL_NAME_BYTES) return decline(`channel name longer than ${MAX_CHANNEL_NAME_BYTES} bytes`)
    if (this.channelTable.size + this.pendingOpens.size + this.pendingRequests.size >= this.maxChannels) {
      return decline(`too many channels (limit ${this.maxChannels})`)
    }
    if (this.pendingRequests.size >= this.maxPendingRequests) {
      return decline(`too many channel requests waiting for an answer (limit ${this.maxPendingRequests})`)
    }
    const kind: ChannelKind = kindCode === 0 ? 'stream' : 'datagram'
    const request: PendingRequest = { name: nameBytes.toString('utf8'), kind, window }
    this.pendingRequests.set(id, request)

    let decision: ChannelRequestDecision | Promise<ChannelRequestDecision>
    try {
      decision = this.onChannelRequest ? this.onChannelRequest(request.name, kind) : this.listenerCount(kind === 'stream' ? 'channel' : 'datagram-channel') > 0
    } catch (err) {
      this.log('warn', `multiplexer: onChannelRequest threw: ${(err as Error | undefined)?.message ?? String(err)}`)
      decision = { accept: false, reason: 'the channel request handler failed' }
    }
    if (decision instanceof Promise) {
      decision.then(
        (d) => this.answerRequest(id, request, d),
        (err) => {
          this.log('warn', `multiplexer: onChannelRequest failed: ${(err as Error | undefined)?.message ?? String(err)}`)
          this.answerRequest(id, request, { accept: false, reason: 'the channel request handler failed' })
        },
      )
    } else {
      this.answerRequest(id, request, decision)
    }
  }

  // decision: what the application returned (a JavaScript caller may return anything, null included)
  private answerRequest(id: number, request: PendingRequest, decision: ChannelRequestDecision | null | undefined): void {
    // the opener gave up (RESET) or the multiplexer closed meanwhile
    if (this._closed || this.pendingRequests.get(id) !== request) return
    this.pendingRequests.delete(id)
    if (decision !== true) {
      const reason = typeof decision === 'object' && decision && typeof decision.reason === 'string' ? decision.reason : 'declined'
      this.sendControl(encodeReason(FrameType.DECLINE, id, reason))
      return
    }
    if (request.kind === 'stream') {
      this.sendControl(encodeAccept(id, this.channelWindow))
      const ch = this.newStreamChannel(id, request.name, false, request.window)
      this.emit('channel', ch)
    } else {
      this.sendControl(encodeAccept(id, 0))
      const ch = this.newDatagramChannel(id, request.name, false)
      this.emit('datagram-channel', ch)
    }
  }

  private onAccept(id: number, body: Buffer): void {
    if (body.length < 4) throw protocolError('truncated ACCEPT frame')
    const pending = this.forgetPendingOpen(id)
    if (!pending) return this.ignore(FrameType.ACCEPT, id) // timed out or aborted: we already sent RESET
    if (pending.kind === 'stream') {
      const ch = this.newStreamChannel(id, pending.name, true, body.readUInt32BE(0))
      ch.muxHoldUntilDelivered()
      pending.resolve(ch)
      // the caller's continuation runs in a microtask; a setImmediate runs after it
      setImmediate(() => ch.muxDelivered())
    } else {
      pending.resolve(this.newDatagramChannel(id, pending.name, true))
    }
  }

  private onDecline(id: number, reason: string): void {
    const pending = this.forgetPendingOpen(id)
    if (!pending) return this.ignore(FrameType.DECLINE, id)
    pending.reject(new DhtnetError('CHANNEL_DECLINED', `the peer declined channel "${pending.name}": ${reason || 'no reason given'}`))
  }

  private onReset(id: number, reason: string): void {
    if (this.pendingRequests.delete(id)) return // the opener gave up before we answered
    const ch = this.channelTable.get(id)
    if (ch instanceof ChannelSocket) {
      ch.muxReset(reason)
    } else if (ch instanceof DatagramChannel) {
      this.channelTable.delete(id)
      ch.muxClose(new DhtnetError('CHANNEL_RESET', `datagram channel "${ch.name}" was reset by the peer: ${reason || 'no reason given'}`))
    } else {
      this.ignore(FrameType.RESET, id)
    }
  }

  private onPong(body: Buffer): void {
    if (body.length !== PING_BODY_BYTES) throw protocolError(`PONG frame with a ${body.length}-byte body`)
    const nonce = body.readUInt32BE(0)
    const probe = this.probes.get(nonce)
    if (!probe) return // keepalive pong, or a probe that already timed out
    this.probes.delete(nonce)
    clearTimeout(probe.timer)
    probe.resolve(performance.now() - probe.startedAt)
  }

  /** The peer returned connection credit. */
  private onConnectionCredit(credit: number): void {
    this.connectionSendCredit += credit
    if (this.ready.length > 0) this.pump()
  }

  /** Received bytes left our budget (read or dropped): return them to the peer in batches of a quarter window. */
  private connectionConsumed(bytes: number): void {
    if (this._closed) return
    this.connectionUnacknowledged += bytes
    if (this.connectionUnacknowledged < this.connectionWindow / 4) return
    const credit = this.connectionUnacknowledged
    this.connectionUnacknowledged = 0
    this.connectionReceiveAllowance += credit
    this.sendControl(encodeWindow(0, credit))
  }

  // ---- keepalive ----

  private startKeepalive(): void {
    const tick = Math.max(10, Math.min(this.keepaliveIntervalMs, Math.floor(this.deadPeerTimeoutMs / 4)))
    let lastPingAt = 0
    this.keepaliveTimer = setInterval(() => {
      const now = Date.now()
      if (this.receivedSinceTick) {
        this.receivedSinceTick = false
        this.lastReceivedAt = now
      }
      const silentFor = now - this.lastReceivedAt
      if (silentFor >= this.deadPeerTimeoutMs) {
        this.shutdown(
          new DhtnetError('PEER_UNREACHABLE', `nothing received from the peer for ${silentFor} ms`, {
            hint: 'the peer process died or the network path is gone',
          }),
          true,
        )
        return
      }
      // idle in either direction: a PING makes the peer answer, and tells it we are alive
      if ((silentFor >= this.keepaliveIntervalMs || !this.sentSinceTick) && now - lastPingAt >= this.keepaliveIntervalMs) {
        lastPingAt = now
        this.sendControl(encodePing(FrameType.PING, 0))
      }
      this.sentSinceTick = false
    }, tick)
    this.keepaliveTimer.unref()
  }

  // ---- closing ----

  private readonly onTransportClose = (err?: Error): void => {
    this.shutdown(new DhtnetError('CONNECTION_CLOSED', `the connection closed${err?.message ? `: ${err.message}` : ''}`, { cause: err }), false)
  }

  private channelCloseError(): Error {
    return this.closeError ?? new DhtnetError('CONNECTION_CLOSED', 'the multiplexer is closed')
  }

  private operationCloseError(): Error {
    return this.closeError ?? new DhtnetError('CONNECTION_CLOSED', 'the connection is closed')
  }

  private shutdown(err: Error | undefined, tellPeer: boolean): void {
    if (this._closed) return
    this._closed = true
    this.closeError = err
    if (err) this.log('debug', `multiplexer: closing: ${err.message}`)

    if (tellPeer && !this.reliable.closed) {
      try {
        this.transportSend(this.reliable, encodeReason(FrameType.GOAWAY, 0, err?.message ?? ''))
      } catch {
        // the transport is going anyway
      }
    }
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer)
    this.keepaliveTimer = undefined
    if (this.drainPoll) clearInterval(this.drainPoll)
    this.drainPoll = undefined
    this.reliable.off('message', this.onReliableMessage)
    this.reliable.off('drain', this.onDrain)
    this.reliable.off('close', this.onTransportClose)
    this.datagram?.off('message', this.onDatagramMessage)
    this.datagram?.off('close', this.onTransportClose)

    const opErr = this.operationCloseError()
    for (const id of [...this.pendingOpens.keys()]) this.forgetPendingOpen(id)?.reject(opErr)
    for (const probe of this.probes.values()) {
      clearTimeout(probe.timer)
      probe.reject(opErr)
    }
    this.probes.clear()
    this.pendingRequests.clear()
    this.ready.clear()
    const open = [...this.channelTable.values()]
    this.channelTable.clear()
    for (const ch of open) {
      if (ch instanceof ChannelSocket) ch.muxAbort(err)
      else ch.muxClose(err)
    }
    try {
      if (!this.reliable.closed) this.reliable.close(err)
      if (this.datagram && !this.datagram.closed) this.datagram.close(err)
    } catch (e) {
      this.log('warn', `multiplexer: closing the transport failed: ${(e as Error | undefined)?.message ?? String(e)}`)
    }
    this.emit('close', err)
  }
}
