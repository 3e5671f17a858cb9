/**
 * LAN peer discovery in OpenDHT's format (peer_discovery.cpp): UDP multicast to 239.192.0.1 / ff08::101 port 8888.
 * Publish packet: msgpack map {"dht": [bin20 nodeId, port, netId]}; query packet: the msgpack string "q", which
 * publishers answer with their map. Published again every 10 s, doubling up to 60 s. Failures to open multicast
 * sockets are reported once and discovery stays off: they never stop the node.
 */
import dgram from 'node:dgram'
import { Unpackr } from 'msgpackr'
import { MsgWriter } from './msgpack-writer.js'
import { isHash } from './infohash.js'
import { checkMsgpack } from './msgpack-check.js'
import type { Logger } from '../util/log.js'

export const DISCOVERY_PORT = 8888
export const DISCOVERY_GROUP4 = '239.192.0.1'
export const DISCOVERY_GROUP6 = 'ff08::101'

export interface DiscoveryOptions {
  nodeId: Buffer
  network: number
  /** our DHT port per family (a family is published only when present) */
  port4?: number
  port6?: number
  /** multicast port (default 8888) */
  port?: number
  /** interface address to send multicast from (e.g. '127.0.0.1' to stay on this machine) */
  interface4?: string
  interface6?: string
  onPeer(id: Buffer, host: string, port: number, family: 4 | 6): void
  log?: Logger
}

const unpackr = new Unpackr({ int64AsType: 'bigint', mapsAsObjects: true, useRecords: false })

export function packPublish(nodeId: Buffer, port: number, network: number): Buffer {
  return new MsgWriter(64).map(1).str('dht').array(3).bin(nodeId).uint(port).uint(network).finish()
}

export const QUERY_PACKET = new MsgWriter(4).str('q').finish()

export function parseDiscoveryPacket(buf: Buffer): { query: true } | { id: Buffer; port: number; network: number } | undefined {
  try {
    if (!checkMsgpack(buf)) return undefined
    const o: unknown = unpackr.unpack(buf)
    if (o === 'q') return { query: true }
    if (typeof o !== 'object' || o === null || !Object.prototype.hasOwnProperty.call(o, 'dht')) return undefined
    const p = (o as Record<string, unknown>)['dht']
    if (!Array.isArray(p) || p.length < 3) return undefined
    const [id, port, net] = p as unknown[]
    if (!isHash(id)) return undefined
    if (typeof port !== 'number' || !Number.isInteger(port) || port <= 0 || port > 65535) return undefined
    if (typeof net !== 'number' || !Number.isInteger(net) || net < 0) return undefined
    return { id, port, network: net }
  } catch {
    return undefined
  }
}

export class PeerDiscovery {
  private socks: Array<{ sock: dgram.Socket; family: 4 | 6 }> = []
  private timer?: NodeJS.Timeout
  private period = 10_000
  private stopped = false

  constructor(private readonly o: DiscoveryOptions) {}

  async start(): Promise<void> {
    if (this.o.port4 !== undefined) await this.open(4)
    if (this.o.port6 !== undefined) await this.open(6)
    if (this.socks.length === 0) return
    this.publish()
    this.query()
    this.schedule()
  }

  get active(): boolean {
    return this.socks.length > 0
  }

  private async open(family: 4 | 6): Promise<void> {
    const sock = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', reuseAddr: true })
    sock.on('error', (err) => this.o.log?.('warn', `discovery socket (IPv${family}) error: ${err.message}`))
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject)
        sock.bind(this.o.port ?? DISCOVERY_PORT, () => {
          sock.off('error', reject)
          resolve()
        })
      })
      const group = family === 4 ? DISCOVERY_GROUP4 : DISCOVERY_GROUP6
      const iface = family === 4 ? this.o.interface4 : this.o.interface6
      sock.addMembership(group, iface)
      sock.setMulticastLoopback(true)
      if (iface) sock.setMulticastInterface(iface)
      sock.setMulticastTTL(1)
      sock.on('message', (buf, rinfo) => this.onMessage(buf, rinfo.address, family))
      this.socks.push({ sock, family })
    } catch (err) {
      this.o.log?.('warn', `LAN discovery unavailable over IPv${family}: ${(err as Error).message}`)
      try {
        sock.close()
      } catch {
        /* already closed */
      }
    }
  }

  private onMessage(buf: Buffer, host: string, family: 4 | 6): void {
    if (this.stopped || buf.length > 1024) return
    const p = parseDiscoveryPacket(buf)
    if (!p) return
    if ('query' in p) {
      this.publish(family)
      return
    }
    if (p.id.equals(this.o.nodeId) || p.network !== this.o.network) return
    this.o.onPeer(p.id, host, p.port, family)
  }

  private send(family: 4 | 6, buf: Buffer): void {
    for (const s of this.socks) {
      if (s.family !== family) continue
      const group = family === 4 ? DISCOVERY_GROUP4 : DISCOVERY_GROUP6
      s.sock.send(buf, this.o.port ?? DISCOVERY_PORT, group, (err) => {
        if (err) this.o.log?.('warn', `discovery send (IPv${family}) failed: ${err.message}`)
      })
    }
  }

  publish(only?: 4 | 6): void {
    if (this.stopped) return
    if (this.o.port4 !== undefined && only !== 6) this.send(4, packPublish(this.o.nodeId, this.o.port4, this.o.network))
    if (this.o.port6 !== undefined && only !== 4) this.send(6, packPublish(this.o.nodeId, this.o.port6, this.o.network))
  }

  query(): void {
    if (this.stopped) return
    this.send(4, QUERY_PACKET)
    this.send(6, QUERY_PACKET)
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.publish()
      this.period = Math.min(this.period * 2, 60_000)
      this.schedule()
    }, this.period)
  }

  /** Connectivity lost: publish and query again soon. */
  reset(): void {
    if (this.stopped || this.socks.length === 0) return
    this.period = 10_000
    clearTimeout(this.timer)
    this.publish()
    this.query()
    this.schedule()
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await Promise.all(
      this.socks.map(
        ({ sock }) =>
          new Promise<void>((resolve) => {
            try {
              sock.close(() => resolve())
            } catch {
              resolve()
            }
          }),
      ),
    )
    this.socks = []
  }
}
