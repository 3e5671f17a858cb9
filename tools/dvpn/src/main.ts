/**
 * dvpn after parsing: resolve options (flags + the two YAML files), start the node (the tools' runtime), serve or
 * join the VPN until SIGINT/SIGTERM, undo every network change, stop cleanly. Returns the exit code; throws
 * UsageError (exit 2) or anything else (exit 1, message naming the step by the cli).
 */
import { createLog, handleStopSignals, logConfiguration, startNode, stopWithin } from '@dhtnet/cli-kit'
import type { ParsedArgs } from './cli.js'
import { runClient } from './client.js'
import { resolveOptions } from './options.js'
import { VpnServer } from './server.js'

/** How long stopping (channels, connections, DHT) may take before dvpn exits anyway. */
const STOP_TIMEOUT_MS = 3000

export async function main(args: ParsedArgs): Promise<number> {
  const options = await resolveOptions(args)
  const log = createLog('dvpn', options.verbosity)
  logConfiguration(log, options, ['~/.dvpn/config.yml', '/etc/dhtnet/dvpn.yaml'])
  if (options.vpnConfigPath) log.debug(`VPN configuration ${options.vpnConfigPath}`)
  const stop = handleStopSignals(log)
  const server = options.mode === 'server'
  if (options.mode === 'server' && options.anonymous) {
    log.warn('anonymous: true: any device whose certificate chain verifies (from any CA) may join this VPN')
  }
  const node = await startNode(options, log, {
    tool: 'dvpn',
    role: server ? 'server' : 'client',
    ...(options.mode === 'server' ? { anonymous: options.anonymous, allowedPeers: options.allowedPeers } : {}),
    signal: stop.signal,
  })
  let code: number
  try {
    if (options.mode === 'server') {
      const vpn = new VpnServer(node, options, log)
      await vpn.start()
      process.stdout.write(`id ${node.id}\nlong_id ${node.longId}\n`)
      code = await vpn.run(stop.signal)
    } else {
      code = await runClient(node, options, log, stop.signal)
    }
  } finally {
    await stopWithin(node.stop(), STOP_TIMEOUT_MS, () => log.warn(`stopping took longer than ${STOP_TIMEOUT_MS / 1000} s; exiting anyway`))
  }
  process.exit(code)
}
