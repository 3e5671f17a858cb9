/**
 * DHTNet's dvpn session over a `dvpn://` channel of a DHTNet multiplexer (message mode: one frame = one message), both
 * ends: the server writes the metadata map first, then both sides exchange one IP packet per message. Kept apart from
 * the TUN and the network configuration so that it runs against the captured C++ bytes in tests.
 */
import type { MessageStreamChannel, StreamChannel } from '@dhtnet/core'
import { supportsMessageMode } from '@dhtnet/core'
import { addressesFrom, encodeMetadata, metadataFor, MetadataReader, type DhtnetMetadata, type TunnelAddresses } from './dhtnet-protocol.js'
import { DhtnetLink, type PacketSink } from './links.js'

export class DhtnetSessionError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'DhtnetSessionError'
  }
}

function messageChannel(channel: StreamChannel): MessageStreamChannel {
  if (!supportsMessageMode(channel)) {
    throw new DhtnetSessionError("dvpn:// needs a DHTNet channel (one packet per message); this multiplexer's channels coalesce writes")
  }
  return channel.setMessageMode()
}

/** Server side: the metadata map for `addresses`, then packets; returns the link (its deliveries go to `sink`). */
export function startDhtnetServerSession(channel: StreamChannel, addresses: TunnelAddresses, sink: PacketSink): DhtnetLink {
  const ch = messageChannel(channel)
  const link = new DhtnetLink(ch, sink)
  ch.on('message', (m: Buffer) => link.deliver(m))
  ch.resume() // the readable side only carries the end
  ch.write(encodeMetadata(metadataFor(addresses)))
  return link
}

export interface DhtnetClientSession {
  readonly metadata: DhtnetMetadata
  /** What each end puts on its interface (the metadata's IPv6 fields swapped, as the C++ peers do). */
  readonly addresses: TunnelAddresses
  readonly link: DhtnetLink
}

/**
 * Client side: wait (bounded) for the server's metadata map, then packets. Packets that arrive before `sink` is
 * ready are the caller's to hold: `link.deliver` is called from the first message after the map.
 */
export function startDhtnetClientSession(channel: StreamChannel, sink: PacketSink, timeoutMs: number): Promise<DhtnetClientSession> {
  const ch = messageChannel(channel)
  return new Promise((resolve, reject) => {
    const reader = new MetadataReader()
    let session: DhtnetClientSession | undefined
    const fail = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const onMessage = (m: Buffer): void => {
      if (session) return session.link.deliver(m)
      let metadata: DhtnetMetadata | undefined
      try {
        metadata = reader.push(m)
      } catch (err) {
        return fail(new DhtnetSessionError(`the server's metadata is malformed: ${(err as Error).message}`))
      }
      if (!metadata) return
      clearTimeout(timer)
      ch.off('end', onEnd)
      ch.off('close', onEnd)
      ch.off('error', onError)
      session = { metadata, addresses: addressesFrom(metadata), link: new DhtnetLink(ch, sink) }
      resolve(session)
    }
    const onEnd = (): void => fail(new DhtnetSessionError('the server closed the dvpn:// channel before sending its metadata'))
    const onError = (err: Error): void => fail(new DhtnetSessionError(`the dvpn:// channel failed before the metadata: ${err.message}`))
    const cleanup = (): void => {
      clearTimeout(timer)
      ch.off('message', onMessage)
      ch.off('end', onEnd)
      ch.off('close', onEnd)
      ch.off('error', onError)
    }
    const timer = setTimeout(() => fail(new DhtnetSessionError(`no metadata from the server within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs)
    ch.on('message', onMessage)
    ch.on('end', onEnd)
    ch.on('close', onEnd)
    ch.on('error', onError)
    ch.resume()
  })
}
