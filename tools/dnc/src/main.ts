/**
 * dnc after parsing: resolve options (flags + YAML), start the node (the tools' runtime), run the mode, stop cleanly.
 * Returns the exit code; throws UsageError (exit 2) or anything else (exit 1, message by the cli).
 */
import { createLog, handleStopSignals, logConfiguration, startNode, stopWithin } from '@dhtnet/cli-kit'
import type { ParsedArgs } from './cli.js'
import { runClient, runLocalForward } from './client.js'
import { resolveOptions } from './options/resolve.js'
import { runServer } from './server.js'

/** How long stopping (channels, connections, DHT) may take before dnc exits anyway. */
const STOP_TIMEOUT_MS = 3000

export async function main(args: ParsedArgs): Promise<number> {
  const options = await resolveOptions(args)
  const log = createLog('dnc', options.verbosity)
  logConfiguration(log, options, ['~/.dnc/config.yml', '/etc/dhtnet/dnc.yaml'])

  // server and -L run until SIGINT/SIGTERM/SIGHUP; the plain client stops on them too, after resetting its channel
  const stop = handleStopSignals(log)
  const server = options.mode === 'server'
  const node = await startNode(options, log, {
    tool: 'dnc',
    role: server ? 'server' : 'client',
    ...(server ? { anonymous: options.anonymous } : {}),
    signal: stop.signal,
  })
  let code: number
  try {
    if (options.mode === 'server') {
      process.stdout.write(`id ${node.id}\nlong_id ${node.longId}\n`)
      code = await runServer(node, options, log, stop.signal)
    } else if (options.localForward) {
      code = await runLocalForward(node, options, log, stop.signal)
    } else {
      code = await runClient(node, options, log, { stdin: process.stdin, stdout: process.stdout }, stop.signal)
    }
  } finally {
    await stopWithin(node.stop(), STOP_TIMEOUT_MS, () => log.warn(`stopping took longer than ${STOP_TIMEOUT_MS / 1000} s; exiting anyway`))
  }
  // nothing may keep us alive once done (stdin left open by a TTY, native threads): exit explicitly
  process.exit(code)
}
