export * from './value.js'
export * from './crypto.js'
export * from './secure-dht.js'
export { DhtNode, DEFAULT_PORT } from './node.js'
export type {
  DhtNodeOptions, GetOptions, PutOptions, ListenOptions, ListenCallback, ListenHandle, DhtStats, RoutingEntry,
} from './node.js'
export { infoHash, randomHash, xorCmp, commonBits, HASH_LEN } from './infohash.js'
export { Field as QueryField } from './wire.js'
export type { Query, FieldFilter } from './wire.js'
export type { StorageLimits } from './storage.js'
export type { RateLimitOptions } from './rate-limiter.js'
export type { ListenCacheLimits } from './local-listens.js'
export type { DecryptLimits } from './decrypt-queue.js'
