/**
 * The multiplexer that runs on a link: ours between two of our peers (over message links as they are, over byte
 * streams with length framing), DHTNet's MultiplexedSocket with a C++ DHTNet peer.
 */
import type { X509Certificate } from 'node:crypto'
import { DhtnetError } from '../errors.js'
import type { Mux } from '../mux/mux.js'
import { Multiplexer } from '../mux/native/multiplexer.js'
import { DhtnetMux } from '../mux/dhtnet/dhtnet-mux.js'
import { StreamMessageTransport } from '../mux/native/stream-transport.js'
import type { MessageTransport, Link } from '../transport/transport.js'
import type { ManagerContext } from './context.js'

/** Our multiplexer's send high-water mark on a link's reliable transport. */
const NATIVE_SEND_HIGH_WATER = 1024 * 1024

/**
 * Receive windows on a path relayed by a TURN server over TCP (link.path.relay === 'tcp'). coturn (4.6.1 in Debian,
 * unchanged in 4.17) stops relaying one direction for good when both of its output buffers hold ≥ 192 KiB at once
 * (transport/turn/README.md); with at most 160 KiB in flight per direction (what our window lets the peer send before
 * we read it, plus < 1% of framing) its buffers never get there. Measured on loopback (scripts/bench/nat/relay-window.ts):
 * default windows stalled 2 of 6 runs of 4 MiB both ways with one side late, 160 KiB none, at the same one-way speed;
 * the cost is a ceiling of 160 KiB per round trip on long relayed paths (3.2 MB/s at 50 ms).
 */
export const RELAYED_TCP_WINDOW_BYTES = 160 * 1024

/** The link's reliable message transport; a byte-stream link gets length framing (StreamMessageTransport). */
function reliableOf(link: Link): MessageTransport {
  if (link.reliable) return link.reliable
  if (link.stream) return new StreamMessageTransport(link.stream)
  throw new DhtnetError('INTERNAL_ERROR', `the ${link.transport} link has neither a message transport nor a stream`)
}

/** Our multiplexer on a link. `awaitPeerHello`: the requester's side of a race (transports.ts). */
export function nativeMux(ctx: ManagerContext, link: Link, peerCert: X509Certificate, initiator: boolean, awaitPeerHello: boolean): Multiplexer {
  return new Multiplexer({
    reliable: reliableOf(link),
    ...(link.datagram ? { datagram: link.datagram } : {}),
    initiator,
    awaitPeerHello,
    ...(ctx.keepaliveIntervalMs !== undefined ? { keepaliveIntervalMs: ctx.keepaliveIntervalMs } : {}),
    ...(ctx.deadPeerTimeoutMs !== undefined ? { deadPeerTimeoutMs: ctx.deadPeerTimeoutMs } : {}),
    sendHighWaterBytes: NATIVE_SEND_HIGH_WATER,
    ...(link.path.relay === 'tcp' ? { connectionWindowBytes: RELAYED_TCP_WINDOW_BYTES, channelWindowBytes: RELAYED_TCP_WINDOW_BYTES } : {}),
    onChannelRequest: (name) => ctx.decideChannel(peerCert, name),
    logger: ctx.log,
  })
}

/** DHTNet's MultiplexedSocket on an ICE-TCP link, for a C++ DHTNet peer. */
export function dhtnetMux(ctx: ManagerContext, link: Link, peerCert: X509Certificate, initiator: boolean): Mux {
  if (!link.stream) throw new DhtnetError('UNSUPPORTED_TRANSPORT', `DHTNet's multiplexer needs a byte stream; the ${link.transport} link carries messages`)
  return new DhtnetMux({
    stream: link.stream,
    initiator,
    onChannelRequest: (name) => ctx.decideChannel(peerCert, name),
    logger: ctx.log,
  })
}
