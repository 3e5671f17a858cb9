/**
 * Turns the command line and the YAML file into one set of options. A command-line value wins over the file; the
 * file wins over the defaults (DHTNet's precedence). Every problem is a UsageError naming the flag or key.
 */
import { isIP } from 'node:net'
import { basename } from 'node:path'
import { PUBLIC_BOOTSTRAP_NODES, parsePeerId, type ParsedPeerId, isDhtnetError } from '@dhtnet/core'
import type { ParsedArgs } from '../cli.js'
import { UsageError } from '../errors.js'
import type { Verbosity } from '../log.js'
import { checkPort, findDefaultConfig, readConfigFile, type DncConfig, type ServiceEntry } from './config.js'

export interface TurnOptions {
  readonly host: string
  readonly user?: string
  readonly pass?: string
  readonly realm?: string
}

export interface CommonOptions {
  readonly verbosity: Verbosity
  readonly bootstrap: string[]
  /** LAN discovery (multicast): on with the default public bootstrap and when no bootstrap is used. */
  readonly discovery: boolean
  readonly turn?: TurnOptions
  readonly upnp: boolean
  /** Both or neither: without them the default identity (~/.dhtnet) is used or created. */
  readonly identityFiles?: { readonly certificate: string; readonly privateKey: string }
  readonly configPath?: string
  /** How the configuration was found, for the verbose log. */
  readonly configSource?: 'flag' | 'default'
  readonly unknownConfigKeys: string[]
  /** Local address for the DHT and ICE sockets (--bind). */
  readonly bindAddress?: string
}

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
  readonly timeoutMs: number
  /** -L: listen here and forward each connection. */
  readonly localForward?: { readonly host: string; readonly port: number }
}

export type DncOptions = ServerOptions | ClientOptions

export const DEFAULT_PORT = 22
export const DEFAULT_HOST = '127.0.0.1'
export const DEFAULT_TIMEOUT_S = 30

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

  let config: DncConfig | undefined
  let configSource: 'flag' | 'default' | undefined
  if (args.configuration !== undefined) {
    config = await readConfigFile(args.configuration)
    configSource = 'flag'
  } else {
    const found = await findDefaultConfig(env.home)
    if (found) {
      config = await readConfigFile(found)
      configSource = 'default'
    }
  }
  const c: Partial<DncConfig> = config ?? {}

  const verbosity: Verbosity = args.quiet ? 'quiet' : args.verbose || args.versionCount >= 2 || c.verbose === true ? 'verbose' : 'normal'
  // no bootstrap configured: the public OpenDHT network plus LAN discovery; `-b none` (or `bootstrap: []`): LAN only
  const configured = args.bootstrap.length > 0 ? args.bootstrap : c.bootstrap
  const bootstrap = configured === undefined ? [...PUBLIC_BOOTSTRAP_NODES] : configured.filter((b) => b !== 'none')
  const discovery = configured === undefined || bootstrap.length === 0
  for (const b of bootstrap) checkBootstrap(b)

  const turnHost = args.turnHost ?? c.turn_host
  const turn: TurnOptions | undefined = turnHost
    ? {
        host: turnHost,
        ...pick('user', args.turnUser ?? c.turn_user),
        ...pick('pass', args.turnPass ?? c.turn_pass),
        ...pick('realm', args.turnRealm ?? c.turn_realm),
      }
    : undefined
  if (!turnHost && (args.turnUser || args.turnPass || args.turnRealm)) {
    throw new UsageError('-u/-w/-r give TURN credentials but no TURN server was named', 'add -t <turn-host>')
  }

  const certificate = args.certificate ?? c.certificate
  const privateKey = args.privateKey ?? c.privateKey
  if ((certificate === undefined) !== (privateKey === undefined)) {
    const [given, missing] = certificate ? ['-c/certificate', '-p/privateKey'] : ['-p/privateKey', '-c/certificate']
    throw new UsageError(`${given} was given without ${missing}: an identity needs both files`, 'give both, or neither to use ~/.dhtnet')
  }

  const common: CommonOptions = {
    verbosity,
    bootstrap,
    discovery,
    ...(turn ? { turn } : {}),
    upnp: args.upnp ?? c.enable_upnp ?? true,
    ...(certificate && privateKey ? { identityFiles: { certificate, privateKey } } : {}),
    ...(config ? { configPath: config.path, configSource: configSource! } : {}),
    unknownConfigKeys: config?.unknownKeys ?? [],
    ...(args.bind !== undefined ? { bindAddress: checkBind(args.bind) } : {}),
  }

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
  let timeoutS = c.timeout ?? DEFAULT_TIMEOUT_S
  if (args.timeout !== undefined) {
    timeoutS = Number(args.timeout)
    if (!/^\d+(\.\d+)?$/.test(args.timeout.trim()) || !(timeoutS > 0) || timeoutS > 86400) {
      throw new UsageError(`--timeout must be a number of seconds between 0 and 86400, got "${args.timeout}"`)
    }
  }
  return {
    ...common,
    mode: 'client',
    peer: peer!,
    host,
    port,
    timeoutMs: Math.round(timeoutS * 1000),
    ...(args.localForward !== undefined ? { localForward: parseLocalForward(args.localForward) } : {}),
  }
}

/** A peer id as typed: 40/64 hex, or `dnc/<id>` (ssh's %h for a `Host dnc/*` entry): the basename is used. */
export function parsePeer(text: string): ParsedPeerId {
  const candidate = text.includes('/') ? basename(text) : text
  try {
    return parsePeerId(candidate)
  } catch (err) {
    if (isDhtnetError(err)) throw new UsageError(err.message, err.hint)
    throw err
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
  const m = /^(?:(\[[^\]]+\]|[^\s\[\]]+):)?(\d+)$/.exec(text.trim())
  if (!m) throw new UsageError(`--allow: "${text}" is not [host:]port`, 'for example --allow 22 or --allow [::1]:22')
  let ip = m[1] ?? '127.0.0.1'
  if (ip.startsWith('[')) ip = ip.slice(1, -1)
  return { ip, port: checkPort(m[2], '--allow port') }
}

function checkBootstrap(text: string): void {
  const fail = (): never => {
    throw new UsageError(`bootstrap "${text}" is not host[:port]`, 'for example -b 127.0.0.1:4222, -b [::1]:4222 or -b bootstrap.sfl.io')
  }
  if (isIP(text) === 6) return // a bare IPv6 address, default port
  const m = /^(?:\[([^\]]+)\]|([^:\s[\]]+))(?::(\d+))?$/.exec(text)
  if (!m) return fail()
  if (m[1] !== undefined && isIP(m[1]) !== 6) return fail()
  if (m[3] !== undefined && (Number(m[3]) < 1 || Number(m[3]) > 65535)) return fail()
}

function checkBind(text: string): string {
  const a = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  if (isIP(a) === 0) throw new UsageError(`--bind: "${text}" is not an IPv4 or IPv6 address`, 'for example --bind 127.0.0.1')
  return a
}

function pick<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value ? { [key]: value } : {}) as { [P in K]?: string }
}
