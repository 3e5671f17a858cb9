/**
 * One TCP or TLS connection to the TURN server carrying STUN transactions: the allocation's control connection,
 * and each RFC 6062 data connection until its CONNECTION-BIND succeeds (then `detachOnSuccess` hands the socket over
 * as a raw byte stream, with whatever followed the response pushed back into it).
 *
 * Bounded: at most `maxPending` transactions in flight, each with a timeout; messages above `maxMessageBytes` close
 * the connection; responses to nothing we asked, requests, malformed messages and ChannelData are dropped (counted).
 * Reading uses 'readable'/read() rather than 'data', so a detached socket is handed over in its initial state: the
 * new owner's 'data' listener or pipe() starts the flow.
 */
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions as TlsConnectionOptions } from 'node:tls'
import { DhtnetError, isDhtnetError } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { StunMessage } from '../stun/message.js'
import { verifyIntegrity } from '../stun/integrity.js'
import { StunAttr, methodOf } from '../stun/constants.js'
import { formatHostPort } from '../stun/ip.js'
import { StunStreamDecoder } from './stream-decoder.js'
import type { TurnTransport } from './server-address.js'

/** TLS settings for turns: (the server's certificate is checked unless rejectUnauthorized is false). */
export interface TurnTlsOptions {
  /** Trusted CA certificates (PEM); default: Node's bundled roots. */
  readonly ca?: string | Buffer | ReadonlyArray<string | Buffer> | undefined
  /** Name the certificate must carry; default: the host name of the server address (none for an IP literal). */
  readonly servername?: string | undefined
  /** Default true. */
  readonly rejectUnauthorized?: boolean | undefined
}

export interface ServerEndpoint {
  /** The resolved IP address (every connection of one allocation goes to the same one). */
  readonly address: string
  readonly port: number
  readonly transport: TurnTransport
  /** The name as written (for TLS SNI and certificate checks, and messages). */
  readonly host: string
  readonly tls?: TurnTlsOptions | undefined
}

export function describeEndpoint(server: ServerEndpoint): string {
  const where = formatHostPort(server.address, server.port)
  return `${server.transport === 'tls' ? 'turns' : 'turn'}:${server.host === server.address ? where : `${server.host} (${where})`}`
}

/**
 * A connected socket to the server (TLS handshake done for 'tls'). Rejects TURN_UNREACHABLE (refused, reset,
 * timeout), TLS_FAILED (certificate or handshake), ABORTED (the caller's signal). Nothing is left open on failure.
 */
export function openServerSocket(server: ServerEndpoint, options: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new DhtnetError('ABORTED', 'connecting to the TURN server aborted', { cause: options.signal.reason }))
      return
    }
    let socket: Socket
    const ready = server.transport === 'tls' ? 'secureConnect' : 'connect'
    if (server.transport === 'tls') {
      const servername = server.tls?.servername ?? (server.host !== server.address && !/^[0-9.:]+$/.test(server.host) ? server.host : undefined)
      const tlsOptions: TlsConnectionOptions = {
        host: server.address,
        port: server.port,
        rejectUnauthorized: server.tls?.rejectUnauthorized ?? true,
        ...(servername !== undefined ? { servername } : {}),
        ...(server.tls?.ca !== undefined ? { ca: server.tls.ca as string | Buffer | Array<string | Buffer> } : {}),
        // an IP literal has no name to check against unless one was given: the certificate must then name the IP
        ...(servername === undefined ? { checkServerIdentity: (_host: string, cert: import('node:tls').PeerCertificate) => checkIpIdentity(server.address, cert) } : {}),
      }
      socket = tlsConnect(tlsOptions)
    } else {
      socket = netConnect({ host: server.address, port: server.port, noDelay: true })
    }
    socket.setNoDelay(true)
    const where = describeEndpoint(server)
    const finish = (err?: DhtnetError): void => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      socket.off(ready, onReady)
      socket.off('error', onError)
      socket.off('close', onClose)
      if (err) {
        socket.on('error', () => {})
        socket.destroy()
        reject(err)
      } else resolve(socket)
    }
    const onReady = (): void => finish()
    const onError = (err: NodeJS.ErrnoException): void => {
      const tlsProblem =
        server.transport === 'tls' && (err.code?.startsWith('ERR_TLS') || err.code?.startsWith('ERR_SSL') || /certificate|self.signed|handshake|ssl|tls/i.test(err.message))
      finish(
        tlsProblem
          ? new DhtnetError('TLS_FAILED', `TLS with the TURN server ${where} failed: ${err.message}`, {
              cause: err,
              hint: "the TURN server's certificate is not trusted here: give its CA (tls.ca), or check the server name",
            })
          : new DhtnetError('TURN_UNREACHABLE', `cannot connect to the TURN server ${where}: ${err.code ?? err.message}`, { cause: err }),
      )
    }
    const onClose = (): void => finish(new DhtnetError('TURN_UNREACHABLE', `the TURN server ${where} closed the connection while it was being opened`))
    const onAbort = (): void => finish(new DhtnetError('ABORTED', 'connecting to the TURN server aborted', { cause: options.signal?.reason }))
    const timer = setTimeout(() => finish(new DhtnetError('TURN_UNREACHABLE', `no connection to the TURN server ${where} within ${options.timeoutMs} ms`)), options.timeoutMs)
    socket.once(ready, onReady)
    socket.on('error', onError)
    socket.once('close', onClose)
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
}

