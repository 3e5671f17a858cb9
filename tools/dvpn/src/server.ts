/**
 * `dvpn -l`: one TUN for every client. Each client session gets addresses from the pool (pool.ts), sent in our
 * CONFIG (protocol.ts) or in DHTNet's metadata map (dhtnet-protocol.ts); packets are routed by destination address:
 * from the TUN to the client that owns it, from a client to another client directly, anything else into the TUN.
 * A client may only send from its own addresses (others are dropped and counted). A leaving client's addresses stay
 * reserved for it during the grace period; a client that reconnects gets them back.
 */
import type { DatagramChannel, PeerInfo, StreamChannel, ToolNode } from '@dhtnet/core'
import { openTun, type TunDevice } from '@dhtnet/tun'
import { RunError, untilAborted, type Log } from '@dhtnet/cli-kit'
import { defaultNetworks, formatIPv4, formatIPv6, formatSubnet4, formatSubnet6, hostOf, parseIPv4, type Subnet4, type Subnet6 } from './addresses.js'
import { DHTNET_CHANNEL } from './dhtnet-protocol.js'
import { startDhtnetServerSession } from './dhtnet-session.js'
import { DatagramLink, StreamLink, type PacketLink } from './links.js'
import { NetChanges } from './netconfig.js'
import type { ServerOptions } from './options.js'
import { dst4, dst6, isWholePacket, src4, src6 } from './packets.js'
import { AddressPool, type Lease } from './pool.js'
import { CONTROL_CHANNEL, DATA_CHANNEL_PREFIX, FrameDecoder, FrameType, ProtocolError, encodeConfig, encodePing, encodeRefuse, type Frame, type Hello } from './protocol.js'
import { runScript } from './script.js'
import { configureServerTun, enableMasquerade, type ServerTunPlan } from './tun-setup.js'

/** How long a client has to send its HELLO after opening the control channel. */
const HELLO_TIMEOUT_MS = 10_000
/** How often the server logs its counters (--verbose) while clients are connected. */
const STATS_INTERVAL_MS = 60_000

export function serverPlan(options: Pick<ServerOptions, 'networks'>, longId: string): ServerTunPlan & { defaults4: boolean; defaults6: boolean } {
  const d = defaultNetworks(longId)
  const n4 = options.networks.v4
  const n6 = options.networks.v6
  const subnet4: Subnet4 = n4 ? n4.server.subnet : d.v4
  const clients4: Subnet4 = n4 ? n4.clients.subnet : d.v4
  const server4 = n4?.server.address ?? (subnet4.network + 1) >>> 0
  const subnet6: Subnet6 = n6 ? n6.server.subnet : d.v6
  const clients6: Subnet6 = n6 ? n6.clients.subnet : d.v6
  const server6 = n6?.server.address ?? subnet6.network + 1n
  return { server4, subnet4, clients4, server6, subnet6, clients6, defaults4: !n4, defaults6: !n6 }
}

export interface ServerStats {
  sessions: number
  fromTun: number
  noRoute: number
  spoofed: number
  clientToClient: number
}

abstract class Session {
  private current: PacketLink | undefined
  /** Counters of the links this session used before the current one. */
  private readonly earlier = { packetsIn: 0, packetsOut: 0, drops: 0 }
  readonly startedAt = Date.now()
  closed = false
  constructor(
    readonly n: number,
    readonly peer: PeerInfo,
    readonly lease: Lease,
  ) {}
  abstract get kind(): string
  abstract close(reason: string): void

  get link(): PacketLink | undefined {
    return this.current
  }

  /** Switch to another link (the datagram channel opened, or closed): the old one stops delivering. */
  set link(next: PacketLink | undefined) {
    const old = this.current
    if (old && old !== next) {
      old.detach()
      this.earlier.packetsIn += old.stats.packetsIn
      this.earlier.packetsOut += old.stats.packetsOut
      this.earlier.drops += old.stats.drops
    }
    this.current = next
  }

  /** Packets of the whole session, every link together. */
  totals(): { packetsIn: number; packetsOut: number; drops: number } {
    const l = this.current?.stats
    return { packetsIn: this.earlier.packetsIn + (l?.packetsIn ?? 0), packetsOut: this.earlier.packetsOut + (l?.packetsOut ?? 0), drops: this.earlier.drops + (l?.drops ?? 0) }
  }
}

class NativeSession extends Session {
  datagram: DatagramChannel | undefined
  constructor(
    n: number,
    peer: PeerInfo,
    lease: Lease,
    readonly control: StreamChannel,
    readonly hello: Hello,
  ) {
    super(n, peer, lease)
  }
  get kind(): string {
    return this.datagram ? 'datagram channel' : 'stream channel'
  }
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.link?.detach()
    this.datagram?.close()
    if (!this.control.destroyed) this.control.destroy(new Error(reason))
  }
}

