#!/usr/bin/env node
/**
 * dnc command line: commander parses, nothing else happens here. Flags are DHTNet's (tools/dnc/main.cpp) plus
 * --verbose/-q, --timeout, -L and --allow. Usage errors exit 2 with a message and a hint, never a stack trace.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { chalkStderr } from 'chalk'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { EXIT_USAGE, UsageError, describeError } from './errors.js'
import { DNC_VERSION } from './version.js'

export interface ParsedArgs {
  /** Positional PEER_ID as typed (may be `dnc/<id>`, as ssh's %h gives it). */
  readonly peer?: string
  readonly extraArgs: string[]
  readonly listen: boolean
  readonly localForward?: string
  readonly port?: string
  readonly ip?: string
  readonly bootstrap: string[]
  readonly turnHost?: string
  readonly turnUser?: string
  readonly turnPass?: string
  readonly turnRealm?: string
  readonly certificate?: string
  readonly privateKey?: string
  readonly configuration?: string
  readonly anonymous: boolean
  /** Count of -v: 1 prints the version, 2 (-vv) means verbose, as in DHTNet. */
  readonly versionCount: number
  readonly verbose: boolean
  readonly quiet: boolean
  readonly timeout?: string
  readonly allow: string[]
  readonly upnp?: boolean
  readonly bind?: string
}

export type ParseOutcome = { kind: 'run'; args: ParsedArgs } | { kind: 'exit'; code: number }

const EXAMPLES = `
Examples:
  dnc -l -d /etc/dhtnet/dnc.yaml          run the server (prints its id)
  dnc 2f4975e7b11a0908bd400b27130fe9a496d0f415          stdin/stdout to port 22 of that device
  dnc -i 127.0.0.1 -P 80 <peer-id>         to port 80 on the peer's loopback
  dnc -L 8080 -P 80 <peer-id>              local port 8080 forwarded to the peer's port 80 (like ssh -L)
  ssh -o ProxyCommand='dnc %h' user@dnc/<peer-id>

stdout carries only the remote bytes; every message goes to stderr.
Without -d, dnc reads ~/.dnc/config.yml, else /etc/dhtnet/dnc.yaml, when one exists.
Without -c/-p, dnc uses ~/.dhtnet/id/device.{crt,pem} ($DHTNET_HOME), creating it on first use.
Exit codes: 0 done, 1 failure (unreachable, refused, ...), 2 usage error.`

function collect(value: string, previous: string[]): string[] {
  return [...previous, ...value.split(',').map((s) => s.trim()).filter((s) => s !== '')]
}

function count(_value: string | undefined, previous: number): number {
  return previous + 1
}

export function buildProgram(): Command {
  const program = new Command('dnc')
  program
    .usage('[options] [PEER_ID]')
    .description('Distributed netcat: stdin/stdout to a TCP port on a device known only by its public key.')
    .argument('[peer_id]', 'the device to reach: 40-hex id or 64-hex long id (dnc/<id> accepted, as ssh %h gives it)')
    .helpOption('-h, --help', 'print this help and exit')
    .addOption(new Option('-v, --version', 'print the version and exit (-vv: verbose, as in DHTNet)').argParser(count).default(0))
    .option('-l, --listen', 'server mode: accept channels and connect them to local TCP services', false)
    .option('-P, --port <port>', 'remote TCP port the server should connect to (default 22)')
    .option('-i, --ip <address>', 'remote host the server should connect to: IPv4, IPv6 or name (default 127.0.0.1)')
    .option('-L, --local-forward <[bind:]port>', 'listen on a local TCP port and carry each connection to the service (like ssh -L)')
    .addOption(new Option('-b, --bootstrap <host[:port]>', 'DHT bootstrap node (repeatable, or comma separated; default port 4222); "none": LAN discovery only').argParser(collect).default([], 'the public OpenDHT network plus LAN discovery'))
    .option('-t, --turn_host <address>', 'TURN server (enables TURN)')
    .option('-u, --turn_user <user>', 'TURN user name')
    .option('-w, --turn_pass <secret>', 'TURN password')
    .option('-r, --turn_realm <realm>', 'TURN realm')
    .option('-c, --certificate <file>', 'identity certificate (PEM chain)')
    .option('-p, --privateKey <file>', 'identity private key (PEM)')
    .option('-d, --configuration <file>', 'YAML configuration file')
    .option('-a, --anonymous', 'server: accept devices whose certificate comes from any CA', false)
    .option('--allow <[host:]port>', 'server: authorize a service (repeatable; host defaults to 127.0.0.1)', collect, [])
    .option('--no-upnp', 'do not map a port with UPnP')
    .option('--bind <address>', 'bind the DHT and ICE sockets to this local address only (e.g. 127.0.0.1)')
    .option('--verbose', 'print progress messages on stderr', false)
    .option('-q, --quiet', 'print errors only', false)
    .option('--timeout <seconds>', 'client: give up connecting after this many seconds (default 30)')
    .addHelpText('after', EXAMPLES)
    .allowExcessArguments(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
      outputError: (s, write) => write(`dnc: ${s.replace(/^error: /, 'error: ')}`),
    })
    .showHelpAfterError('(run dnc --help for the list of options)')
  return program
}

