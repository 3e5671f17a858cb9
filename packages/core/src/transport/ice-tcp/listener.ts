/**
 * The passive side of ICE-TCP: one listening socket per address family, shared by every session of a transport and
 * demultiplexed by the ufrag in the USERNAME of the first STUN request (`<our ufrag>:<theirs>`).
 *
 * Before a connection is authenticated it costs bounded memory and CPU: it must send, within `preAuthTimeoutMs`, one
 * RFC 4571 frame of at most `maxFirstFrameBytes` holding a STUN Binding request whose USERNAME names a live session,
 * and that session must accept it (MESSAGE-INTEGRITY with its password, one HMAC). Anything else (garbage, plain
 * text, a bigger frame, an unknown ufrag, silence) closes that connection alone. At most `maxUnauthenticated`
 * connections wait at a time, and `maxUnauthenticatedPerAddress` from one source address; above that new ones are
 * closed at once.
 */
import { createServer, type Server, type Socket } from 'node:net'
import { DhtnetError } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { FrameDecoder } from './framing.js'
import { StunMessage, looksLikeStun } from '../stun/message.js'
import { BINDING_REQUEST } from '../stun/constants.js'
import { targetUfragOf } from './check-messages.js'
import { normalizeIp, type IpFamily } from '../stun/ip.js'

/** Where an inbound connection comes from and arrives at. For an accepted socket these are its own addresses; a
 *  connection relayed by our TURN allocation (adopt()) arrives at our relayed address from the peer's address, while
 *  the socket itself is connected to the TURN server. */
export interface InboundOrigin {
  readonly remoteAddress: string
  readonly remotePort: number
  readonly localAddress: string
  readonly localPort: number
  /** true when the connection came through our TURN relay. */
  readonly relayed: boolean
}

/** A session's answer to a new connection: true = it took the socket (and the decoder with what follows). */
export type InboundHandler = (socket: Socket, request: StunMessage, decoder: FrameDecoder, origin: InboundOrigin) => boolean

export interface PassiveListenerOptions {
  /** Listen on this address only; default: every IPv4 and IPv6 address (two wildcard sockets). */
  readonly bindAddress?: string | undefined
  /** Port range for the listening sockets (inclusive); default: any port. */
  readonly portRange?: readonly [number, number] | undefined
  readonly preAuthTimeoutMs?: number
  readonly maxUnauthenticated?: number
  readonly maxUnauthenticatedPerAddress?: number
  readonly maxFirstFrameBytes?: number
  readonly logger: Logger
}

export interface ListeningAddress {
  readonly family: IpFamily
  /** The address bound ('0.0.0.0' / '::' for the wildcard sockets). */
  readonly address: string
  readonly port: number
}

export const DEFAULT_PRE_AUTH_TIMEOUT_MS = 3000
export const DEFAULT_MAX_UNAUTHENTICATED = 64
export const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS = 8
export const DEFAULT_MAX_FIRST_FRAME_BYTES = 1024

export class PassiveListener {
  private readonly handlers = new Map<string, InboundHandler>()
  private readonly waiting = new Set<Socket>()
  private readonly perAddress = new Map<string, number>()
  private closed = false
  /** Connections refused or closed before authentication (for tests and logs). */
  refused = 0

  private constructor(
    private readonly servers: Server[],
    readonly addresses: readonly ListeningAddress[],
    private readonly options: PassiveListenerOptions,
  ) {
    for (const s of servers) s.on('connection', (socket) => this.admit(socket, originOf(socket)))
  }

  static async open(options: PassiveListenerOptions): Promise<PassiveListener> {
    const binds: Array<{ address: string; family: IpFamily; ipv6Only: boolean }> = []
    if (options.bindAddress) {
      const family: IpFamily = options.bindAddress.includes(':') ? 6 : 4
      binds.push({ address: options.bindAddress, family, ipv6Only: family === 6 })
    } else {
      binds.push({ address: '0.0.0.0', family: 4, ipv6Only: false }, { address: '::', family: 6, ipv6Only: true })
    }
    const servers: Server[] = []
    const addresses: ListeningAddress[] = []
    try {
      for (const b of binds) {
        const server = createServer({ noDelay: true })
        try {
          const port = await listenInRange(server, b.address, b.ipv6Only, options.portRange)
          servers.push(server)
          addresses.push({ family: b.family, address: b.address, port })
        } catch (err) {
          server.close()
          // no IPv6 on this host: IPv4 alone is fine, unless the caller asked for this very address
          if (options.bindAddress || b.family === 4) throw err
          options.logger('debug', `ice-tcp: no IPv6 listener (${(err as Error).message})`)
        }
      }
    } catch (err) {
      for (const s of servers) s.close()
      throw new DhtnetError('BIND_FAILED', `ICE-TCP: cannot listen: ${(err as Error).message}`, { cause: err })
    }
    return new PassiveListener(servers, addresses, options)
  }

