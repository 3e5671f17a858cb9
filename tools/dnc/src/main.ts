/**
 * dnc after parsing: resolve options (flags + YAML), start the node, run the mode, stop cleanly.
 * Returns the exit code; throws UsageError (exit 2) or anything else (exit 1, message by cli.ts).
 */
import { performance } from 'node:perf_hooks'
import type { ParsedArgs } from './cli.js'
import { runClient, runLocalForward } from './client.js'
import { createLog } from './log.js'
import { startDncNode } from './node.js'
import { resolveOptions } from './options/resolve.js'
import { runServer } from './server.js'

/** How long stopping (channels, connections, DHT) may take before dnc exits anyway. */
const STOP_TIMEOUT_MS = 3000

export async function main(args: ParsedArgs): Promise<number> {
  const options = await resolveOptions(args)
  const log = createLog(options.verbosity)
  if (options.configPath) {
    log.debug(`read configuration ${options.configPath}${options.configSource === 'default' ? ' (default location; -d chooses another)' : ''}`)
  } else {
    log.debug('no configuration file (-d not given, no ~/.dnc/config.yml or /etc/dhtnet/dnc.yaml)')
  }
  if (options.unknownConfigKeys.length > 0) {
    log.warn(`${options.configPath}: unknown key${options.unknownConfigKeys.length > 1 ? 's' : ''} ignored: ${options.unknownConfigKeys.join(', ')}`)
  }

  // server and -L run until SIGINT/SIGTERM; the plain client stops on them too, after resetting its channel
  const stop = new AbortController()
  let signals = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++
    if (signals > 1) process.exit(sig === 'SIGINT' ? 130 : 143) // second signal: no more waiting
    log.debug(`${sig}: stopping`)
    stop.abort(new Error(`interrupted by ${sig}`))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  // the client's --timeout covers joining the DHT and connecting (not creating a new identity)
  const node = await startDncNode(options, log, stop.signal, options.mode === 'client' ? options.timeoutMs : undefined)
  let code: number
  try {
    if (options.mode === 'server') {
      process.stdout.write(`id ${node.id}\nlong_id ${node.longId}\n`)
      code = await runServer(node, options, log, stop.signal)
    } else if (options.localForward) {
      code = await runLocalForward(node, options, log, stop.signal)
    } else {
      const remaining = Math.max(1000, options.timeoutMs - (performance.now() - node.identityReadyAt))
      code = await runClient(node, { ...options, timeoutMs: remaining }, log, { stdin: process.stdin, stdout: process.stdout }, stop.signal)
    }
  } finally {
    await stopWithin(node.stop(), STOP_TIMEOUT_MS, () => log.warn(`stopping took longer than ${STOP_TIMEOUT_MS / 1000} s; exiting anyway`))
  }
  // nothing may keep us alive once done (stdin left open by a TTY, native threads): exit explicitly
  process.exit(code)
}

async function stopWithin(p: Promise<void>, ms: number, onLate: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      onLate()
      resolve()
    }, ms)
  })
  try {
    await Promise.race([p.catch(() => {}), late])
  } finally {
    clearTimeout(timer)
  }
}