class DhtnetSession extends Session {
  constructor(
    n: number,
    peer: PeerInfo,
    lease: Lease,
    readonly channel: StreamChannel,
  ) {
    super(n, peer, lease)
  }
  get kind(): string {
    return "DHTNet's dvpn://"
  }
  close(): void {
    if (this.closed) return
    this.closed = true
    this.link?.detach()
    if (!this.channel.destroyed) this.channel.destroy()
  }
}

export class VpnServer {
  readonly stats: ServerStats = { sessions: 0, fromTun: 0, noRoute: 0, spoofed: 0, clientToClient: 0 }
  private tun: TunDevice | undefined
  private pool: AddressPool | undefined
  private plan: (ServerTunPlan & { defaults4: boolean; defaults6: boolean }) | undefined
  private readonly net: NetChanges
  private readonly sessions = new Set<Session>()
  private readonly byV4 = new Map<number, Session>()
  private readonly byV6 = new Map<bigint, Session>()
  private counter = 0
  private statsTimer: NodeJS.Timeout | undefined
  /** Per TUN wake-up: packets for each session, sent together. */
  private readonly outgoing = new Map<Session, Buffer[]>()

  constructor(
    private readonly node: ToolNode,
    private readonly options: ServerOptions,
    private readonly log: Log,
  ) {
    this.net = new NetChanges(undefined, (line) => log.debug(line))
  }

  get tunName(): string | undefined {
    return this.tun?.name
  }

  async start(): Promise<void> {
    const o = this.options
    const plan = serverPlan(o, this.node.longId)
    this.plan = plan
    this.pool = new AddressPool({
      v4: plan.clients4,
      v6: plan.clients6,
      reserved4: [plan.server4],
      reserved6: [plan.server6],
      pins: o.pins,
      graceMs: o.graceMs,
      onFreed: (lease) => this.log.info(`freed ${lease.describe()} (held for ${lease.peer} for ${Math.round(o.graceMs / 1000)} s after it left)`),
    })
    let tun: TunDevice
    try {
      tun = openTun({ name: o.tunName, mtu: o.mtu })
    } catch (err) {
      throw new RunError(`cannot create the TUN interface: ${(err as Error).message}`, { hint: (err as { hint?: string }).hint, cause: err })
    }
    this.tun = tun
    try {
      if (o.scriptPath) {
        tun.up()
        this.log.info(`TUN ${tun.name} (MTU ${tun.mtu}) is up; ${o.scriptPath} configures it for each client (script_path)`)
      } else {
        await configureServerTun(this.net, tun.name, plan)
      }
      if (o.masquerade) {
        const table = await enableMasquerade(this.net, tun.name, plan.clients4, plan.clients6)
        this.log.info(`masquerading what clients send beyond ${tun.name} (nftables table inet ${table}; forwarding on)`)
      }
    } catch (err) {
      await this.stop()
      throw new RunError(`cannot configure ${tun.name}: ${(err as Error).message}`, { cause: err })
    }
    tun.on('packets', (packets) => this.fromTun(packets))
    tun.on('error', (err) => this.log.error(`TUN ${tun.name}: ${err.message}`))
    const d = (flag: boolean): string => (flag ? ' (default: no ip_address configured)' : '')
    this.log.info(
      `TUN ${tun.name} (MTU ${tun.mtu}): ${formatIPv4(plan.server4)} in ${formatSubnet4(plan.subnet4)}${d(plan.defaults4)}, ${formatIPv6(plan.server6)} in ${formatSubnet6(plan.subnet6)}${d(plan.defaults6)}`,
    )
    this.log.info(
      `clients get addresses from ${formatSubnet4(plan.clients4)} and ${formatSubnet6(plan.clients6)} (${this.pool.capacity} at most); a leaving client's are kept ${Math.round(o.graceMs / 1000)} s`,
    )
    if (o.pins.size > 0) for (const [id, pin] of o.pins) this.log.info(`pinned: ${id} gets ${formatIPv4(pin.v4)}`)
    if (o.allowedPeers.length > 0) this.log.info(`authorized peers: ${o.allowedPeers.join(', ')}`)
    this.statsTimer = setInterval(() => this.logStats(), STATS_INTERVAL_MS)
    this.statsTimer.unref()
    this.node.serve({
      decide: (peer, name) => this.decide(peer, name),
      onChannel: (peer, name, channel) => this.onChannel(peer, name, channel),
      onDatagramChannel: (peer, name, channel) => this.onDatagramChannel(peer, name, channel),
    })
  }