  portFor(family: IpFamily): number | undefined {
    return this.addresses.find((a) => a.family === family)?.port
  }

  /** Connections waiting for their first request right now. */
  get unauthenticated(): number {
    return this.waiting.size
  }

  register(ufrag: string, handler: InboundHandler): void {
    this.handlers.set(ufrag, handler)
  }

  unregister(ufrag: string): void {
    this.handlers.delete(ufrag)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const s of this.waiting) s.destroy()
    this.waiting.clear()
    this.perAddress.clear()
    this.handlers.clear()
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))))
  }

  /**
   * A connection that did not come through our listening sockets but carries a peer's RFC 4571 frames the same way:
   * an inbound connection relayed by our TURN allocation (its socket is connected to the TURN server; `origin` names
   * the peer and our relayed address). Same pre-authentication path and bounds as an accepted one (counted per peer
   * address).
   */
  adopt(socket: Socket, origin: Omit<InboundOrigin, 'relayed'>): void {
    this.admit(socket, { ...origin, remoteAddress: normalizeIp(origin.remoteAddress), localAddress: normalizeIp(origin.localAddress), relayed: true })
  }

  private admit(socket: Socket, origin: InboundOrigin): void {
    socket.on('error', () => {})
    const source = origin.remoteAddress
    const maxAll = this.options.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED
    const maxPer = this.options.maxUnauthenticatedPerAddress ?? DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS
    const fromSource = this.perAddress.get(source) ?? 0
    if (this.closed || this.waiting.size >= maxAll || fromSource >= maxPer) {
      this.refused++
      socket.destroy()
      return
    }
    this.waiting.add(socket)
    this.perAddress.set(source, fromSource + 1)
    const decoder = new FrameDecoder(this.options.maxFirstFrameBytes ?? DEFAULT_MAX_FIRST_FRAME_BYTES)
    let settled = false
    const settle = (): void => {
      settled = true
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('close', onClose)
      this.waiting.delete(socket)
      const n = (this.perAddress.get(source) ?? 1) - 1
      if (n > 0) this.perAddress.set(source, n)
      else this.perAddress.delete(source)
    }
    const refuse = (why: string): void => {
      if (settled) return
      settle()
      this.refused++
      this.options.logger('debug', `ice-tcp: closed an unauthenticated connection from ${source}: ${why}`)
      socket.destroy()
    }
    const timer = setTimeout(() => refuse('no valid check in time'), this.options.preAuthTimeoutMs ?? DEFAULT_PRE_AUTH_TIMEOUT_MS)
    timer.unref()
    const onClose = (): void => {
      if (!settled) settle()
    }
    const onData = (chunk: Buffer): void => {
      decoder.push(chunk)
      let frame: Buffer | undefined
      try {
        frame = decoder.next()
      } catch {
        return refuse('first frame too large (not ICE)')
      }
      if (!frame) return
      if (!looksLikeStun(frame) || frame.readUInt16BE(0) !== BINDING_REQUEST) return refuse('first frame is not a STUN Binding request')
      let request: StunMessage
      try {
        request = StunMessage.decode(frame, { maxBytes: decoder.maxFrameBytes })
      } catch (err) {
        return refuse((err as Error).message)
      }
      const ufrag = targetUfragOf(request)
      const handler = ufrag === undefined ? undefined : this.handlers.get(ufrag)
      if (!handler) return refuse('USERNAME names no session')
      socket.pause()
      settle()
      if (!handler(socket, request, decoder, origin)) {
        this.refused++
        socket.destroy()
      }
    }
    socket.on('data', onData)
    socket.on('close', onClose)
  }
}

function originOf(socket: Socket): InboundOrigin {
  return {
    remoteAddress: normalizeIp(socket.remoteAddress ?? ''),
    remotePort: socket.remotePort ?? 0,
    localAddress: normalizeIp(socket.localAddress ?? ''),
    localPort: socket.localPort ?? 0,
    relayed: false,
  }
}

/** Listen on a random port of the range (20 tries), or any port without a range. Resolves with the port. */
async function listenInRange(server: Server, address: string, ipv6Only: boolean, range: readonly [number, number] | undefined): Promise<number> {
  const attempt = (port: number) =>
    new Promise<number>((resolve, reject) => {
      const onError = (err: Error) => reject(err)
      server.once('error', onError)
      server.listen({ host: address, port, ipv6Only, exclusive: true }, () => {
        server.off('error', onError)
        const a = server.address()
        resolve(typeof a === 'object' && a ? a.port : port)
      })
    })
  if (!range) return attempt(0)
  const [lo, hi] = range
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 1 && hi <= 65535 && lo <= hi)) {
    throw new DhtnetError('BAD_OPTION', `bad ICE-TCP port range ${lo}-${hi}`)
  }
  let last: unknown
  for (let i = 0; i < 20; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo + 1))
    try {
      return await attempt(port)
    } catch (err) {
      last = err
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    }
  }
  throw last
}
