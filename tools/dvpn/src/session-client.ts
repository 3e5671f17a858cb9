/**
 * One client session with the server, whichever protocol it speaks: open the channels, get the addresses, carry
 * packets, notice when it is gone. A C++ DHTNet server (`mux: 'dhtnet'`) gets DHTNet's `dvpn://`; ours gets
 * `dvpn://v1` with a datagram channel for the packets when the multiplexer has datagram channels (a stream otherwise).
 */
import type { ConnectionInfo, DatagramChannel, ToolNode } from '@dhtnet/core'
import { RunError, type Log } from '@dhtnet/cli-kit'
import { formatIPv4, parseIPv4 } from './addresses.js'
import { DHTNET_CHANNEL } from './dhtnet-protocol.js'
import { startDhtnetClientSession } from './dhtnet-session.js'
import { DatagramLink, StreamLink, type PacketLink, type PacketSink } from './links.js'
import { CONTROL_CHANNEL, DATA_CHANNEL_PREFIX, FrameDecoder, FrameType, ProtocolError, encodeHello, encodePing, type Config, type Frame } from './protocol.js'

/** How long the server has to answer the HELLO (or send DHTNet's metadata). */
export const HANDSHAKE_TIMEOUT_MS = 15_000
/** The MTU of a C++ DHTNet server's TUN (it never sets one: the kernel's default). */
export const DHTNET_DEFAULT_MTU = 1500

export interface SessionAddresses {
  readonly client4: string
  readonly server4: string
  readonly client6: string
  readonly server6: string
  /** Split tunnel: what goes through the VPN. */
  readonly routes4: readonly string[]
  readonly routes6: readonly string[]
}

export interface ClientSession {
  readonly protocol: 'dvpn://v1' | 'dvpn://'
  readonly connection: ConnectionInfo
  readonly addresses: SessionAddresses
  /** The server's TUN MTU (ours), or DHTNet's default. */
  readonly serverMtu: number
  readonly masquerade: boolean
  /** For a reconnection: names our lease. */
  readonly token: string | undefined
  readonly link: PacketLink
  /** Resolves once the session is over (channel closed, server silent, or close()), with why. */
  readonly ended: Promise<string>
  /** End it: our side of the channels closes (the server starts the grace period of our addresses). */
  close(): void
}

/** The server said no: reconnecting would not help. */
export class RefusedError extends RunError {}

export interface OpenSessionOptions {
  readonly peer: string
  readonly token: string | undefined
  /** The addresses of the previous session: asked for again (the server gives them when they are free). */
  readonly previous: SessionAddresses | undefined
  readonly fullTunnel: boolean
  readonly keepaliveMs: number
  readonly timeoutMs: number
  readonly signal: AbortSignal
  /** Where received packets go. */
  readonly sink: PacketSink
  readonly log: Log
}

export async function openSession(node: ToolNode, o: OpenSessionOptions): Promise<ClientSession> {
  const connection = await node.connectPeer(o.peer, { timeoutMs: o.timeoutMs, signal: o.signal })
  o.log.debug(`path: ${connection.path} (${connection.mux === 'dhtnet' ? "a C++ DHTNet device: DHTNet's dvpn:// protocol" : 'our multiplexer'})`)
  if (connection.mux === 'dhtnet') return openDhtnetSession(node, connection, o)
  return openNativeSession(node, connection, o)
}

async function openDhtnetSession(node: ToolNode, connection: ConnectionInfo, o: OpenSessionOptions): Promise<ClientSession> {
  const channel = await node.connect(o.peer, DHTNET_CHANNEL, { timeoutMs: o.timeoutMs, signal: o.signal })
  channel.on('error', () => {})
  const s = await startDhtnetClientSession(channel, o.sink, HANDSHAKE_TIMEOUT_MS).catch((err: Error) => {
    channel.destroy()
    throw new RunError(`DHTNet server: ${err.message}`, { cause: err })
  })
  o.log.debug(`DHTNet metadata: ${JSON.stringify(s.metadata)}`)
  const a = s.addresses
  const routes4 = isIPv4Text(a.server4) ? [`${formatIPv4(parseIPv4(a.server4))}/32`] : []
  const ended = new Promise<string>((resolve) => {
    channel.once('close', () => resolve('the dvpn:// channel closed'))
  })
  return {
    protocol: 'dvpn://',
    connection,
    addresses: { ...a, routes4, routes6: [] },
    serverMtu: DHTNET_DEFAULT_MTU,
    masquerade: false,
    token: undefined,
    link: s.link,
    ended,
    close: () => {
      s.link.detach()
      channel.end()
    },
  }
}

function isIPv4Text(s: string): boolean {
  try {
    parseIPv4(s)
    return true
  } catch {
    return false
  }
}

