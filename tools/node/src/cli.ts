#!/usr/bin/env node
/**
 * dhtnet-node: a standalone OpenDHT-compatible DHT node.
 * With a TTY: an interactive prompt (type 'h'). Without one: a daemon that prints one line with its address and
 * node id on stdout, logs on stderr, and stops cleanly on SIGINT/SIGTERM (exit 0).
 * Exit codes: 0 ok, 1 runtime error (cannot bind, bad identity file, ...), 2 usage error.
 */
import { createInterface } from 'node:readline'
import { CommanderError } from 'commander'
import chalk from 'chalk'
import { DhtNode, SecureDht, isDhtnetError, type Identity, type Logger } from '@dhtnet/core'
import { UsageError, parseOptions, type NodeOptions } from './options.js'
import { generateNodeIdentity, loadNodeIdentity } from './identity.js'
import { printNodeInfo, runCommand, type CommandContext } from './commands.js'

function errorText(err: unknown): string {
  if (isDhtnetError(err)) return `${err.message}${err.hint ? `\n  hint: ${err.hint}` : ''}`
  return (err as Error | undefined)?.message ?? String(err)
}

function makeLogger(verbose: boolean): Logger {
  return (level, message) => {
    if (verbose || level === 'warn' || level === 'error') process.stderr.write(`${new Date().toISOString()} ${level} ${message}\n`)
  }
}

async function loadIdentityFor(opts: NodeOptions): Promise<Identity | undefined> {
  if (opts.identity !== undefined) return loadNodeIdentity(opts.identity)
  if (opts.generateIdentity !== undefined) {
    return generateNodeIdentity(opts.generateIdentity === true ? undefined : opts.generateIdentity, opts.keySize)
  }
  return undefined
}

async function main(): Promise<number> {
  let opts: NodeOptions
  try {
    opts = parseOptions(process.argv.slice(2))
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help / --version: commander printed to stdout already
      return 0
    }
    if (err instanceof UsageError) {
      process.stderr.write(`dhtnet-node: ${err.message}\n(run dhtnet-node --help for the options)\n`)
      return 2
    }
    throw err
  }
  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true
  const logger = makeLogger(opts.verbose)

  let identity: Identity | undefined
  try {
    identity = await loadIdentityFor(opts)
  } catch (err) {
    process.stderr.write(`dhtnet-node: cannot use the identity: ${errorText(err)}\n`)
    return 1
  }

  const node = new DhtNode({
    port: opts.port,
    ...(opts.ipv4 !== undefined ? { bindIpv4: opts.ipv4 } : {}),
    ...(opts.ipv6 !== undefined ? { bindIpv6: opts.ipv6 } : {}),
    network: opts.network,
    bootstrap: opts.bootstrap,
    discovery: opts.discovery,
    ...(opts.persist !== undefined ? { persistPath: opts.persist } : {}),
    ...(identity ? { identityId: identity.id } : {}),
    ...(opts.rateLimit ? {} : { rateLimit: { perIp: -1, overall: -1 } }),
    logger,
  })
  try {
    await node.start()
  } catch (err) {
    process.stderr.write(`dhtnet-node: cannot start the DHT node: ${errorText(err)}\n`)
    return 1
  }
  const secure = identity
    ? new SecureDht(node, identity, {
        log: (level, m) => logger(level, `SecureDht: ${m}`),
      })
    : undefined
  secure?.start().then(
    (r) => logger('info', `certificate published: key id ${r.keyIdKey ? 'ok' : 'failed'}, SHA1(PkId) ${r.longIdKey ? 'ok' : 'failed'}`),
    () => {},
  )
  node.on('connected', () => logger('info', 'connected: a good node answered'))

  let stopping: Promise<void> | undefined
  const stop = () => {
    if (!stopping) {
      stopping = (async () => {
        secure?.close()
        await node.stop()
      })()
    }
    return stopping
  }

  const bound = opts.ipv4 === false ? `[${opts.ipv6 ?? '::'}]` : (opts.ipv4 ?? '0.0.0.0')
  if (!interactive) {
    // handlers first, banner second: whoever reads the banner may signal us at once
    const stopped = new Promise<void>((resolve) => {
      const onSignal = (sig: string) => {
        logger('info', `${sig}: stopping`)
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
        stop().then(resolve, resolve)
      }
      process.on('SIGINT', onSignal)
      process.on('SIGTERM', onSignal)
    })
    process.stdout.write(`dhtnet-node listening on ${bound}:${node.port} id=${node.nodeId}${identity ? ` key=${identity.id} longid=${identity.longId}` : ''}\n`)
    await stopped
    return 0
  }

  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: chalk.cyan('>> ') })
  let busy = false
  const print = (line: string) => {
    // keep the prompt line intact when a listen update arrives while the user types
    process.stdout.write(`\r\x1b[K${line}\n`)
    if (!busy) rl.prompt(true)
  }
  const ctx: CommandContext = { node, ...(secure ? { secure } : {}), print, listens: new Map(), nextListenToken: 1 }
  printNodeInfo(ctx)
  process.stdout.write(" (type 'h' for the list of commands)\n")
  process.on('SIGTERM', () => rl.close())
  rl.on('SIGINT', () => rl.close())
  rl.prompt()
  // one command at a time, in order, even when lines arrive faster than they run; EOF ends after the last one
  for await (const line of rl) {
    busy = true
    let more = true
    try {
      more = await runCommand(ctx, line)
    } catch (err) {
      process.stdout.write(chalk.red(`error: ${errorText(err)}`) + '\n')
    }
    busy = false
    if (!more) break
    rl.prompt()
  }
  rl.close()
  for (const l of ctx.listens.values()) l.handle.cancel()
  await stop()
  return 0
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`dhtnet-node: ${errorText(err)}\n`)
    process.exit(1)
  },
)
