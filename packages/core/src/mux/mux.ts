/**
 * What the connection layer sees of a multiplexer, whichever protocol runs on the wire:
 * - `native/`: ours (credit flow control per channel, half-close, reset reasons, keepalive, datagram channels);
 * - `dhtnet/`: DHTNet's MultiplexedSocket v1, spoken to C++ DHTNet peers (byte-compatible with their captures).
 *
 * Channels are Node `Duplex` streams either way; what a protocol cannot do is said by `capabilities`.
 *
 * Events of a Mux: 'channel' (StreamChannel) for accepted incoming stream channels, 'datagram-channel'
 * (DatagramChannel) likewise, 'close' (err?: Error) once.
 */
import type { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import type { DatagramChannel } from './native/datagram-channel.js'

export type MuxProtocol = 'native' | 'dhtnet'

export type ChannelKind = 'stream' | 'datagram'

/** What a channel-request hook answers: accept, decline, or decline with a reason (sent to the peer when the
 *  protocol can carry one). */
export type ChannelRequestDecision = boolean | { accept: false; reason: string }

export interface OpenChannelOptions {
  signal?: AbortSignal
  /** Default: the multiplexer's own open timeout (30 s). */
  timeoutMs?: number
}

export interface ChannelInfo {
  id: number
  name: string
  kind: ChannelKind
  initiator: boolean
  bytesIn: number
  bytesOut: number
  createdAt: number
}

export interface MuxCapabilities {
  /** end() closes only our direction (otherwise: either side's end closes the channel both ways). */
  readonly halfClose: boolean
  /** destroy(err) tells the peer why. */
  readonly resetReasons: boolean
  /** Per-channel flow control: a paused reader stops only its own sender. */
  readonly perChannelFlowControl: boolean
  /** openDatagramChannel works. */
  readonly datagrams: boolean
}

/** A stream channel: an ordered, reliable byte stream, whichever multiplexer carries it. */
export interface StreamChannel extends Duplex {
  readonly name: string
  readonly channelId: number
  /** true when this side opened the channel. */
  readonly initiator: boolean
  readonly createdAt: number
  /** Payload bytes received from the peer. */
  readonly bytesRead: number
  /** Payload bytes handed to the transport. */
  readonly bytesWritten: number
  /** What the multiplexer carrying it can do (a DHTNet channel has no half-close: either end closes both ways). */
  readonly capabilities: MuxCapabilities
}

/** Our own multiplexer's capabilities. */
export const NATIVE_CAPABILITIES: MuxCapabilities = Object.freeze({ halfClose: true, resetReasons: true, perChannelFlowControl: true, datagrams: true })

export interface Mux extends EventEmitter {
  readonly protocol: MuxProtocol
  readonly capabilities: MuxCapabilities
  /** true on the side that initiated the connection (the DHT requester). */
  readonly initiator: boolean
  readonly closed: boolean
  /** Raw bytes received / sent on the connection, frame headers included. */
  readonly bytesIn: number
  readonly bytesOut: number
  /** Open a stream channel: one round trip on a live connection. Rejects with CHANNEL_DECLINED, TIMEOUT, ABORTED,
   *  CONNECTION_CLOSED (or the error the mux closed with), BAD_CHANNEL_NAME, TOO_MANY_CHANNELS. */
  openChannel(name: string, options?: OpenChannelOptions): Promise<StreamChannel>
  /** Open a datagram channel; UNSUPPORTED_TRANSPORT when `capabilities.datagrams` is false. */
  openDatagramChannel(name: string, options?: OpenChannelOptions): Promise<DatagramChannel>
  /** Check the peer answers now; resolves with the round trip in ms. A missing answer closes the mux with
   *  PEER_UNREACHABLE. */
  probe(timeoutMs?: number): Promise<number>
  /** Open channels, both directions. */
  channels(): ChannelInfo[]
  /** Close the mux and the connection under it; every channel ends (with `err`: 'error' then 'close'). Idempotent. */
  close(err?: Error): void
}

/**
 * A stream channel that can deliver the peer's writes as whole messages: DHTNet's channels, where each C++ `write()`
 * is one frame (dvpn: one IP packet per write). After `setMessageMode()` every frame from the peer is one
 * `'message'` event (Buffer) instead of readable data; see DhtnetChannel.setMessageMode. Our native stream channels
 * coalesce writes (flow control, large frames) and do not offer this: frame messages yourself there.
 */
export interface MessageStreamChannel extends StreamChannel {
  setMessageMode(maxMessageBytes?: number): this
  /** Frames dropped in message mode because they were over the bound. */
  readonly droppedMessages: number
}

/** true for a stream channel that offers message mode (a DHTNet channel). */
export function supportsMessageMode(channel: StreamChannel): channel is MessageStreamChannel {
  return typeof (channel as Partial<MessageStreamChannel>).setMessageMode === 'function'
}

/** true for a stream channel of any multiplexer (tools check this instead of a concrete class). */
export function isStreamChannel(value: unknown): value is StreamChannel {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as StreamChannel).pipe === 'function' &&
    typeof (value as StreamChannel).channelId === 'number' &&
    typeof (value as StreamChannel).name === 'string'
  )
}