function checkIpIdentity(ip: string, cert: import('node:tls').PeerCertificate): Error | undefined {
  const alt = cert.subjectaltname ?? ''
  const names = alt.split(/,\s*/).map((s) => s.trim())
  if (names.includes(`IP Address:${ip}`)) return undefined
  return new Error(`the TURN server's certificate does not name ${ip} (give tls.servername to check a host name instead)`)
}

export interface RequestOptions {
  readonly timeoutMs: number
  readonly signal?: AbortSignal | undefined
  /** Success responses must carry a valid MESSAGE-INTEGRITY with this key (error responses: when they carry one). */
  readonly integrityKey?: Buffer | undefined
  /** Stop reading at this request's success response and hand the socket over (CONNECTION-BIND). */
  readonly detachOnSuccess?: boolean | undefined
}

interface Pending {
  readonly method: number
  readonly options: RequestOptions
  resolve(msg: StunMessage): void
  reject(err: Error): void
}

export interface ConnectionLimits {
  readonly maxMessageBytes: number
  readonly maxPendingTransactions: number
}

export class TurnConnection {
  private readonly decoder: StunStreamDecoder
  private readonly pending = new Map<string, Pending>()
  private closedWith: DhtnetError | undefined
  private detachedSocket = false
  /** Messages dropped: malformed, unexpected, unauthenticated (for tests and logs). */
  dropped = 0
  /** Called for each well-formed indication. */
  onIndication: ((msg: StunMessage) => void) | undefined
  /** Called once when the connection ends (not after detach). */
  onClose: ((err: DhtnetError) => void) | undefined

  constructor(
    readonly socket: Socket,
    readonly server: ServerEndpoint,
    private readonly limits: ConnectionLimits,
    private readonly logger: Logger,
  ) {
    this.decoder = new StunStreamDecoder(limits.maxMessageBytes)
    socket.on('readable', this.onReadable)
    socket.on('error', this.onError)
    socket.on('close', this.onSocketClose)
    socket.on('end', this.onEnd)
  }

  get closed(): boolean {
    return this.closedWith !== undefined || this.detachedSocket
  }

  get pendingTransactions(): number {
    return this.pending.size
  }

