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
 * The responder's receive windows on a path relayed by a TURN server over TCP (link.path.relay === 'tcp').
 *
 * coturn (4.6.1 in Debian, the same code in 4.17.1) stops relaying one direction for good when both of its output
 * buffers for the relayed connection hold about 128 KiB at once: it stops reading a side while the other side's output
 * buffer + 65,507 bytes reaches 192 KiB, and the write callback that should start reading again tests the wrong buffer
 * (transport/turn/README.md). So if ONE direction never has 128 KiB in flight, neither can stall. The responder's
 * windows bound the requester → responder direction to 120 KiB in flight (TLS and framing add < 0.3 %, well under
 * 131,101 bytes); the other direction keeps the default window and its speed. Measured on loopback
 * (scripts/bench/nat/relay-window, 4 MiB both ways at once, one side 300 ms late): default windows stalled 13 of 20
 * runs, these 0 of 20 (and 120 KiB on both sides 0 of 20, at half the speed the other way). The cost: requester →
 * responder is bounded by 120 KiB per round trip (2.4 MB/s at 50 ms). transport/turn/README.md has the details.
 */
export const RELAYED_TCP_WINDOW_BYTES = 120 * 1024

/**
 * Receive window per channel on a direct byte-stream link (ICE-TCP): at several hundred MB/s, the default 1 MiB
 * drains before the WINDOW frame comes back through both event loops (measured over loopback TLS: 520–700 MB/s with
 * 1 MiB, ~700 steady with 4 MiB, scripts/bench/mux-stream). The connection window (16 MiB) still bounds the total.
 */
const STREAM_CHANNEL_WINDOW_BYTES = 4 * 1024 * 1024

/**
 * On a byte-stream link, once a second channel is open, the multiplexer keeps at most this much in the TLS socket
 * (the socket's 'drain' comes when it empties): a small message then waits behind ~64 KiB of another channel's bulk.
 * scripts/bench/dsh, keystroke beside a bulk session on one ICE-TCP connection: median 3.4 → 0.5–0.6 ms, p99
 * 25 → 13–17.5 ms, bulk ~320 → ~250 MB/s. Not on WebRTC: its 'drain' comes only below bufferedAmountLowThreshold.
 */
const STREAM_SHARED_SEND_HIGH_WATER_BYTES = 64 * 1024

/** The multiplexer's receive windows for a link (see the constants above). */
function windowsFor(link: Link, initiator: boolean): { connectionWindowBytes?: number; channelWindowBytes?: number; sharedSendHighWaterBytes?: number } {
  if (!link.stream) return {} // a WebRTC link: the defaults
  const shared = { sharedSendHighWaterBytes: STREAM_SHARED_SEND_HIGH_WATER_BYTES }
  if (link.path.relay !== 'tcp') return { ...shared, channelWindowBytes: STREAM_CHANNEL_WINDOW_BYTES }
  return initiator ? shared : { ...shared, connectionWindowBytes: RELAYED_TCP_WINDOW_BYTES, channelWindowBytes: RELAYED_TCP_WINDOW_BYTES }
}

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
    ...windowsFor(link, initiator),
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
