/**
 * Starts a tool's node from its resolved options, through @dhtnet/core's startToolNode, with the tool's log:
 * the library's messages are progress (shown with --verbose); a server's operator also sees the library's warnings
 * (refused peers, publish failures), a client gets what failed as its error instead.
 */
import { startToolNode, type PeerFlavour, type ToolNode } from '@dhtnet/core'
import type { ConnectionInfo } from '@dhtnet/core'
import type { Log } from './log.js'
import type { CommonOptions } from './options.js'

export interface StartNodeOptions {
  /** The tool's name (persisted DHT state folder of a server). */
  readonly tool: string
  readonly role: 'client' | 'server'
  /** Server: accept any CA. */
  readonly anonymous?: boolean
  /** Server: devices accepted whatever their CA. */
  readonly allowedPeers?: readonly string[]
  readonly signal: AbortSignal
  readonly flavourOf?: (connection: ConnectionInfo) => PeerFlavour
}

export async function startNode(options: CommonOptions, log: Log, start: StartNodeOptions): Promise<ToolNode> {
  const server = start.role === 'server'
  if (options.bootstrap.length === 0) {
    log.warn('no bootstrap node (-b none or `bootstrap: []`): only devices found on the local network can be reached')
  }
  const node = await startToolNode({
    tool: start.tool,
    role: start.role,
    ...(options.identityFiles ? { identityFiles: options.identityFiles } : {}),
    identityLog: (line) => log.info(line),
    bootstrap: options.bootstrap,
    discovery: options.discovery,
    ...(options.bindAddress ? { bindAddress: options.bindAddress } : {}),
    ...(options.turn ? { turn: options.turn } : {}),
    // enable_upnp / --no-upnp: map a UDP port per connection on the home router (a fallback for strict NATs)
    upnp: options.upnp,
    transport: options.transport,
    anonymous: start.anonymous === true,
    ...(start.allowedPeers ? { allowedPeers: start.allowedPeers } : {}),
    connectTimeoutMs: options.timeoutMs,
    log: (level, message) => {
      if (server && (level === 'warn' || level === 'error') && !message.startsWith('webrtc:')) log.warn(message)
      else log.debug(level === 'debug' || level === 'info' ? message : `${level}: ${message}`)
    },
    signal: start.signal,
    ...(start.flavourOf ? { flavourOf: start.flavourOf } : {}),
  })
  log.debug(`identity ${node.id} (long id ${node.longId}) from ${node.runtime.identitySource.certificate}`)
  return node
}

/** The verbose lines about the configuration a run uses (which file, unknown keys). */
export function logConfiguration(log: Log, options: CommonOptions, defaultPathsShown: readonly string[]): void {
  if (options.configPath) {
    log.debug(`read configuration ${options.configPath}${options.configSource === 'default' ? ' (default location; -d chooses another)' : ''}`)
  } else {
    log.debug(`no configuration file (-d not given, no ${defaultPathsShown.join(' or ')})`)
  }
  if (options.unknownConfigKeys.length > 0) {
    log.warn(`${options.configPath}: unknown key${options.unknownConfigKeys.length > 1 ? 's' : ''} ignored: ${options.unknownConfigKeys.join(', ')}`)
  }
}
