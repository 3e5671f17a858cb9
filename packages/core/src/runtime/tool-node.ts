/**
 * The running node of a command-line tool (dnc, dsh, dvpn), as a small API: connect to a peer within one deadline,
 * serve channels with a decision per channel, a flush barrier, the peer's protocol flavour, a clean stop.
 * `startToolNode` builds it on `startToolRuntime` with the defaults of a client or a server role.
 *
 * Retries: the ConnectionManager retries a transient transport failure once, inside the caller's deadline; a tool
 * never adds its own retry loop.
 */
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { X509Certificate } from 'node:crypto'
import { DhtnetError } from '../errors.js'
import { publicKeyIds } from '../identity/ids.js'
import { isStreamChannel, type ChannelRequestDecision, type StreamChannel } from '../mux/mux.js'
import type { DatagramChannel } from '../mux/native/datagram-channel.js'
import type { ConnectionInfo, TransportPolicy } from '../connection/connection-manager.js'
import type { Logger } from '../util/log.js'
import { defaultCacheDir, loadToolIdentity, startToolRuntime, type ToolRuntime, type ToolRuntimeOptions, type TurnServerOptions } from './start.js'

/**
 * Name of the barrier channel of `sync`: requested after our last bytes on the same ordered connection and declined
 * by the peer's runtime without a log line. (Its name comes from the first tool that used it, kept so that the
 * servers already deployed decline it silently too.)
 */
export const SYNC_CHANNEL = 'dnc-sync:'

/**
 * What a peer's software speaks on a live connection: 'native' (ours: half-close, reset reasons, per-channel flow
 * control) or 'dhtnet' (a C++ DHTNet device: its MultiplexedSocket; tools then use DHTNet's own channel protocols).
 */
export type PeerFlavour = 'native' | 'dhtnet'

export interface PeerInfo {
  /** 40-hex id of the peer's device certificate. */
  readonly id: string
  /** 64-hex long id. */
  readonly longId: string
  readonly certificate?: X509Certificate
}

export interface ServeHandlers {
  /** A peer asks for a channel: accept (true), decline (false), or decline with a reason the peer can read. */
  decide(peer: PeerInfo, name: string): ChannelRequestDecision | Promise<ChannelRequestDecision>
  /** An accepted channel is open (incoming only). */
  onChannel(peer: PeerInfo, name: string, channel: StreamChannel): void
  /**
   * An accepted incoming datagram channel (unordered, unreliable: a VPN's packets). Without this handler datagram
   * channels are closed as soon as they open (decide them false to decline them instead).
   */
  onDatagramChannel?(peer: PeerInfo, name: string, channel: DatagramChannel): void
}

export interface ConnectOptions {
  /** Bound of this call; default: what is left of the node's connect deadline (`connectTimeoutMs` from start). */
  readonly timeoutMs?: number
  readonly signal?: AbortSignal
}

export interface ToolNode {
  /** 40-hex and 64-hex ids of our identity. */
  readonly id: string
  readonly longId: string
  /** When the identity was ready (performance.now()): a client's deadline counts from there, not key generation. */
  readonly identityReadyAt: number
  /** The runtime under it (DHT, trust store, connection manager), for what this API does not cover. */
  readonly runtime: ToolRuntime
  /**
   * A channel `name` to a device (40- or 64-hex id). The peer was named explicitly, so it is trusted whatever CA
   * signed it. Rejects with a DhtnetError whose code names the step (see describeFailure).
   */
  connect(peer: string, name: string, options?: ConnectOptions): Promise<StreamChannel>
  /**
   * A datagram channel `name` to a device (unordered, unreliable; `send()` never blocks). On a path without a datagram
   * transport (ICE-TCP) its datagrams ride the reliable stream; a multiplexer without datagram channels (a C++ DHTNet
   * peer) rejects with UNSUPPORTED_TRANSPORT. Same trust, deadline and errors as `connect`.
   */
  connectDatagram(peer: string, name: string, options?: ConnectOptions): Promise<DatagramChannel>
  /**
   * The live connection to a device, shared or new, without opening a channel (same trust, deadline and errors as
   * `connect`): what it is before a tool picks its first channel (`mux: 'dhtnet'` is a C++ DHTNet device), and how
   * it is reached (`transport`, `path`).
   */
  connectPeer(peer: string, options?: ConnectOptions): Promise<ConnectionInfo>
  /** Server side: decide on channels peers open, and receive the accepted ones. Replaces earlier handlers. */
  serve(handlers: ServeHandlers): void
  /**
   * Resolves once the peer has received everything sent to it so far on the live connection: a channel request
   * named SYNC_CHANNEL goes after our bytes on the same ordered connection, and its answer comes back after the peer
   * read them. Used before exiting, so stopping cannot cut the last bytes or the EOF. Never rejects; returns at once
   * for a DHTNet peer (its tools would act on any channel name).
   */
  sync(peer: string): Promise<void>
  /** The flavour of the live connection to `peer`, or undefined when there is none. */
  peerFlavour(peer: string): PeerFlavour | undefined
  /** Stop everything (channels, connections, DHT); bounded in time by the runtime. Idempotent. */
  stop(): Promise<void>
}

