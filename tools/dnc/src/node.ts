/**
 * Starts the node dnc runs on (identity, DHT, ConnectionManager) from its options, through the tools' shared
 * runtime in @dhtnet/core, and adapts it to the small DncNode interface the client and server use.
 */
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { publicKeyIds, ChannelSocket } from '@dhtnet/core'
import { defaultCacheDir, loadToolIdentity, startToolRuntime } from '@dhtnet/core'
import type { Log } from './log.js'
import type { DncOptions } from './options/resolve.js'
import { SYNC_CHANNEL, type DncNode } from './peer.js'

export interface StartedDncNode extends DncNode {
  /** When the identity was ready (performance.now()): the client's --timeout counts from there, not key generation. */
  readonly identityReadyAt: number
}

export async function startDncNode(options: DncOptions, log: Log, signal: AbortSignal, timeoutMs?: number): Promise<StartedDncNode> {
  const server = options.mode === 'server'
  // first: the identity (it may be created now, an RSA-4096 key generation that the timeout should not count)
  const identity = await loadToolIdentity({
    ...(options.identityFiles ? { identityFiles: options.identityFiles } : {}),
    identityLog: (line) => log.info(line),
    signal,
  })
  const identityReadyAt = performance.now()
  if (options.bootstrap.length === 0) {
    log.warn('no bootstrap node (-b none or `bootstrap: []`): only devices found on the local network can be reached')
  }
  const runtime = await startToolRuntime({
    identity,
    bootstrap: options.bootstrap,
    discovery: options.discovery,
    ...(options.bindAddress ? { bindAddress: options.bindAddress } : {}),
    ...(options.turn ? { turn: options.turn } : {}),
    // enable_upnp / --no-upnp: map a UDP port per connection on the home router (a fallback for strict NATs)
    upnp: options.upnp,
    anonymous: server ? options.anonymous : true,
    dhtClient: !server,
    ...(server ? { persistPath: join(defaultCacheDir(), 'dnc', 'dht-state') } : {}),
    // the client cannot do anything without the DHT: fail within its timeout; the server keeps trying
    requireBootstrap: !server,
    bootstrapTimeoutMs: server ? 10_000 : Math.max(1000, Math.min(timeoutMs ?? 10_000, 10_000)),
    publishTimeoutMs: server ? 10_000 : 3_000,
    // a client only connects out: no wait for our certificate publication (our requests carry it)
    clientOnly: !server,
    // the library's messages: progress and diagnostics. The client shows them with --verbose only (what failed
    // reaches the user as the error); the server's operator also sees warnings (refused peers, publish failures)
    log: (level, message) => {
      if (server && (level === 'warn' || level === 'error') && !message.startsWith('webrtc:')) log.warn(message)
      else log.debug(level === 'debug' || level === 'info' ? message : `${level}: ${message}`)
    },
    signal,
  })
  const id = runtime.identity.id
  log.debug(`identity ${id} (long id ${runtime.identity.longId}) from ${runtime.identitySource.certificate}`)
  const connections = runtime.connections

  return {
    identityReadyAt,
    id,
    longId: runtime.identity.longId,
    connect: async (peer, name, opts) => {
      // the peer was named explicitly: trust its certificate whatever CA signed it
      runtime.trust.allow(peer)
      return connections.connectDevice(peer, name, { timeoutMs: opts.timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) })
    },
    sync: async (peer) => {
      try {
        const ch = await connections.connectDevice(peer, SYNC_CHANNEL, { noNewSocket: true, timeoutMs: 3000 })
        ch.destroy() // a peer that accepted it (not a dnc server): the answer was the barrier anyway
      } catch {
        // declined (the expected answer), or no live connection any more: nothing left to wait for
      }
    },
    serve: (handlers) => {
      // the ready hook gets the long id; show users the 40-hex id they know
      const shortIds = new Map<string, string>()
      connections.onChannelRequest((cert, name) => {
        if (name === SYNC_CHANNEL) return { accept: false, reason: 'sync' }
        const ids = publicKeyIds(cert)
        shortIds.set(ids.longId, ids.id)
        if (shortIds.size > 4096) shortIds.delete(shortIds.keys().next().value!)
        return handlers.onChannelRequest({ id: ids.id, certificate: cert }, name)
      })
      connections.onConnectionReady((peerId, name, socket) => {
        // incoming stream channels only: ours (initiator) are the client's business
        if (socket instanceof ChannelSocket && !socket.initiator) handlers.onChannel({ id: shortIds.get(peerId) ?? peerId }, name, socket)
        else if (!(socket instanceof ChannelSocket)) socket.close()
      })
    },
    stop: () => runtime.stop(),
  }
}