async function openNativeSession(node: ToolNode, connection: ConnectionInfo, o: OpenSessionOptions): Promise<ClientSession> {
  const control = await node.connect(o.peer, CONTROL_CHANNEL, { timeoutMs: o.timeoutMs, signal: o.signal })
  control.on('error', () => {})
  let streamLink: StreamLink | undefined
  let heardAt = Date.now()
  let endedWith: ((why: string) => void) | undefined
  const ended = new Promise<string>((resolve) => (endedWith = resolve))
  const config = await new Promise<Config>((resolve, reject) => {
    let got = false
    const timer = setTimeout(() => fail(new RunError(`the server did not answer the VPN handshake within ${HANDSHAKE_TIMEOUT_MS / 1000} s`)), HANDSHAKE_TIMEOUT_MS)
    const fail = (err: Error): void => {
      if (got) return
      got = true
      clearTimeout(timer)
      control.destroy()
      reject(err)
    }
    const decoder = new FrameDecoder((frame: Frame) => {
      heardAt = Date.now()
      if (!got) {
        if (frame.type === FrameType.REFUSE) return fail(new RefusedError(`the server refused: ${frame.reason}`))
        if (frame.type !== FrameType.CONFIG) throw new ProtocolError('the server must answer HELLO with CONFIG or REFUSE')
        got = true
        clearTimeout(timer)
        streamLink = new StreamLink(control, o.sink)
        return resolve(frame.config)
      }
      if (frame.type === FrameType.PACKET) streamLink!.deliver(frame.packet)
      else if (frame.type !== FrameType.PONG) throw new ProtocolError(`unexpected frame type ${frame.type} from the server`)
    })
    control.on('data', (chunk: Buffer) => {
      try {
        decoder.push(chunk)
      } catch (err) {
        const e = new RunError(`protocol error from the server: ${(err as Error).message}`)
        if (!got) fail(e)
        else {
          control.destroy(e)
          endedWith?.(e.message)
        }
      }
    })
    control.once('close', () => {
      fail(new RunError('the server closed the VPN channel during the handshake'))
      endedWith?.('the control channel closed')
    })
    control.on('end', () => control.end())
    control.write(encodeHello({ ...(o.token ? { token: o.token } : {}), ...(o.previous ? { ipv4: o.previous.client4 } : {}), datagram: true, fullTunnel: o.fullTunnel }))
  })

  // packets: a datagram channel when the multiplexer has them (on ICE-TCP they ride the reliable stream)
  let datagram: DatagramChannel | undefined
  let link: PacketLink = streamLink!
  try {
    datagram = await node.connectDatagram(o.peer, DATA_CHANNEL_PREFIX + config.token, { timeoutMs: Math.min(o.timeoutMs, HANDSHAKE_TIMEOUT_MS), signal: o.signal })
    link = new DatagramLink(datagram, (packets) => {
      heardAt = Date.now()
      o.sink(packets)
    })
    streamLink!.detach()
    datagram.once('close', () => endedWith?.('the datagram channel closed'))
    const note = connection.transport === 'ice-tcp' ? ': no real datagram transport on an ICE-TCP path, its datagrams ride the reliable stream' : ''
    o.log.debug(`packets on a datagram channel (at most ${datagram.maxMessageSize} bytes per datagram)${note}`)
  } catch (err) {
    o.log.debug(`no datagram channel (${(err as Error).message}): packets ride the control stream`)
  }

  // keepalive: a PING every keepaliveMs; nothing heard for 3 of them means the server or the path is gone
  let pings = 0
  const ping = Buffer.alloc(8)
  const keepalive = setInterval(() => {
    if (Date.now() - heardAt > 3 * o.keepaliveMs) {
      endedWith?.(`nothing from the server for ${Math.round((Date.now() - heardAt) / 1000)} s`)
      return
    }
    ping.writeDoubleBE(++pings)
    if (!control.destroyed && control.writable) control.write(encodePing(FrameType.PING, ping))
  }, o.keepaliveMs)
  keepalive.unref()
  let closing = false
  void ended.then(() => {
    clearInterval(keepalive)
    link.detach()
    datagram?.close()
    // a session that failed is torn down; one we close ends its channel cleanly (close() below)
    if (!closing && !control.destroyed) control.destroy()
  })

  const addresses: SessionAddresses = {
    client4: config.ipv4,
    server4: config.server4,
    client6: config.ipv6,
    server6: config.server6,
    routes4: config.routes4,
    routes6: config.routes6,
  }
  return {
    protocol: 'dvpn://v1',
    connection,
    addresses,
    serverMtu: config.mtu,
    masquerade: config.masquerade,
    token: config.token,
    link,
    ended,
    close: () => {
      closing = true
      link.detach()
      datagram?.close()
      control.end()
      endedWith?.('closed')
    },
  }
}
