/**
 * dvpn after parsing: resolve options (flags + the two YAML files), start the node (the tools' runtime), serve or
 * join the VPN until SIGINT/SIGTERM, undo every network change, stop cleanly. Returns the exit code; throws
 * UsageError (exit 2) or anything else (exit 1, message naming the step by the cli).
 */
import { createLog, handleStopSignals, logConfiguration, startNode, stopWithin } from '@dhtnet/cli-kit'
import type { ParsedArgs } from './cli.js'
import type { ToolNode } from '@dhtnet/core'
import { runClient, type NodeHolder } from './client.js'
import { resolveOptions } from './options.js'
import { VpnServer } from './server.js'
import { underlayAddress } from './underlay.js'

/** How long stopping (channels, connections, DHT) may take before dvpn exits anyway. */
const STOP_TIMEOUT_MS = 3000

export async function main(args: ParsedArgs): Promise<number> {
  const resolved = await resolveOptions(args)
  const log = createLog('dvpn', resolved.verbosity)
  // ICE must not find paths through the VPN itself: bind to the underlay address unless --bind says otherwise
  const bind = resolved.bindAddress ?? (await underlayAddress(resolved.bootstrap))
  if (bind && !resolved.bindAddress) log.debug(`DHT and ICE bound to ${bind} (the underlay address; --bind chooses another)`)
  const options = { ...resolved, ...(bind ? { bindAddress: bind } : {}) }
  logConfiguration(log, options, ['~/.dvpn/config.yml', '/etc/dhtnet/dvpn.yaml'])
  if (options.vpnConfigPath) log.debug(`VPN configuration ${options.vpnConfigPath}`)
  const stop = handleStopSignals(log)
  const server = options.mode === 'server'
  if (options.mode === 'server' && options.anonymous) {
    log.warn('anonymous: true: any device whose certificate chain verifies (from any CA) may join this VPN')
  }
  const make = (): Promise<ToolNode> =>
    startNode(options, log, {
      tool: 'dvpn',
      role: server ? 'server' : 'client',
      ...(options.mode === 'server' ? { anonymous: options.anonymous, allowedPeers: options.allowedPeers } : {}),
      signal: stop.signal,
    })
  const holder: NodeHolder = { node: await make(), make }
  let code: number
  try {
    if (options.mode === 'server') {
      const vpn = new VpnServer(holder.node, options, log)
      await vpn.start()
      process.stdout.write(`id ${holder.node.id}\nlong_id ${holder.node.longId}\n`)
      code = await vpn.run(stop.signal)
    } else {
      code = await runClient(holder, options, log, stop.signal)
    }
  } finally {
    await stopWithin(holder.node.stop(), STOP_TIMEOUT_MS, () => log.warn(`stopping took longer than ${STOP_TIMEOUT_MS / 1000} s; exiting anyway`))
  }
  process.exit(code)
}