  /** Runs until `signal` aborts, then stops everything. */
  async run(signal: AbortSignal): Promise<number> {
    await untilAborted(signal)
    this.log.info(`stopping: ${this.sessions.size} client${this.sessions.size === 1 ? '' : 's'} connected`)
    const peers = new Set([...this.sessions].map((s) => s.peer.id))
    for (const s of [...this.sessions]) s.close('the dvpn server is shutting down')
    await Promise.all([...peers].map((p) => this.node.sync(p)))
    await this.stop()
    return 0
  }

  async stop(): Promise<void> {
    clearInterval(this.statsTimer)
    for (const s of [...this.sessions]) s.close('the dvpn server is shutting down')
    this.pool?.close()
    this.tun?.close()
    const failed = await this.net.undoAll()
    for (const f of failed) this.log.warn(`could not undo ${f}`)
  }

  private decide(peer: PeerInfo, name: string): boolean | { accept: false; reason: string } {
    if (name === CONTROL_CHANNEL) return true
    if (name === DHTNET_CHANNEL) {
      if (this.node.peerFlavour(peer.id) === 'dhtnet') return true
      return { accept: false, reason: "dvpn:// is DHTNet's protocol, for C++ DHTNet clients; this server speaks dvpn://v1 to its own" }
    }
    if (name.startsWith(DATA_CHANNEL_PREFIX)) {
      const s = this.sessionByToken(peer, name.slice(DATA_CHANNEL_PREFIX.length))
      return s ? true : { accept: false, reason: 'no session of this device has that data channel' }
    }
    this.log.debug(`declined channel "${name.slice(0, 80)}" from ${peer.id}`)
    return { accept: false, reason: `this dvpn server serves ${CONTROL_CHANNEL} and ${DHTNET_CHANNEL} only` }
  }

  private sessionByToken(peer: PeerInfo, token: string): NativeSession | undefined {
    for (const s of this.sessions) if (s instanceof NativeSession && s.peer.id === peer.id && s.lease.token === token && !s.closed) return s
    return undefined
  }

  private onChannel(peer: PeerInfo, name: string, channel: StreamChannel): void {
    channel.on('error', () => {}) // every end is handled through 'close'
    if (name === DHTNET_CHANNEL) return this.startDhtnetSession(peer, channel)
    if (name === CONTROL_CHANNEL) return this.startNativeSession(peer, channel)
    channel.destroy()
  }

  // --- our protocol ----------------------------------------------------------------------------------------------

  private startNativeSession(peer: PeerInfo, control: StreamChannel): void {
    let session: NativeSession | undefined
    let streamLink: StreamLink | undefined
    const helloTimer = setTimeout(() => control.destroy(new Error('no HELLO within 10 s')), HELLO_TIMEOUT_MS)
    helloTimer.unref()
    const decoder = new FrameDecoder((frame: Frame) => {
      if (!session) {
        if (frame.type !== FrameType.HELLO) throw new ProtocolError('the first frame must be HELLO')
        clearTimeout(helloTimer)
        session = this.admitNative(peer, control, frame.hello)
        if (session) {
          streamLink = new StreamLink(control, (packets) => this.fromClient(session!, packets))
          // packets ride the control channel until (unless) the client opens its datagram channel
          session.link = streamLink
        }
        return
      }
      switch (frame.type) {
        case FrameType.PACKET:
          return streamLink!.deliver(frame.packet)
        case FrameType.PING:
          control.write(encodePing(FrameType.PONG, frame.nonce))
          return
        default:
          throw new ProtocolError(`unexpected frame type ${frame.type} from a client`)
      }
    })
    control.on('data', (chunk: Buffer) => {
      try {
        decoder.push(chunk)
      } catch (err) {
        this.log.info(`${peer.id}: protocol error: ${(err as Error).message}`)
        control.destroy(new Error(`protocol error: ${(err as Error).message}`))
      }
    })
    control.once('close', () => {
      clearTimeout(helloTimer)
      if (session) this.endSession(session, 'its control channel closed')
    })
    control.on('end', () => control.end())
  }