export interface ToolNodeOptions {
  /** The tool's name: names its persisted DHT state (<cache>/<tool>/dht-state) for a server. */
  readonly tool: string
  /**
   * 'client': connects out only (a short-lived DHT client; fails within its deadline when no bootstrap answers; its
   * connection manager runs clientOnly: it handles answers to its own requests and accepts no incoming connection).
   * 'server': accepts connections (persistent DHT node id, keeps trying to join the DHT in the background).
   */
  readonly role: 'client' | 'server'
  readonly identityFiles?: { readonly certificate: string; readonly privateKey: string }
  readonly identityDir?: string
  readonly bootstrap: readonly string[]
  readonly discovery?: boolean
  readonly bindAddress?: string
  readonly turn?: TurnServerOptions
  readonly upnp?: boolean
  /** Which transports connections may use (default 'auto': both, racing). */
  readonly transport?: TransportPolicy
  /** Server: accept peers whose chain ends at any CA (default false: only our CA and `allowedPeers`). */
  readonly anonymous?: boolean
  /** Server: devices accepted whatever their CA (40- or 64-hex ids). */
  readonly allowedPeers?: readonly string[]
  /** Client: the one deadline (from identity ready) for joining the DHT and connecting (default 30 s). */
  readonly connectTimeoutMs?: number
  readonly log?: Logger
  /** Where to say that a default identity was created. */
  readonly identityLog?: (line: string) => void
  readonly signal?: AbortSignal
  /**
   * How to tell a peer's flavour from its live connection. Default: the connection's `mux` protocol ('dhtnet' for
   * DHTNet's MultiplexedSocket). Tests may pass their own.
   */
  readonly flavourOf?: (connection: ConnectionInfo) => PeerFlavour
}

const DEFAULT_CONNECT_TIMEOUT_MS = 30_000
/** A guard in case the library overran its own deadline: a tool never waits longer than asked plus this. */
const OVERRUN_GRACE_MS = 1000

/** The default flavour rule: the connection's multiplexer protocol, when the connection layer reports it. */
export function defaultFlavourOf(connection: ConnectionInfo): PeerFlavour {
  return (connection as { mux?: string }).mux === 'dhtnet' ? 'dhtnet' : 'native'
}

