export { Multiplexer } from './native/multiplexer.js'
export type {
  MultiplexerOptions,
  OpenChannelOptions,
  ChannelInfo,
  ChannelKind,
  ChannelRequestDecision,
  MultiplexerStats,
  MuxLogger,
} from './native/multiplexer.js'
export { ChannelSocket } from './native/channel-socket.js'
export { DatagramChannel } from './native/datagram-channel.js'
export { MAX_CHANNEL_NAME_BYTES, MUX_PROTOCOL_VERSION } from './native/frames.js'
export type { Mux, MuxProtocol, MuxCapabilities, StreamChannel, MessageStreamChannel } from './mux.js'
export { isStreamChannel, supportsMessageMode, NATIVE_CAPABILITIES } from './mux.js'
export { StreamMessageTransport } from './native/stream-transport.js'
export type { StreamMessageTransportOptions } from './native/stream-transport.js'
export { DhtnetMux, DhtnetChannel, DHTNET_CAPABILITIES } from './dhtnet/index.js'
export type { DhtnetMuxOptions, DhtnetMuxStats } from './dhtnet/index.js'