  private admitNative(peer: PeerInfo, control: StreamChannel, hello: Hello): NativeSession | undefined {
    const got = this.acquire(peer, hello.token, hello.ipv4 !== undefined ? parseIPv4(hello.ipv4) : undefined)
    if (!got.ok) {
      this.log.info(`refused ${peer.id}: ${got.reason}`)
      control.end(encodeRefuse(got.reason))
      return undefined
    }
    const session = new NativeSession(++this.counter, peer, got.lease, control, hello)
    this.register(session)
    const plan = this.plan!
    const routes4 = uniq([formatSubnet4(plan.subnet4), formatSubnet4(plan.clients4)])
    const routes6 = uniq([formatSubnet6(plan.subnet6), formatSubnet6(plan.clients6)])
    control.write(
      encodeConfig({
        token: got.lease.token,
        ipv4: formatIPv4(got.lease.v4),
        server4: formatIPv4(plan.server4),
        ipv6: formatIPv6(got.lease.v6),
        server6: formatIPv6(plan.server6),
        routes4,
        routes6,
        mtu: this.tun!.mtu,
        masquerade: this.options.masquerade,
      }),
    )
    if (hello.fullTunnel && !this.options.masquerade) {
      this.log.info(`${peer.id} asked for a full tunnel, but masquerade is off here: only the VPN's networks will answer it`)
    }
    this.joined(session, got.resumed)
    return session
  }

  private onDatagramChannel(peer: PeerInfo, name: string, channel: DatagramChannel): void {
    const session = name.startsWith(DATA_CHANNEL_PREFIX) ? this.sessionByToken(peer, name.slice(DATA_CHANNEL_PREFIX.length)) : undefined
    if (!session) return channel.close()
    session.datagram?.close()
    session.datagram = channel
    const link = new DatagramLink(channel, (packets) => this.fromClient(session, packets))
    session.link = link
    this.log.debug(`session #${session.n} ${peer.id}: packets on the datagram channel (up to ${link.maxPacket} bytes each)`)
    channel.once('close', () => {
      if (session.datagram !== channel || session.closed) return
      // the datagram channel is gone but the control channel lives: back to packets on the stream
      session.datagram = undefined
      const stream = new StreamLink(session.control, (packets) => this.fromClient(session, packets))
      session.link = stream
    })
  }

  // --- DHTNet's protocol -----------------------------------------------------------------------------------------

  private startDhtnetSession(peer: PeerInfo, channel: StreamChannel): void {
    const got = this.acquire(peer, undefined)
    if (!got.ok) {
      // DHTNet's protocol has no refusal: the client sees its channel end
      this.log.info(`refused ${peer.id} (DHTNet client): ${got.reason}`)
      channel.destroy()
      return
    }
    const session = new DhtnetSession(++this.counter, peer, got.lease, channel)
    this.register(session)
    const plan = this.plan!
    session.link = startDhtnetServerSession(
      channel,
      { client4: formatIPv4(got.lease.v4), server4: formatIPv4(plan.server4), client6: formatIPv6(got.lease.v6), server6: formatIPv6(plan.server6) },
      (packets) => this.fromClient(session, packets),
    )
    channel.once('close', () => this.endSession(session, 'its channel closed'))
    this.joined(session, got.resumed)
  }

  // --- sessions ----------------------------------------------------------------------------------------------------

  private acquire(peer: PeerInfo, token: string | undefined, wanted4?: number) {
    const got = this.pool!.acquire(peer, token, wanted4)
    if (got.ok && got.replaced) {
      // the device reconnected before its old session ended: the new one takes the addresses over
      for (const s of [...this.sessions]) {
        if (s.lease === got.lease) {
          this.log.info(`session #${s.n} ${s.peer.id}: replaced by a new connection of the same device`)
          this.unregister(s)
          s.close('replaced by a new session of the same device')
        }
      }
    }
    return got
  }

  private register(session: Session): void {
    this.sessions.add(session)
    this.byV4.set(session.lease.v4, session)
    this.byV6.set(session.lease.v6, session)
    this.stats.sessions++
  }

  private unregister(session: Session): void {
    this.sessions.delete(session)
    if (this.byV4.get(session.lease.v4) === session) this.byV4.delete(session.lease.v4)
    if (this.byV6.get(session.lease.v6) === session) this.byV6.delete(session.lease.v6)
  }

  private joined(session: Session, resumed: boolean): void {
    const remote = this.remoteOf(session.peer)
    this.log.info(
      `client ${session.peer.id} joined: ${session.lease.describe()}${resumed ? ' (its addresses from before)' : ''} (session #${session.n}, ${session instanceof DhtnetSession ? "DHTNet's dvpn://" : 'dvpn://v1'}${remote ? `, from ${remote}` : ''})`,
    )
    if (this.options.scriptPath && this.tun) {
      const plan = this.plan!
      runScript(this.options.scriptPath, {
        peer4: formatIPv4(session.lease.v4),
        local4: formatIPv4(plan.server4),
        tun: this.tun.name,
        remote: hostOf(remote) ?? '',
        isClient: false,
        local6: formatIPv6(plan.server6),
        peer6: formatIPv6(session.lease.v6),
      }).then(
        (r) => {
          if (r.output) this.log.debug(`script_path output:\n${r.output}`)
          if (r.code !== 0) this.log.warn(`script_path ${this.options.scriptPath} exited with ${r.code ?? r.signal} for session #${session.n}`)
        },
        (err: Error) => this.log.warn(err.message),
      )
    }
  }

