/**
 * What dnc needs from a running node (DHT + ConnectionManager), kept small so client and server do not depend on
 * how the runtime is assembled. `startDncNode` (node.ts) provides it from @dhtnet/core's runtime.
 */
import type { Duplex } from 'node:stream'
import type { X509Certificate } from 'node:crypto'

/** Name of the barrier channel of `sync`; the server declines it without logging. */
export const SYNC_CHANNEL = 'dnc-sync:'

export type ChannelDecision = boolean | { accept: false; reason: string }

export interface DncNode {
  /** 40-hex and 64-hex ids of our identity. */
  readonly id: string
  readonly longId: string
  /** Open a channel `name` to a device (by 40- or 64-hex id). Rejects with a typed DhtnetError. */
  connect(peer: string, name: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<Duplex>
  /** Server side: decide on channels peers open, and receive the accepted ones. */
  serve(handlers: {
    onChannelRequest(peer: PeerInfo, name: string): ChannelDecision | Promise<ChannelDecision>
    onChannel(peer: PeerInfo, name: string, channel: Duplex): void
  }): void
  /**
   * Resolves once the peer has received everything sent to it so far on the live connection: a channel request
   * named SYNC_CHANNEL is sent after our bytes on the same ordered connection, and its answer comes back after the
   * peer read them. Used before exiting, so that stopping the process cannot cut the last bytes or the EOF.
   * Never rejects.
   */
  sync(peer: string): Promise<void>
  /** Stop everything (channels, connections, DHT); bounded in time. */
  stop(): Promise<void>
}

export interface PeerInfo {
  /** 40-hex id of the peer's device certificate. */
  readonly id: string
  readonly certificate?: X509Certificate
}
