export { ConnectionManager } from './connection-manager.js'
export type {
  ConnectionManagerOptions,
  ConnectDeviceOptions,
  PeerSpec,
  ChannelDecision,
  ConnectionInfo,
  ChannelInfo,
  TransportPolicy,
  ResponderStats,
} from './connection-manager.js'
export { TRANSPORT_POLICIES } from './transports.js'
export { encodeRequest, decodeRequest, newRequestId, TreatedIds, PEER_REQUEST_USER_TYPE } from './signalling.js'
export type { PeerConnectionRequest, RefusalCode } from './signalling.js'