  private remoteOf(peer: PeerInfo): string | undefined {
    try {
      return this.node.runtime.connections.connections(peer.id)[0]?.remoteAddress
    } catch {
      return undefined
    }
  }

  private endSession(session: Session, why: string): void {
    if (!this.sessions.has(session)) return
    this.unregister(session)
    session.close(why)
    this.pool!.release(session.lease)
    const t = session.totals()
    this.log.info(
      `client ${session.peer.id} left (${why}): ${session.lease.describe()} kept for it ${Math.round(this.options.graceMs / 1000)} s; session #${session.n}: ${Math.round((Date.now() - session.startedAt) / 1000)} s, ${t.packetsIn} packets in, ${t.packetsOut} out, ${t.drops} dropped`,
    )
  }

  // --- routing -------------------------------------------------------------------------------------------------------

  private fromTun(packets: Buffer[]): void {
    const out = this.outgoing
    for (const p of packets) {
      this.stats.fromTun++
      const v = p[0]! >> 4
      const s = v === 4 && p.length >= 20 ? this.byV4.get(dst4(p)) : v === 6 && p.length >= 40 ? this.byV6.get(dst6(p)) : undefined
      if (!s) {
        if (this.stats.noRoute++ < 5) this.log.debug(`no client for a packet from the TUN to ${describeDestination(p)} (dropped)`)
        continue
      }
      let list = out.get(s)
      if (!list) out.set(s, (list = []))
      list.push(p)
    }
    this.flush()
  }

  private flush(): void {
    for (const [s, list] of this.outgoing) s.link?.send(list)
    this.outgoing.clear()
  }

  private fromClient(session: Session, packets: Buffer[]): void {
    if (session.closed) return
    const toTun: Buffer[] = []
    for (const p of packets) {
      if (!isWholePacket(p)) {
        this.dropFromClient(session, p, 'not a whole IP packet')
        continue
      }
      const v = p[0]! >> 4
      let other: Session | undefined
      if (v === 4) {
        if (src4(p) !== session.lease.v4) {
          this.dropFromClient(session, p, `source ${formatIPv4(src4(p))} is not its address`)
          continue
        }
        other = this.byV4.get(dst4(p))
      } else {
        if (src6(p) !== session.lease.v6) {
          this.dropFromClient(session, p, `source ${formatIPv6(src6(p))} is not its address`)
          continue
        }
        other = this.byV6.get(dst6(p))
      }
      if (other && other !== session) {
        // client to client: straight to the other session, the TUN is not involved
        this.stats.clientToClient++
        let list = this.outgoing.get(other)
        if (!list) this.outgoing.set(other, (list = []))
        list.push(p)
      } else {
        toTun.push(p)
      }
    }
    if (toTun.length > 0) this.tun?.writeMany(toTun)
    if (this.outgoing.size > 0) this.flush()
  }

  private dropFromClient(session: Session, _p: Buffer, why: string): void {
    if (this.stats.spoofed++ < 5) this.log.debug(`session #${session.n} ${session.peer.id}: dropped a packet: ${why}`)
  }

  private logStats(): void {
    if (this.sessions.size === 0) return
    const t = this.tun?.stats
    this.log.debug(
      `${this.sessions.size} client(s); from the TUN ${this.stats.fromTun} packets (${this.stats.noRoute} without a client), client to client ${this.stats.clientToClient}, spoofed/malformed dropped ${this.stats.spoofed}${t ? `; TUN drops ${t.drops}` : ''}`,
    )
  }

  /** For tests and diagnostics: the sessions as (peer, addresses). */
  describeSessions(): string[] {
    return [...this.sessions].map((s) => `${s.peer.id} ${s.lease.describe()} ${s.kind}`)
  }
}

function describeDestination(p: Buffer): string {
  const v = p[0]! >> 4
  if (v === 4 && p.length >= 20) return formatIPv4(dst4(p))
  if (v === 6 && p.length >= 40) return formatIPv6(dst6(p))
  return `a packet of IP version ${v}`
}

function uniq(list: string[]): string[] {
  return [...new Set(list)]
}
