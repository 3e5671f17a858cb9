import type { EventEmitter } from 'node:events'

/**
 * A message-oriented transport between two peers, as the multiplexer needs it.
 * Over WebRTC it is one data channel: `reliable` ones are ordered and retransmitted, unreliable ones are not.
 *
 * Events:
 *  - 'message' (message: Buffer): one whole message from the peer, boundaries kept.
 *  - 'drain': bufferedAmount went down to the low-water mark; sending may resume.
 *  - 'close' (err?: Error): the transport is gone (err undefined for a clean close). Emitted once.
 */
export interface MessageTransport extends EventEmitter {
  /** true: ordered and reliable; false: unordered, no retransmission (datagrams). */
  readonly reliable: boolean
  /** Largest message `send` accepts, in bytes. */
  readonly maxMessageSize: number
  /** Bytes queued locally and not yet handed to the network. */
  readonly bufferedAmount: number
  /**
   * Queue one message. Returns false when the caller should wait for 'drain' before sending more:
   * the message IS queued, nothing is lost. Throws DhtnetError('TRANSPORT_CLOSED') once closed.
   */
  send(message: Uint8Array): boolean
  /** Close the transport; emits 'close' once. */
  close(err?: Error): void
  readonly closed: boolean
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** Where the transport and the connection manager log (to stderr in the tools). Same shape as SecureDht's `log`. */
export type LogFunction = (level: LogLevel, message: string) => void

/** A logger: a log function, or an object with one method per level (console fits). */
export type Logger = LogFunction | { debug(msg: string): void; info(msg: string): void; warn(msg: string): void; error(msg: string): void }

/** Normalise a Logger into a LogFunction (a no-op when undefined). */
export function toLogFunction(logger: Logger | undefined): LogFunction {
  if (!logger) return () => {}
  if (typeof logger === 'function') return logger
  return (level, message) => logger[level](message)
}
