/** Command-line options of dhtnet-node, parsed and validated (every bad value is a UsageError naming the fix). */
import { Command, CommanderError, Option } from 'commander'

export class UsageError extends Error {}

export interface NodeOptions {
  port: number
  bootstrap: string[]
  network: number
  identity?: string
  generateIdentity?: string | true
  keySize: 2048 | 3072 | 4096
  ipv4: string | false | undefined
  ipv6: string | false | undefined
  discovery: boolean
  verbose: boolean
  persist?: string
  rateLimit: boolean
}

export const VERSION = '0.1.0'

function intOption(name: string, min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new UsageError(`${name} must be an integer from ${min} to ${max}, got '${value}'`)
    }
    return Number(value)
  }
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+)(:\d{1,5})?$|^[0-9a-fA-F:]*:[0-9a-fA-F:.]*$/

function collectBootstrap(value: string, previous: string[]): string[] {
  if (!HOST_PORT.test(value.trim())) {
    throw new UsageError(`--bootstrap expects host[:port] (e.g. 127.0.0.1:4222 or [::1]:4222), got '${value}'`)
  }
  const m = /:(\d+)$/.exec(value)
  if (m && value.split(':').length === 2 && (Number(m[1]) < 1 || Number(m[1]) > 65535)) {
    throw new UsageError(`--bootstrap port must be 1-65535, got '${value}'`)
  }
  return [...previous, value.trim()]
}

export function buildProgram(): Command {
  return new Command('dhtnet-node')
    .description('A standalone OpenDHT-compatible DHT node: run it as a bootstrap node, or debug with its prompt.')
    .option('-p, --port <port>', 'UDP port (0 = any free port)', intOption('--port', 0, 65535), 4222)
    .option('-b, --bootstrap <host[:port]>', 'bootstrap node (repeatable; default port 4222)', collectBootstrap, [] as string[])
    .option('-n, --network <id>', 'network id (0 = the public OpenDHT network)', intOption('--network', 0, 0xffffffff), 0)
    .option('-i, --identity <dir|key,crt>', 'identity: a directory holding <name>.pem + <name>.crt, or the two files')
    .option('--generate-identity [dir]', 'generate a new identity (CA + node certificate); saved in dir when given')
    .addOption(new Option('--key-size <bits>', 'RSA key size for --generate-identity').choices(['2048', '3072', '4096']).default('4096'))
    .option('--ipv4 <addr>', 'IPv4 address to bind (default 0.0.0.0)')
    .option('--no-ipv4', 'no IPv4 socket')
    .option('--ipv6 <addr>', 'IPv6 address to bind (default ::)')
    .option('--no-ipv6', 'no IPv6 socket')
    .option('--no-discovery', 'no LAN peer discovery (multicast)')
    .option('--no-rate-limit', 'answer every request (no per-IP or overall limit); for benchmarks')
    .option('--persist <file>', 'keep the node id and known nodes in this file, to rejoin quickly after a restart')
    .option('-v, --verbose', 'log DHT activity on stderr', false)
    .version(VERSION, '--version', 'print the version')
    .helpOption('-h, --help', 'show this help')
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({ writeErr: () => {} })
}

/** Parse argv (without node and script). Throws UsageError, or CommanderError for --help/--version. */
export function parseOptions(argv: string[]): NodeOptions {
  const program = buildProgram()
  try {
    program.parse(argv, { from: 'user' })
  } catch (err) {
    if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.version')) throw err
    if (err instanceof UsageError) throw err
    if (err instanceof CommanderError) throw new UsageError(err.message.replace(/^error: /, ''))
    throw err
  }
  const o = program.opts<Record<string, unknown>>()
  if (o.identity !== undefined && o.generateIdentity !== undefined) {
    throw new UsageError('use either --identity or --generate-identity, not both')
  }
  if (o.ipv4 === false && o.ipv6 === false) throw new UsageError('--no-ipv4 and --no-ipv6 leave no socket to run on')
  return {
    port: o.port as number,
    bootstrap: o.bootstrap as string[],
    network: o.network as number,
    ...(o.identity !== undefined ? { identity: o.identity as string } : {}),
    ...(o.generateIdentity !== undefined ? { generateIdentity: o.generateIdentity as string | true } : {}),
    keySize: Number(o.keySize) as 2048 | 3072 | 4096,
    ipv4: o.ipv4 === true ? undefined : (o.ipv4 as string | false | undefined),
    ipv6: o.ipv6 === true ? undefined : (o.ipv6 as string | false | undefined),
    discovery: o.discovery !== false,
    verbose: o.verbose === true,
    ...(o.persist !== undefined ? { persist: o.persist as string } : {}),
    rateLimit: o.rateLimit !== false,
  }
}
