/**
 * `dvpn <peer>`: join the server's VPN. The TUN is created only once the server accepted us (a refused or
 * unreachable peer leaves nothing behind), with the addresses the server gave and an MTU the path carries in one
 * datagram; then the VPN's networks (split tunnel) or everything (--full-tunnel) are routed through it, or
 * `script_path` does it with DHTNet's arguments. When the connection drops the client reconnects by itself and
 * names its lease, so it keeps its addresses (and the TCP sessions through the tunnel survive). On exit (SIGINT,
 * SIGTERM, an error) everything it added is removed.
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import type { ToolNode } from '@dhtnet/core'
import { openTun, type TunDevice } from '@dhtnet/tun'
import { RunError, type Log } from '@dhtnet/cli-kit'
import { hostOf } from './addresses.js'
import { NetChanges } from './netconfig.js'
import type { ClientOptions } from './options.js'
import { runScript } from './script.js'
import { openSession, RefusedError, type ClientSession, type SessionAddresses } from './session-client.js'
import { clearClientAddresses, configureClientTun, FullTunnel, setClientAddresses } from './tun-setup.js'

/** Bound of one reconnection attempt (the first connection has the whole --timeout). */
const RECONNECT_ATTEMPT_MS = 12_000
const BACKOFF_MS = [500, 1000, 2000, 4000, 5000]

export interface ClientState {
  tun: TunDevice | undefined
  session: ClientSession | undefined
}

