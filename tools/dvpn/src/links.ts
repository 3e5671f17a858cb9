/**
 * Where a session's packets travel, one of three ways, behind one small interface (`PacketLink`):
 *
 * - `DatagramLink`: our datagram channel (unordered, unreliable: no TCP inside TCP). Packets of one TUN wake-up
 *   are grouped into datagrams of at most `maxDatagramBytes` (packets.ts: whole IP packets back to back).
 * - `StreamLink`: our control stream channel, one PACKET frame per packet (the fallback when no datagram channel
 *   could be opened).
 * - `DhtnetLink`: DHTNet's `dvpn://` channel, one packet per message (each write is one frame; received frames come
 *   whole through the channel's message mode).
 *
 * Sending never blocks and never queues without bound: a datagram the transport refuses is dropped; on the stream
 * links, packets are dropped while more than `maxQueuedBytes` wait in the channel (a VPN drops rather than delays:
 * TCP inside the tunnel recovers). Everything is counted.
 */
import type { DatagramChannel, MessageStreamChannel, StreamChannel } from '@dhtnet/core'
import { batchPackets, splitPackets } from './packets.js'
import { packetHeader } from './protocol.js'

export type LinkKind = 'datagram' | 'stream' | 'dhtnet'

export interface LinkStats {
  packetsIn: number
  bytesIn: number
  packetsOut: number
  bytesOut: number
  /** Packets dropped on the way out: transport congested, or larger than a datagram. */
  drops: number
  /** Bytes received that were not whole IP packets. */
  malformed: number
}

export interface PacketLink {
  readonly kind: LinkKind
  readonly stats: LinkStats
  /** The largest packet this link carries. */
  readonly maxPacket: number
  /** Send packets (a TUN wake-up's worth, or less). Never blocks. */
  send(packets: readonly Buffer[]): void
  /** Stop delivering and sending; does not close the channel (its owner does). */
  detach(): void
}

export type PacketSink = (packets: Buffer[]) => void

function newStats(): LinkStats {
  return { packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0, drops: 0, malformed: 0 }
}

/** Default most bytes waiting in a stream channel before packets are dropped. */
export const DEFAULT_MAX_QUEUED_BYTES = 1 << 20

export class DatagramLink implements PacketLink {
  readonly kind = 'datagram'
  readonly stats = newStats()
  readonly maxPacket: number
  private readonly maxDatagram: number
  private attached = true
  private readonly received: Buffer[] = []

  constructor(
    private readonly channel: DatagramChannel,
    private readonly sink: PacketSink,
    options: { maxDatagramBytes?: number } = {},
  ) {
    this.maxPacket = Math.min(channel.maxMessageSize, 65535)
    this.maxDatagram = Math.max(this.maxPacket, Math.min(options.maxDatagramBytes ?? this.maxPacket, channel.maxMessageSize))
    channel.on('message', this.onMessage)
  }

  private readonly onMessage = (datagram: Buffer): void => {
    if (!this.attached) return
    const out = this.received
    out.length = 0
    this.stats.malformed += splitPackets(datagram, out)
    if (out.length === 0) return
    this.stats.packetsIn += out.length
    this.stats.bytesIn += datagram.length
    this.sink(out.slice())
  }

  send(packets: readonly Buffer[]): void {
    if (!this.attached || this.channel.closed) {
      this.stats.drops += packets.length
      return
    }
    const { tooLarge } = batchPackets(packets, this.maxDatagram, (datagram, count) => {
      if (this.channel.send(datagram)) {
        this.stats.packetsOut += count
        this.stats.bytesOut += datagram.length
      } else {
        this.stats.drops += count // a congested transport: dropped, never queued
      }
    })
    this.stats.drops += tooLarge
  }

  detach(): void {
    this.attached = false
    this.channel.off('message', this.onMessage)
  }
}

/**
 * Packets as PACKET frames on our control stream channel. Receiving is the session's frame decoder's job: it calls
 * `deliver` for each PACKET frame.
 */
export class StreamLink implements PacketLink {
  readonly kind = 'stream'
  readonly stats = newStats()
  readonly maxPacket = 65535
  private attached = true

  constructor(
    private readonly channel: StreamChannel,
    private readonly sink: PacketSink,
    private readonly maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES,
  ) {}

  send(packets: readonly Buffer[]): void {
    const ch = this.channel
    if (!this.attached || ch.destroyed || ch.writableEnded) {
      this.stats.drops += packets.length
      return
    }
    for (const p of packets) {
      if (ch.writableLength > this.maxQueuedBytes) {
        this.stats.drops++
        continue
      }
      // header then the packet itself: writes of one tick leave together (writev), without a copy here
      ch.write(packetHeader(p.length))
      ch.write(p)
      this.stats.packetsOut++
      this.stats.bytesOut += p.length
    }
  }

  deliver(packet: Buffer): void {
    if (!this.attached) return
    this.stats.packetsIn++
    this.stats.bytesIn += packet.length
    this.sink([packet])
  }

  detach(): void {
    this.attached = false
  }
}

/** DHTNet's dvpn: one IP packet per channel message, both ways. */
export class DhtnetLink implements PacketLink {
  readonly kind = 'dhtnet'
  readonly stats = newStats()
  readonly maxPacket = 65535
  private attached = true

  constructor(
    private readonly channel: MessageStreamChannel,
    private readonly sink: PacketSink,
    private readonly maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES,
  ) {}

  /** A message from the peer after the metadata: one packet. */
  deliver(message: Buffer): void {
    if (!this.attached) return
    this.stats.packetsIn++
    this.stats.bytesIn += message.length
    this.sink([message])
  }

  send(packets: readonly Buffer[]): void {
    const ch = this.channel
    if (!this.attached || ch.destroyed || ch.writableEnded) {
      this.stats.drops += packets.length
      return
    }
    for (const p of packets) {
      if (ch.writableLength > this.maxQueuedBytes || p.length === 0) {
        this.stats.drops++
        continue
      }
      ch.write(p) // one write = one frame = one packet for the C++ peer
      this.stats.packetsOut++
      this.stats.bytesOut += p.length
    }
  }

  detach(): void {
    this.attached = false
  }
}