  /**
   * Send a request and wait for its response (success or error class; the caller reads the error code). Rejects
   * TURN_UNREACHABLE on timeout or when the connection ends, ABORTED on the signal, TRANSPORT_ERROR when too many
   * requests are in flight.
   */
  request(message: Buffer, options: RequestOptions): Promise<StunMessage> {
    if (this.closedWith) return Promise.reject(this.closedWith)
    if (this.detachedSocket) return Promise.reject(new DhtnetError('TRANSPORT_CLOSED', 'this TURN connection became a data stream'))
    if (options.signal?.aborted) return Promise.reject(new DhtnetError('ABORTED', 'TURN request aborted', { cause: options.signal.reason }))
    if (this.pending.size >= this.limits.maxPendingTransactions) {
      return Promise.reject(new DhtnetError('TRANSPORT_ERROR', `more than ${this.limits.maxPendingTransactions} TURN requests in flight on one connection`))
    }
    const id = message.subarray(8, 20).toString('hex')
    const method = methodOf(message.readUInt16BE(0))
    return new Promise<StunMessage>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        this.pending.delete(id)
      }
      const onAbort = (): void => {
        done()
        reject(new DhtnetError('ABORTED', 'TURN request aborted', { cause: options.signal?.reason }))
      }
      const timer = setTimeout(() => {
        done()
        reject(new DhtnetError('TURN_UNREACHABLE', `no answer from the TURN server ${describeEndpoint(this.server)} within ${options.timeoutMs} ms`))
      }, options.timeoutMs)
      this.pending.set(id, {
        method,
        options,
        resolve: (msg) => {
          done()
          resolve(msg)
        },
        reject: (err) => {
          done()
          reject(err)
        },
      })
      options.signal?.addEventListener('abort', onAbort, { once: true })
      this.socket.write(message)
    })
  }

  /** Send an indication (no answer). */
  send(message: Buffer): void {
    if (!this.closed) this.socket.write(message)
  }

  /** Close the connection (destroy the socket); pending requests reject with `err`. Idempotent. */
  close(err: DhtnetError = new DhtnetError('TRANSPORT_CLOSED', 'TURN connection closed')): void {
    if (this.closedWith || this.detachedSocket) return
    this.closedWith = err
    this.release()
    this.socket.on('error', () => {})
    this.socket.destroy()
    for (const p of [...this.pending.values()]) p.reject(err)
    this.pending.clear()
    this.onClose?.(err)
  }

  /** End the connection gracefully once written data is flushed (FIN), then destroy it. */
  end(): void {
    if (this.closed) return
    this.socket.end()
    const timer = setTimeout(() => this.close(), 1000)
    timer.unref()
    this.socket.once('close', () => clearTimeout(timer))
  }

  private release(): void {
    this.socket.off('readable', this.onReadable)
    this.socket.off('error', this.onError)
    this.socket.off('close', this.onSocketClose)
    this.socket.off('end', this.onEnd)
  }

  private readonly onError = (err: Error): void => {
    this.close(
      new DhtnetError('TURN_UNREACHABLE', `connection to the TURN server ${describeEndpoint(this.server)} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, {
        cause: err,
      }),
    )
  }

  private readonly onEnd = (): void => {
    this.close(new DhtnetError('TURN_UNREACHABLE', `the TURN server ${describeEndpoint(this.server)} closed the connection`))
  }

  private readonly onSocketClose = (): void => {
    this.close(new DhtnetError('TURN_UNREACHABLE', `the connection to the TURN server ${describeEndpoint(this.server)} closed`))
  }

  private readonly onReadable = (): void => {
    let chunk: Buffer | null
    while (!this.closed && (chunk = this.socket.read() as Buffer | null) !== null) {
      this.decoder.push(chunk)
      if (!this.drain()) return
    }
  }

  /** Handle every whole message buffered; false once the connection closed or was detached. */
  private drain(): boolean {
    for (;;) {
      let item
      try {
        item = this.decoder.next()
      } catch (err) {
        this.close(isDhtnetError(err) ? err : new DhtnetError('STUN_ERROR', String(err)))
        return false
      }
      if (!item) return true
      if (item.kind === 'channel-data') {
        this.dropped++
        continue
      }
      let msg: StunMessage
      try {
        msg = StunMessage.decode(item.message, { maxBytes: this.limits.maxMessageBytes, maxAttributes: 32 })
      } catch (err) {
        this.dropped++
        this.logger('debug', `turn: dropped a malformed message from the server: ${(err as Error).message}`)
        continue
      }
      if (msg.class === 'indication') {
        try {
          this.onIndication?.(msg)
        } catch (err) {
          this.dropped++
          this.logger('debug', `turn: dropped an indication: ${(err as Error).message}`)
        }
        if (this.closed) return false
        continue
      }
      if (msg.class === 'request') {
        this.dropped++
        continue
      }
      const pending = this.pending.get(msg.transactionIdHex)
      if (!pending || pending.method !== msg.method || !this.authentic(msg, pending.options.integrityKey)) {
        this.dropped++
        continue
      }
      if (msg.class === 'success' && pending.options.detachOnSuccess) {
        pending.resolve(msg)
        this.detach()
        return false
      }
      pending.resolve(msg)
    }
  }

  /** Responses to authenticated requests: a success must prove the key; an error may lack MESSAGE-INTEGRITY
   *  (401, 438 and others are sent without it) but a wrong one is dropped. */
  private authentic(msg: StunMessage, key: Buffer | undefined): boolean {
    if (!key) return true
    if (!msg.has(StunAttr.MESSAGE_INTEGRITY)) return msg.class === 'error'
    return verifyIntegrity(msg, key)
  }

  /** Stop being a STUN connection: the bytes after the last message go back into the socket, unread. */
  private detach(): void {
    this.detachedSocket = true
    this.release()
    // keep errors from crashing the process until the new owner listens (the owner sees 'close' anyway)
    this.socket.on('error', () => {})
    const rest = this.decoder.takeRemaining()
    if (rest.length > 0) this.socket.unshift(rest)
    for (const p of [...this.pending.values()]) p.reject(new DhtnetError('TRANSPORT_CLOSED', 'this TURN connection became a data stream'))
    this.pending.clear()
  }
}
