/**
 * Outgoing requests waiting for a reply: retries with OpenDHT's timing (up to 3 sends; the wait starts at 0.5 s
 * and doubles, plus 0–250 ms of jitter), matched by transaction id and source address.
 */
import { DhtnetError } from '../errors.js'
import type { ParsedMessage } from './wire.js'

export interface PendingRequest {
  tid: number
  host: string
  port: number
  family: 4 | 6
  kind: string
  msg: Buffer
  parts: Buffer[]
  attempts: number
  wait: number
  timer?: NodeJS.Timeout
  resolve(m: ParsedMessage): void
  reject(e: Error): void
}

export class RemoteError extends DhtnetError {
  constructor(
    readonly remoteCode: number,
    message: string,
  ) {
    super('DHT_REMOTE_ERROR', `remote node answered error ${remoteCode}: ${message}`)
  }
}

export interface TransactionOptions {
  maxAttempts?: number
  firstWaitMs?: number
}

export class Transactions {
  private readonly pending = new Map<number, PendingRequest>()
  private nextTid = (Math.random() * 0x7fffffff) >>> 0
  private readonly maxAttempts: number
  private readonly firstWaitMs: number
  private closed = false

  constructor(
    private readonly send: (r: PendingRequest) => void,
    opts: TransactionOptions = {},
    private readonly onTimeout: (r: PendingRequest) => void = () => {},
  ) {
    this.maxAttempts = opts.maxAttempts ?? 3
    this.firstWaitMs = opts.firstWaitMs ?? 500
  }

  /** A fresh uint32 id, unique among pending requests (also used for listen socket ids). */
  newId(): number {
    do {
      this.nextTid = (this.nextTid + 1) >>> 0
    } while (this.nextTid === 0 || this.pending.has(this.nextTid))
    return this.nextTid
  }

  get size(): number {
    return this.pending.size
  }

  start(tid: number, host: string, port: number, family: 4 | 6, kind: string, msg: Buffer, parts: Buffer[] = []): Promise<ParsedMessage> {
    if (this.closed) return Promise.reject(new DhtnetError('DHT_STOPPED', 'the DHT node is stopped'))
    return new Promise<ParsedMessage>((resolve, reject) => {
      const r: PendingRequest = { tid, host, port, family, kind, msg, parts, attempts: 0, wait: this.firstWaitMs, resolve, reject }
      this.pending.set(tid, r)
      this.attempt(r)
    })
  }

  private attempt(r: PendingRequest): void {
    if (r.attempts >= this.maxAttempts) {
      this.pending.delete(r.tid)
      this.onTimeout(r)
      r.reject(new DhtnetError('TIMEOUT', `no answer to '${r.kind}' from ${r.host}:${r.port} after ${r.attempts} attempts`))
      return
    }
    r.attempts++
    try {
      this.send(r)
    } catch {
      // a send error counts as a lost datagram
    }
    const wait = r.wait
    r.wait = r.wait * 2 + Math.random() * 250
    r.timer = setTimeout(() => this.attempt(r), wait)
  }

  /** The pending request this reply answers, if it came from where the request went. */
  match(tid: number, host: string, port: number): PendingRequest | undefined {
    const r = this.pending.get(tid)
    if (!r || r.host !== host || r.port !== port) return undefined
    return r
  }

  has(tid: number): boolean {
    return this.pending.has(tid)
  }

  complete(r: PendingRequest, m: ParsedMessage): void {
    if (this.pending.get(r.tid) !== r) return
    clearTimeout(r.timer)
    this.pending.delete(r.tid)
    if (m.kind === 'error') r.reject(new RemoteError(m.errorCode ?? 0, m.errorMessage ?? ''))
    else r.resolve(m)
  }

  close(): void {
    this.closed = true
    for (const r of this.pending.values()) {
      clearTimeout(r.timer)
      r.reject(new DhtnetError('DHT_STOPPED', 'the DHT node was stopped'))
    }
    this.pending.clear()
  }
}
