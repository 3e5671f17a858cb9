/**
 * One TCP connection during ICE: RFC 4571 frames in and out, STUN only. Responses are matched to our transactions
 * and handed to their callbacks synchronously, inside the frame loop, so that the agent can stop reading exactly
 * after the frame that ends the STUN phase (`freeze()`): whatever follows stays buffered for the TLS layer.
 *
 * Anything that is not STUN before that point closes the connection. Bounded: frame size, transactions in flight,
 * requests answered.
 */
import type { Socket } from 'node:net'
import { FrameDecoder, encodeFrame } from './framing.js'
import { StunMessage, looksLikeStun } from '../stun/message.js'
import { normalizeIp, formatHostPort } from '../stun/ip.js'

/** STUN messages during checks are small (pjnath's are 84-120 bytes). */
export const MAX_CHECK_FRAME_BYTES = 2048
const MAX_TRANSACTIONS = 4
/** Requests we answer on one connection before nomination (a peer sends 1-3). */
const MAX_REQUESTS = 32

export type TransactionResult = { response: StunMessage } | { error: string }

export interface CheckConnectionHandler {
  /** A STUN request from the peer (validated by the handler). Called synchronously in the frame loop. */
  onRequest(conn: CheckConnection, msg: StunMessage): void
  /** The connection is gone (not called after detach()). */
  onClose(conn: CheckConnection, reason: string): void
}

interface Transaction {
  readonly timer: NodeJS.Timeout
  readonly done: (result: TransactionResult) => void
}

export class CheckConnection {
  readonly localAddress: string
  readonly localPort: number
  readonly remoteAddress: string
  readonly remotePort: number
  private readonly transactions = new Map<string, Transaction>()
  private requests = 0
  private frozen = false
  private closed = false
  private detached = false
  private readonly onData = (chunk: Buffer) => this.receive(chunk)
  private readonly onError = (err: Error) => this.close(err.message)
  private readonly onEnd = () => this.close('closed by the peer')

  constructor(
    readonly id: number,
    readonly socket: Socket,
    readonly direction: 'outbound' | 'inbound',
    private readonly handler: CheckConnectionHandler,
    private readonly decoder: FrameDecoder = new FrameDecoder(MAX_CHECK_FRAME_BYTES),
    /** The ICE addresses of this connection when they are not the socket's own (a connection relayed by our TURN
     *  allocation: the socket goes to the TURN server, the connection is between the peer and our relayed address). */
    endpoints?: { readonly localAddress: string; readonly localPort: number; readonly remoteAddress: string; readonly remotePort: number },
  ) {
    this.decoder.maxFrameBytes = MAX_CHECK_FRAME_BYTES
    this.localAddress = normalizeIp(endpoints?.localAddress ?? socket.localAddress ?? '')
    this.localPort = endpoints?.localPort ?? socket.localPort ?? 0
    this.remoteAddress = normalizeIp(endpoints?.remoteAddress ?? socket.remoteAddress ?? '')
    this.remotePort = endpoints?.remotePort ?? socket.remotePort ?? 0
  }

  get isClosed(): boolean {
    return this.closed
  }

  get isFrozen(): boolean {
    return this.frozen
  }

  /** "local -> remote" for logs and errors. */
  get label(): string {
    return `${formatHostPort(this.localAddress, this.localPort)} -> ${formatHostPort(this.remoteAddress, this.remotePort)}`
  }

  /** Start reading (frames already buffered in the decoder are processed first). */
  start(): void {
    this.socket.on('data', this.onData)
    this.socket.on('error', this.onError)
    this.socket.on('end', this.onEnd)
    this.socket.on('close', this.onEnd)
    this.drain()
    if (!this.closed && !this.frozen) this.socket.resume()
  }

  /** Write one STUN message as one frame. */
  send(message: Buffer): void {
    if (this.closed || this.detached) return
    this.socket.write(encodeFrame(message))
  }

  /** Send a request; `done` runs once with the response (any class) or an error (timeout, closed). */
  request(message: Buffer, transactionId: Buffer, timeoutMs: number, done: (result: TransactionResult) => void): void {
    if (this.closed || this.detached) return done({ error: 'connection closed' })
    if (this.transactions.size >= MAX_TRANSACTIONS) return done({ error: 'too many checks in flight' })
    const key = transactionId.toString('hex')
    const timer = setTimeout(() => {
      if (this.transactions.delete(key)) done({ error: `no answer within ${timeoutMs} ms` })
    }, timeoutMs)
    timer.unref()
    this.transactions.set(key, { timer, done })
    this.send(message)
  }

  /** Stop processing frames after the current one: the rest stays in the decoder for detach(). */
  freeze(): void {
    this.frozen = true
    this.socket.pause()
  }

  /**
   * Hand the socket over (to TLS): listeners removed, transactions dropped, reading paused. `remaining` holds the
   * bytes received after the last frame processed, undecoded.
   */
  detach(): { socket: Socket; remaining: Buffer } {
    this.detached = true
    this.frozen = true
    this.socket.pause()
    this.removeListeners()
    // A check answer written just before the hand-over can still fail after it (ECONNRESET emitted on this object,
    // which TLS, built on its handle, does not listen to): without a listener that would crash the process. The new
    // owner sees the failure on its own reads and writes.
    this.socket.on('error', ignoreLateError)
    this.dropTransactions()
    return { socket: this.socket, remaining: this.decoder.takeRemaining() }
  }

  close(reason: string): void {
    if (this.closed || this.detached) return
    this.closed = true
    this.removeListeners()
    this.socket.on('error', ignoreLateError)
    this.socket.destroy()
    for (const [, t] of this.transactions) {
      clearTimeout(t.timer)
      t.done({ error: `connection closed (${reason})` })
    }
    this.transactions.clear()
    this.handler.onClose(this, reason)
  }

  private removeListeners(): void {
    this.socket.off('data', this.onData)
    this.socket.off('error', this.onError)
    this.socket.off('end', this.onEnd)
    this.socket.off('close', this.onEnd)
  }

  private dropTransactions(): void {
    for (const [, t] of this.transactions) clearTimeout(t.timer)
    this.transactions.clear()
  }

  private receive(chunk: Buffer): void {
    this.decoder.push(chunk)
    this.drain()
  }

  private drain(): void {
    while (!this.frozen && !this.closed) {
      let frame: Buffer | undefined
      try {
        frame = this.decoder.next()
      } catch (err) {
        return this.close((err as Error).message)
      }
      if (!frame) return
      this.frame(frame)
    }
  }

  private frame(frame: Buffer): void {
    if (!looksLikeStun(frame)) return this.close('data that is not STUN before nomination')
    let msg: StunMessage
    try {
      msg = StunMessage.decode(frame, { maxBytes: MAX_CHECK_FRAME_BYTES })
    } catch (err) {
      return this.close((err as Error).message)
    }
    switch (msg.class) {
      case 'request':
        if (++this.requests > MAX_REQUESTS) return this.close(`more than ${MAX_REQUESTS} STUN requests`)
        this.handler.onRequest(this, msg)
        return
      case 'success':
      case 'error': {
        const key = msg.transactionIdHex
        const t = this.transactions.get(key)
        if (!t) return // late or unknown: ignored
        this.transactions.delete(key)
        clearTimeout(t.timer)
        t.done({ response: msg })
        return
      }
      default:
        return // indications (keepalives) need no answer
    }
  }
}

/** For a socket we let go of: its late errors are expected and have no one left to tell. */
function ignoreLateError(): void {}