export async function startToolNode(options: ToolNodeOptions): Promise<ToolNode> {
  const server = options.role === 'server'
  const log: Logger = options.log ?? (() => {})
  // first the identity: it may be created now (an RSA-4096 key generation) and the deadline must not count that
  const identity = await loadToolIdentity({
    ...(options.identityFiles ? { identityFiles: options.identityFiles } : {}),
    ...(options.identityDir ? { identityDir: options.identityDir } : {}),
    ...(options.identityLog ? { identityLog: options.identityLog } : {}),
    log,
    ...(options.signal ? { signal: options.signal } : {}),
  })
  const identityReadyAt = performance.now()
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
  const deadlineAt = identityReadyAt + connectTimeoutMs
  const runtimeOptions: ToolRuntimeOptions = {
    identity,
    bootstrap: options.bootstrap,
    ...(options.discovery !== undefined ? { discovery: options.discovery } : {}),
    ...(options.bindAddress ? { bindAddress: options.bindAddress } : {}),
    ...(options.turn ? { turn: options.turn } : {}),
    upnp: options.upnp ?? false,
    ...(options.transport ? { transport: options.transport } : {}),
    // a client trusts the one peer it names (connect); a server decides by CA, anonymous mode and allowed peers
    anonymous: server ? options.anonymous === true : true,
    ...(server && options.allowedPeers ? { allowedPeers: options.allowedPeers } : {}),
    dhtClient: !server,
    ...(server ? { persistPath: join(defaultCacheDir(), options.tool, 'dht-state') } : {}),
    // a client cannot do anything without the DHT: fail within its deadline; a server keeps trying
    requireBootstrap: !server,
    bootstrapTimeoutMs: server ? 10_000 : Math.max(1000, Math.min(connectTimeoutMs, 10_000)),
    publishTimeoutMs: server ? 10_000 : 3_000,
    clientOnly: !server,
    log,
    ...(options.signal ? { signal: options.signal } : {}),
  }
  const runtime = await startToolRuntime(runtimeOptions)
  const connections = runtime.connections
  const flavourOf = options.flavourOf ?? defaultFlavourOf

  const peerFlavour = (peer: string): PeerFlavour | undefined => {
    let list: ConnectionInfo[]
    try {
      list = connections.connections(peer)
    } catch {
      return undefined // not a peer id: no connection either
    }
    if (list.length === 0) return undefined
    return list.some((c) => flavourOf(c) === 'dhtnet') ? 'dhtnet' : 'native'
  }

  /** One connect operation of the library within the caller's deadline, guarded against an overrun. */
  const withinDeadline = async <T>(peer: string, opts: ConnectOptions, start: (timeoutMs: number, signal: AbortSignal | undefined) => Promise<T>): Promise<T> => {
    const timeoutMs = opts.timeoutMs ?? Math.max(1000, deadlineAt - performance.now())
    runtime.trust.allow(peer)
    let guard: NodeJS.Timeout | undefined
    const overrun = new Promise<never>((_, reject) => {
      guard = setTimeout(
        () =>
          reject(
            new DhtnetError('TIMEOUT', `no connection to ${peer} after ${Math.round(timeoutMs / 100) / 10} s`, {
              hint: 'is the peer running, and do both sides use the same bootstrap (-b)?',
            }),
          ),
        timeoutMs + OVERRUN_GRACE_MS,
      )
      guard.unref()
    })
    try {
      const open = start(timeoutMs, opts.signal)
      open.catch(() => {}) // settled by the race below, or late after an overrun
      return await Promise.race([open, overrun])
    } finally {
      clearTimeout(guard)
    }
  }

  const connect = async (peer: string, name: string, opts: ConnectOptions = {}): Promise<StreamChannel> => {
    const channel: unknown = await withinDeadline(peer, opts, (timeoutMs, signal) => connections.connectDevice(peer, name, { timeoutMs, ...(signal ? { signal } : {}) }))
    if (!isStreamChannel(channel)) throw new DhtnetError('INTERNAL_ERROR', `channel "${name}" is not a stream channel`)
    return channel
  }

  const connectDatagram = (peer: string, name: string, opts: ConnectOptions = {}): Promise<DatagramChannel> =>
    withinDeadline(peer, opts, (timeoutMs, signal) => connections.connectDevice(peer, name, { datagram: true, timeoutMs, ...(signal ? { signal } : {}) }))

  const connectPeer = (peer: string, opts: ConnectOptions = {}): Promise<ConnectionInfo> =>
    withinDeadline(peer, opts, (timeoutMs, signal) => connections.connect(peer, { timeoutMs, ...(signal ? { signal } : {}) }))

  const sync = async (peer: string): Promise<void> => {
    if (peerFlavour(peer) !== 'native') return
    try {
      const ch = await connections.connectDevice(peer, SYNC_CHANNEL, { noNewSocket: true, timeoutMs: 3000 })
      ch.destroy() // a peer that accepted it: the answer was the barrier anyway
    } catch {
      // declined (the expected answer), or no live connection any more: nothing left to wait for
    }
  }

  const serve = (handlers: ServeHandlers): void => {
    // the ready hook gets the long id; remember the certificate seen at request time to describe the peer
    const peers = new Map<string, PeerInfo>()
    connections.onChannelRequest((cert, name) => {
      if (name === SYNC_CHANNEL) return { accept: false, reason: 'sync' }
      const ids = publicKeyIds(cert)
      const info: PeerInfo = { id: ids.id, longId: ids.longId, certificate: cert }
      peers.delete(ids.longId)
      peers.set(ids.longId, info)
      if (peers.size > 4096) peers.delete(peers.keys().next().value!)
      return handlers.decide(info, name)
    })
    connections.onConnectionReady((peerId, name, channel) => {
      // incoming channels only: the ones we open are the caller's business
      if (channel.initiator) return
      const peer = peers.get(peerId) ?? { id: peerId, longId: peerId }
      if (isStreamChannel(channel)) handlers.onChannel(peer, name, channel)
      else if (handlers.onDatagramChannel) handlers.onDatagramChannel(peer, name, channel)
      else channel.close() // datagram channels the tool does not serve
    })
  }

  return {
    id: runtime.identity.id,
    longId: runtime.identity.longId,
    identityReadyAt,
    runtime,
    connect,
    connectDatagram,
    connectPeer,
    serve,
    sync,
    peerFlavour,
    stop: () => runtime.stop(),
  }
}
