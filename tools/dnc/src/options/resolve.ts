/**
 * Turns the command line and the YAML file into one set of options: the shared ones through @dhtnet/cli-kit
 * (a flag wins over the file, the file over the defaults: DHTNet's precedence), then dnc's own (-P, -i, -L,
 * --allow, authorized_services). Every problem is a UsageError naming the flag or key.
 */
import type { ParsedPeerId } from '@dhtnet/core'
import { loadConfig, parsePeer, resolveCommonOptions, UsageError, type CommonOptions } from '@dhtnet/cli-kit'
import type { ParsedArgs } from '../cli.js'
import { checkPort, defaultConfigPaths, readConfigFile, type DncConfig, type ServiceEntry } from './config.js'

export type { CommonOptions } from '@dhtnet/cli-kit'
export { parsePeer }

export interface ServerOptions extends CommonOptions {
  readonly mode: 'server'
  readonly anonymous: boolean
  readonly services: ServiceEntry[]
  readonly allowAllServices: boolean
}

export interface ClientOptions extends CommonOptions {
  readonly mode: 'client'
  readonly peer: ParsedPeerId
  /** Host and port the server should connect to. */
  readonly host: string
  readonly port: number
  /** -L: listen here and forward each connection. */
  readonly localForward?: { readonly host: string; readonly port: number }
}

export type DncOptions = ServerOptions | ClientOptions

export const DEFAULT_PORT = 22
export const DEFAULT_HOST = '127.0.0.1'

export async function resolveOptions(args: ParsedArgs, env: { home?: string } = {}): Promise<DncOptions> {
  // the peer id first, as DHTNet does: a missing one should not wait for a config file
  let peer: ParsedPeerId | undefined
  if (!args.listen) {
    if (args.peer === undefined) {
      throw new UsageError('missing PEER_ID: the id of the device to reach', 'run dnc <peer-id> (40 or 64 hex characters), or dnc -l for the server; dnc --help lists the options')
    }
    peer = parsePeer(args.peer)
  } else if (args.peer !== undefined) {
    throw new UsageError(`dnc -l takes no PEER_ID (got "${args.peer}")`, 'the server accepts connections; run dnc <peer-id> on the client')
  }
  if (args.extraArgs.length > 0) {
    throw new UsageError(`unexpected argument${args.extraArgs.length > 1 ? 's' : ''}: ${args.extraArgs.join(' ')}`, 'dnc takes one PEER_ID; options go before or after it')
  }
  if (args.verbose && args.quiet) throw new UsageError('--verbose and --quiet contradict each other', 'pick one')

  const { config, source } = await loadConfig<DncConfig>(args.configuration, defaultConfigPaths(env.home), readConfigFile)
  const c: Partial<DncConfig> = config ?? {}
  const common = resolveCommonOptions(args, config, source)

  if (args.listen) {
    if (args.localForward !== undefined) throw new UsageError('-L is a client option and cannot be used with -l')
    const fromFlags = args.allow.map(parseAllow)
    return {
      ...common,
      mode: 'server',
      anonymous: args.anonymous || c.anonymous === true,
      services: [...(c.authorized_services ?? []), ...fromFlags],
      allowAllServices: c.allow_all_services === true,
    }
  }

  if (args.allow.length > 0) throw new UsageError('--allow is a server option: use it with -l')
  const port = args.port !== undefined ? checkPort(args.port, '-P/--port') : (c.port ?? DEFAULT_PORT)
  const hostText = args.ip ?? c.ip ?? DEFAULT_HOST
  const host = hostText.startsWith('[') && hostText.endsWith(']') ? hostText.slice(1, -1) : hostText
  if (host === '' || /[\s/]/.test(host)) throw new UsageError(`-i/--ip: "${hostText}" is not an address or host name`)
  return {
    ...common,
    mode: 'client',
    peer: peer!,
    host,
    port,
    ...(args.localForward !== undefined ? { localForward: parseLocalForward(args.localForward) } : {}),
  }
}

/** `-L [bind:]port`: default bind 127.0.0.1; `[::1]:8080` and `*:8080` (all interfaces) accepted. */
export function parseLocalForward(text: string): { host: string; port: number } {
  const m = /^(?:(\[[^\]]+\]|[^:]+|\*):)?(\d+)$/.exec(text.trim())
  if (!m) throw new UsageError(`-L: "${text}" is not [bind_address:]port`, 'for example -L 8080 or -L 127.0.0.1:8080')
  let host = m[1] ?? '127.0.0.1'
  if (host.startsWith('[')) host = host.slice(1, -1)
  if (host === '*') host = '0.0.0.0'
  const port = Number(m[2])
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`-L: port must be 0..65535, got ${m[2]}`)
  return { host, port }
}

/** `--allow [host:]port`. */
export function parseAllow(text: string): ServiceEntry {
  const m = /^(?:(\[[^\]]+\]|[^\s[\]]+):)?(\d+)$/.exec(text.trim())
  if (!m) throw new UsageError(`--allow: "${text}" is not [host:]port`, 'for example --allow 22 or --allow [::1]:22')
  let ip = m[1] ?? '127.0.0.1'
  if (ip.startsWith('[')) ip = ip.slice(1, -1)
  return { ip, port: checkPort(m[2], '--allow port') }
}