/** Parses argv (without node and script). Never throws: usage problems become an exit outcome. */
export function parseArgs(argv: string[]): ParseOutcome {
  const program = buildProgram()
  try {
    program.parse(argv, { from: 'user' })
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') return { kind: 'exit', code: 0 }
      return { kind: 'exit', code: EXIT_USAGE }
    }
    if (err instanceof InvalidArgumentError) return { kind: 'exit', code: EXIT_USAGE }
    throw err
  }
  const o = program.opts<Record<string, unknown>>()
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined)
  const [peer, ...extraArgs] = program.args
  const args: ParsedArgs = {
    ...(peer !== undefined ? { peer } : {}),
    extraArgs,
    listen: o.listen === true,
    ...opt('localForward', str('localForward')),
    ...opt('port', str('port')),
    ...opt('ip', str('ip')),
    bootstrap: (o.bootstrap as string[]) ?? [],
    ...opt('turnHost', str('turn_host')),
    ...opt('turnUser', str('turn_user')),
    ...opt('turnPass', str('turn_pass')),
    ...opt('turnRealm', str('turn_realm')),
    ...opt('certificate', str('certificate')),
    ...opt('privateKey', str('privateKey')),
    ...opt('configuration', str('configuration')),
    anonymous: o.anonymous === true,
    versionCount: typeof o.version === 'number' ? o.version : 0,
    verbose: o.verbose === true,
    quiet: o.quiet === true,
    ...opt('timeout', str('timeout')),
    ...opt('bind', str('bind')),
    allow: (o.allow as string[]) ?? [],
    ...(program.getOptionValueSource('upnp') === 'cli' ? { upnp: o.upnp === true } : {}),
  }
  return { kind: 'run', args }
}

function opt<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V }
}

async function cliMain(): Promise<void> {
  const outcome = parseArgs(process.argv.slice(2))
  if (outcome.kind === 'exit') process.exit(outcome.code)
  const { args } = outcome
  if (args.versionCount === 1) {
    process.stdout.write(`dnc ${DNC_VERSION}\n`)
    process.exit(0)
  }
  try {
    const { main } = await import('./main.js')
    process.exitCode = await main(args)
  } catch (err) {
    const { message, hint } = describeError(err)
    process.stderr.write(`dnc: ${chalkStderr.red.bold('error:')} ${message}\n${hint ? `dnc: hint: ${hint}\n` : ''}`)
    if (!(err instanceof UsageError) && process.env.DNC_DEBUG) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`)
    process.exit(err instanceof UsageError ? EXIT_USAGE : 1)
  }
}

// run only as the program, not when imported by tests
function isMainModule(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}
if (isMainModule()) void cliMain()
