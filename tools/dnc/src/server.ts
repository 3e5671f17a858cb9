/**
 * `dnc -l`: accepts channels named `nc://<host>:<port>` from trusted peers and connects each to that TCP service,
 * when `authorized_services` allows it (services.ts). A refused request is declined with the reason; a service
 * that refuses the TCP connection resets the channel with "connection refused by <host>:<port>", so the client
 * fails instead of seeing an empty success. Runs until `signal` aborts (SIGINT/SIGTERM), then closes everything.
 */
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { PeerInfo, ToolNode } from '@dhtnet/core'
import { untilAborted, type Log } from '@dhtnet/cli-kit'
import { forwardChannelToTcp } from './forward.js'
import type { ServerOptions } from './options/resolve.js'
import { ServicePolicy, type ServiceDecision } from './services.js'

/** How long a TCP connect to a local service may take before the channel is reset. */
const SERVICE_CONNECT_TIMEOUT_MS = 10_000

export function explainNoService(configPath: string | undefined): string {
  const where = configPath ?? '~/.dnc/config.yml (or give a file with -d)'
  return (
    `no service is authorized, so every request will be refused. To open one, add to ${where}:\n` +
    `    authorized_services:\n      - ip: "127.0.0.1"\n        port: 22\n` +
    `  or run dnc -l --allow 22; to allow every destination (not advised) set allow_all_services: true`
  )
}

export async function runServer(node: ToolNode, options: ServerOptions, log: Log, signal: AbortSignal, policy?: ServicePolicy): Promise<number> {
  const services = policy ?? new ServicePolicy({ services: options.services, allowAll: options.allowAllServices })
  if (services.allowsNothing) log.warn(explainNoService(options.configPath))
  else log.info(`authorized services: ${services.describe()}`)
  if (services.allowAll) log.warn('allow_all_services is set: peers may reach any host and port this machine can reach')

  const active = new Set<{ channel: Duplex; tcp?: Socket; peer: string }>()
  // decisions taken at channel request time, used when the channel is ready (same name → same decision)
  const decisions = new Map<string, { decision: ServiceDecision; at: number }>()

  node.serve({
    decide: async (peer: PeerInfo, name: string) => {
      const decision = await services.decide(name)
      if (!decision.ok) {
        log.info(`refused ${truncate(name)} for ${peer.id}: ${decision.reason}`)
        return { accept: false, reason: decision.reason }
      }
      decisions.set(name, { decision, at: Date.now() })
      if (decisions.size > 1024) decisions.delete(decisions.keys().next().value!)
      return true
    },
    onChannel: (peer: PeerInfo, name: string, channel: Duplex) => {
      void serveChannel(peer, name, channel)
    },
  })

  async function serveChannel(peer: PeerInfo, name: string, channel: Duplex): Promise<void> {
    const entry: { channel: Duplex; tcp?: Socket; peer: string } = { channel, peer: peer.id }
    active.add(entry)
    channel.on('error', () => {}) // reported by the forward
    try {
      const cached = decisions.get(name)
      const decision = cached && Date.now() - cached.at < 60_000 ? cached.decision : await services.decide(name)
      if (!decision.ok) {
        channel.destroy(new Error(decision.reason))
        return
      }
      const shown = decision.host.includes(':') ? `[${decision.host}]:${decision.port}` : `${decision.host}:${decision.port}`
      let tcp: Socket
      let label: string
      try {
        ;({ socket: tcp, label } = await connectFirst(decision.addresses, decision.port))
      } catch (err) {
        log.info(`${peer.id} → ${shown}: ${(err as Error).message}`)
        channel.destroy(err as Error)
        return
      }
      entry.tcp = tcp
      log.info(`${peer.id} connected to ${label}`)
      const started = Date.now()
      try {
        const r = await forwardChannelToTcp(channel, tcp, label)
        log.debug(`${peer.id} ${label} closed after ${Date.now() - started} ms: ${r.bytesFromChannel} bytes in, ${r.bytesToChannel} bytes out`)
      } catch (err) {
        log.info(`${peer.id} ${label} ended with an error: ${(err as Error).message}`)
      }
    } finally {
      active.delete(entry)
    }
  }

  log.debug('ready')
  await untilAborted(signal)
  log.info(`stopping: closing ${active.size} open channel${active.size === 1 ? '' : 's'}`)
  const peers = new Set<string>()
  for (const { channel, tcp, peer } of active) {
    channel.destroy(new Error('the dnc server is shutting down'))
    tcp?.destroy()
    peers.add(peer)
  }
  // let the resets reach the clients before the connections close, so they learn why
  await Promise.all([...peers].map((p) => node.sync(p)))
  return 0
}

function addressLabel(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}

/** Tries each allowed address in order (a name may resolve to ::1 and 127.0.0.1); the last error if none answers. */
async function connectFirst(addresses: readonly string[], port: number): Promise<{ socket: Socket; label: string }> {
  let last: Error | undefined
  for (const address of addresses) {
    const label = addressLabel(address, port)
    try {
      return { socket: await connectService(address, port, label), label }
    } catch (err) {
      last = err as Error // connectService rejects with Errors
    }
  }
  throw last ?? new Error(`no address to connect to on port ${port}`)
}

/** TCP connection to a service, half-open allowed; errors as readable reasons ("connection refused by ..."). */
export function connectService(address: string, port: number, label: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: address, port, allowHalfOpen: true, timeout: SERVICE_CONNECT_TIMEOUT_MS })
    const fail = (err: Error): void => {
      socket.destroy()
      reject(new Error(describeConnectError(err, label), { cause: err }))
    }
    socket.once('error', fail)
    socket.once('timeout', () => fail(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })))
    socket.once('connect', () => {
      socket.off('error', fail)
      socket.setTimeout(0)
      socket.removeAllListeners('timeout')
      socket.setKeepAlive(true, 30_000)
      socket.setNoDelay(true)
      resolve(socket)
    })
  })
}

function describeConnectError(err: Error, label: string): string {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ECONNREFUSED') return `connection refused by ${label}`
  if (code === 'ETIMEDOUT') return `connection to ${label} timed out`
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${label} is unreachable`
  return `cannot connect to ${label}: ${err.message}`
}

function truncate(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s
}
