export { DhtnetMux } from './dhtnet-mux.js'
export type { DhtnetMuxOptions, DhtnetMuxStats } from './dhtnet-mux.js'
export { DhtnetChannel, DHTNET_CAPABILITIES } from './channel.js'
export { MULTIPLEXED_SOCKET_VERSION } from './wire.js'