function sameAddresses(a: SessionAddresses, b: SessionAddresses): boolean {
  return (
    a.client4 === b.client4 &&
    a.client6 === b.client6 &&
    a.server4 === b.server4 &&
    a.server6 === b.server6 &&
    a.routes4.join() === b.routes4.join() &&
    a.routes6.join() === b.routes6.join()
  )
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done(): void {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

/** The client's node, replaced by a fresh one when reconnecting keeps failing (main stops whichever is current). */
export interface NodeHolder {
  node: ToolNode
  /** A new node with the same options (identity, bootstrap, TURN, bind). */
  readonly make: () => Promise<ToolNode>
}

/** Consecutive failed reconnection attempts after which the node (DHT, connection manager) is started afresh. */
const FRESH_NODE_AFTER = 2

export async function runClient(holder: NodeHolder, options: ClientOptions, log: Log, signal: AbortSignal): Promise<number> {
  let node = holder.node
  const peer = options.peer.hex
  const net = new NetChanges(undefined, (line) => log.debug(line))
  const state: ClientState = { tun: undefined, session: undefined }
  let fullTunnel: FullTunnel | undefined
  let current: SessionAddresses | undefined
  let dropsWhileDown = 0

  const sink = (packets: Buffer[]): void => {
    if (state.tun && !state.tun.closed) state.tun.writeMany(packets)
  }
  const onTunPackets = (packets: Buffer[]): void => {
    const s = state.session
    if (s) s.link.send(packets)
    else dropsWhileDown += packets.length
  }

  /** The TUN and its configuration, the first time the server accepted us. */
  const setUp = async (s: ClientSession): Promise<void> => {
    const mtu = options.mtu ?? Math.min(s.serverMtu, s.link.maxPacket)
    let tun: TunDevice
    try {
      tun = openTun({ name: options.tunName, mtu })
    } catch (err) {
      throw new RunError(`cannot create the TUN interface: ${(err as Error).message}`, { hint: (err as { hint?: string }).hint, cause: err })
    }
    state.tun = tun
    tun.on('error', (err) => log.error(`TUN ${tun.name}: ${err.message}`))
    const a = s.addresses
    const remote = hostOf(s.connection.remoteAddress) ?? ''
    if (options.scriptPath) {
      if (options.fullTunnel) log.warn('--full-tunnel/full_tunnel is ignored: script_path decides the routes')
      const r = await runScript(options.scriptPath, { peer4: a.server4, local4: a.client4, tun: tun.name, remote, isClient: true, local6: a.client6, peer6: a.server6 })
      if (r.output) log.debug(`script_path output:\n${r.output}`)
      if (r.code !== 0) log.warn(`script_path ${options.scriptPath} exited with ${r.code ?? r.signal}`)
      if (!tun.isUp) tun.up()
    } else {
      await configureClientTun(net, tun.name, a)
      if (options.fullTunnel) {
        if (!s.masquerade) log.warn("full tunnel: the server does not masquerade (masquerade: true on the server), so only the VPN's networks will answer")
        fullTunnel = new FullTunnel(net, tun.name, a.client6 !== '' && s.protocol === 'dvpn://v1')
        await keepOutside(fullTunnel, s, options)
        await fullTunnel.enable()
      }
    }
    tun.on('packets', onTunPackets)
    current = a
    const routes = options.scriptPath ? 'routes: script_path' : options.fullTunnel ? 'full tunnel' : `routes ${[...a.routes4, ...a.routes6].join(', ')}`
    log.info(
      `connected: ${tun.name} ${a.client4} ↔ ${a.server4}, ${a.client6 || '-'} ↔ ${a.server6 || '-'}; MTU ${tun.mtu}; ${routes} (${s.protocol}, ${s.link.kind === 'datagram' ? 'packets on a datagram channel' : s.link.kind === 'dhtnet' ? 'one packet per message' : 'packets on a stream channel'})`,
    )
  }

  /** A later session: same addresses (the usual case), or new ones set in place. */
  const resume = async (s: ClientSession): Promise<void> => {
    const tun = state.tun!
    const a = s.addresses
    if (!options.scriptPath && current && !sameAddresses(current, a)) {
      log.warn(`the server gave other addresses this time (${a.client4}, ${a.client6}); TCP sessions through the tunnel are lost`)
      await clearClientAddresses(net, tun.name)
      await setClientAddresses(net, tun.name, a)
      current = a
    }
    const mtu = options.mtu ?? Math.min(s.serverMtu, s.link.maxPacket)
    if (mtu !== tun.mtu) tun.setMtu(mtu)
    if (fullTunnel) {
      await keepOutside(fullTunnel, s, options)
      await fullTunnel.enable()
    }
    log.info(
      `reconnected: ${a.client4}, ${a.client6 || '-'} (${s.link.kind === 'datagram' ? 'datagram channel' : s.link.kind}${dropsWhileDown ? `; ${dropsWhileDown} packets dropped while disconnected` : ''})`,
    )
    dropsWhileDown = 0
  }

  let token: string | undefined
  let attempt = 0
  const stopped = new Promise<string>((resolve) => {
    if (signal.aborted) resolve('stopping')
    else signal.addEventListener('abort', () => resolve('stopping'), { once: true })
  })
  try {
    while (!signal.aborted) {
      let s: ClientSession
      if (state.tun && attempt >= FRESH_NODE_AFTER && attempt % FRESH_NODE_AFTER === 0) {
        // reconnecting keeps failing: a DHT whose searches went stale during the cut (their nodes marked bad for
        // good) fails every request at once; a fresh client node (random DHT id, new connection manager) does not
        log.info('starting a fresh DHT node and connection manager for the next attempts')
        const old = node
        try {
          node = holder.node = await holder.make()
        } catch (err) {
          log.info(`starting a fresh node failed: ${(err as Error).message}`)
        }
        if (node !== old) void old.stop().catch(() => {})
      } else if (state.tun) {
        // a reconnection: the network may have been away long enough for the DHT to lose every node (its own
        // re-bootstrap backs off up to minutes): ping the bootstrap nodes now and probe the connections
        refreshNetwork(node, options.bootstrap)
      }
      try {
        s = await openSession(node, {
          peer,
          token,
          previous: current,
          fullTunnel: options.fullTunnel,
          keepaliveMs: options.keepaliveMs,
          timeoutMs: state.tun ? Math.min(options.timeoutMs, RECONNECT_ATTEMPT_MS) : options.timeoutMs,
          signal,
          sink,
          log,
        })
      } catch (err) {
        // the first connection, or a refusal: nothing to retry (the error says which step failed)
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- aborted may have changed during the await
        if (!state.tun || err instanceof RefusedError || signal.aborted) throw err
        const wait = BACKOFF_MS[Math.min(attempt++, BACKOFF_MS.length - 1)]!
        log.info(`reconnecting failed: ${(err as Error).message}; next attempt in ${wait / 1000} s`)
        await sleep(wait, signal)
        continue
      }
      attempt = 0
      token = s.token
      if (!state.tun) {
        state.session = s
        try {
          await setUp(s)
        } catch (err) {
          s.close()
          throw err
        }
      } else {
        await resume(s)
        state.session = s
      }
      const why = await Promise.race([s.ended, stopped])
      state.session = undefined
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- aborted may have changed during the await
      if (signal.aborted) {
        s.close()
        await node.sync(peer) // our end of the channel reaches the server: it starts the grace period at once
        break
      }
      s.close()
      log.warn(`connection to the server lost (${why}): reconnecting`)
      await fullTunnel?.disable()
      // the old connection may still look alive to the connection manager: the next attempt needs a new one
      node.runtime.connections.closeConnectionsWith(peer)
    }
    return 0
  } finally {
    state.session?.close()
    await fullTunnel?.disable()
    state.tun?.close()
    const failed = await net.undoAll()
    for (const f of failed) log.warn(`could not undo ${f}`)
  }
}

/**
 * What DHTNet calls connectivityChanged(): the bootstrap nodes pinged at once (the DHT adds any that answers back to
 * its table) and every live connection probed. Never throws.
 */
export function refreshNetwork(node: ToolNode, bootstrap: readonly string[]): void {
  for (const b of bootstrap) node.runtime.node.bootstrap(b).catch(() => {})
  try {
    node.runtime.connections.connectivityChanged()
  } catch {
    // closed: nothing to probe
  }
}

/** Full tunnel: the peer's address on the path, the bootstrap nodes and the TURN server stay outside the tunnel. */
async function keepOutside(ft: FullTunnel, s: ClientSession, options: ClientOptions): Promise<void> {
  const hosts = new Set<string>()
  const remote = hostOf(s.connection.remoteAddress)
  if (remote) hosts.add(remote)
  const names = [
    ...options.bootstrap.map((b) => b.replace(/^\[([^\]]+)\](:\d+)?$/, '$1').replace(/^([^:[\]]+):\d+$/, '$1')),
    ...(options.turn
      ? [
          options.turn.host
            .replace(/^turns?:/, '')
            .replace(/[?].*$/, '')
            .replace(/:\d+$/, ''),
        ]
      : []),
  ]
  for (const name of names) {
    if (isIP(name)) hosts.add(name)
    else {
      const found = await lookup(name, { all: true }).catch(() => [])
      for (const f of found) hosts.add(f.address)
    }
  }
  for (const h of hosts) await ft.keepOutside(h)
}
