export { Multiplexer } from './multiplexer.js'
export type {
  MultiplexerOptions,
  OpenChannelOptions,
  ChannelInfo,
  ChannelKind,
  ChannelRequestDecision,
  MultiplexerStats,
  MuxLogger,
} from './multiplexer.js'
export { ChannelSocket } from './channel-socket.js'
export { DatagramChannel } from './datagram-channel.js'
export { MAX_CHANNEL_NAME_BYTES, MUX_PROTOCOL_VERSION } from './frames.js'
