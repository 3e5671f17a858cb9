/**
 * The command-line flags every tool shares (DHTNet's `-b -t -u -w -r -c -p -d -a -v -h` plus `--verbose -q
 * --timeout --no-upnp --bind`), and how they combine with the YAML keys into the options of the node: a flag wins
 * over the YAML key, the key over the default (DHTNet's precedence). Every problem is a UsageError naming the flag
 * or key.
 */
import { isIP } from 'node:net'
import { basename } from 'node:path'
import { Option, type Command } from 'commander'
import {
  PUBLIC_BOOTSTRAP_NODES,
  TRANSPORT_POLICIES,
  TURN_TRANSPORTS,
  isDhtnetError,
  parsePeerId,
  type ParsedPeerId,
  type TransportPolicy,
  type TurnTransportChoice,
} from '@dhtnet/core'
import type { CommonConfig } from './config.js'
import { UsageError } from './errors.js'
import type { Verbosity } from './log.js'

/** The shared flags as parsed (strings as typed; checks happen in resolveCommonOptions). */
export interface CommonArgs {
  readonly bootstrap: string[]
  readonly turnHost?: string
  readonly turnUser?: string
  readonly turnPass?: string
  readonly turnRealm?: string
  readonly turnTransport?: string
  readonly certificate?: string
  readonly privateKey?: string
  readonly configuration?: string
  readonly anonymous: boolean
  /** Count of -v: 1 prints the version, 2 (-vv) means verbose, as in DHTNet's dnc. */
  readonly versionCount: number
  readonly verbose: boolean
  readonly quiet: boolean
  readonly timeout?: string
  readonly upnp?: boolean
  readonly bind?: string
  readonly transport?: string
}

export interface TurnOptions {
  readonly host: string
  readonly user?: string
  readonly pass?: string
  readonly realm?: string
  /** udp: WebRTC's UDP relay only; tcp / tls: ICE-TCP's TCP relay only, over TCP or TLS; not set: both. */
  readonly transport?: TurnTransportChoice
}

/** The node options every tool resolves the same way. */
export interface CommonOptions {
  readonly verbosity: Verbosity
  readonly bootstrap: string[]
  /** LAN discovery (multicast): on with the default public bootstrap and when no bootstrap is used. */
  readonly discovery: boolean
  readonly turn?: TurnOptions
  readonly upnp: boolean
  /** Which transports connections may use (--transport / `transport`): auto (both, racing), tcp, webrtc. */
  readonly transport: TransportPolicy
  /** Both or neither: without them the default identity (~/.dhtnet) is used or created. */
  readonly identityFiles?: { readonly certificate: string; readonly privateKey: string }
  readonly configPath?: string
  /** How the configuration was found, for the verbose log. */
  readonly configSource?: 'flag' | 'default'
  readonly unknownConfigKeys: string[]
  /** Local address for the DHT and ICE sockets (--bind). */
  readonly bindAddress?: string
  /** Client: the one deadline for joining the DHT and connecting (--timeout / `timeout`). */
  readonly timeoutMs: number
}

export const DEFAULT_TIMEOUT_S = 30

export function collectList(value: string, previous: string[]): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  ]
}

function count(_value: string | undefined, previous: number): number {
  return previous + 1
}

/** `-v, --version` counted (-vv: verbose, as in DHTNet). Add it first, as the tools list it. */
export function versionOption(): Option {
  return new Option('-v, --version', 'print the version and exit (-vv: verbose, as in DHTNet)').argParser(count).default(0)
}

/** The network and identity flags (DHTNet's) in the order the tools' help lists them. */
export function networkOptions(): Option[] {
  return [
    new Option('-b, --bootstrap <host[:port]>', 'DHT bootstrap node (repeatable, or comma separated; default port 4222); "none": LAN discovery only')
      .argParser(collectList)
      .default([], 'the public OpenDHT network plus LAN discovery'),
    new Option('-t, --turn_host <address>', 'TURN server (enables TURN)'),
    new Option('-u, --turn_user <user>', 'TURN user name'),
    new Option('-w, --turn_pass <secret>', 'TURN password'),
    new Option('-r, --turn_realm <realm>', 'TURN realm'),
    new Option('--turn_transport <udp|tcp|tls>', 'how to use the TURN server: udp (WebRTC relay), tcp or tls (ICE-TCP relay over TCP or TLS); default: both UDP and TCP'),
    new Option('-c, --certificate <file>', 'identity certificate (PEM chain)'),
    new Option('-p, --privateKey <file>', 'identity private key (PEM)'),
    new Option('-d, --configuration <file>', 'YAML configuration file'),
  ]
}

/** `-a, --anonymous` with the tool's own words for what the server then accepts. */
export function anonymousOption(description = 'server: accept devices whose certificate comes from any CA'): Option {
  return new Option('-a, --anonymous', description).default(false)
}

/** The flags after the tool's own: --no-upnp, --bind, --verbose, -q, --timeout. */
export function runOptions(): Option[] {
  return [
    new Option('--no-upnp', 'do not map a port with UPnP'),
    new Option('--bind <address>', 'bind the DHT and ICE sockets to this local address only (e.g. 127.0.0.1)'),
    new Option(
      '--transport <policy>',
      "auto: ICE-TCP + TLS and WebRTC, the first path up wins; tcp: ICE-TCP + TLS only (DHTNet's, the only one C++ devices speak); webrtc: UDP only",
    ).default(undefined, 'auto'),
    new Option('--verbose', 'print progress messages on stderr').default(false),
    new Option('-q, --quiet', 'print errors only').default(false),
    new Option('--timeout <seconds>', 'client: give up connecting after this many seconds (default 30)'),
  ]
}

export function addOptions(program: Command, options: readonly Option[]): Command {
  for (const o of options) program.addOption(o)
  return program
}

/** The shared flags out of commander's parsed values. */
export function readCommonArgs(program: Command): CommonArgs {
  const o = program.opts<Record<string, unknown>>()
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? o[k] : undefined)
  return {
    bootstrap: Array.isArray(o.bootstrap) ? (o.bootstrap as string[]) : [],
    ...pickDefined('turnHost', str('turn_host')),
    ...pickDefined('turnUser', str('turn_user')),
    ...pickDefined('turnPass', str('turn_pass')),
    ...pickDefined('turnRealm', str('turn_realm')),
    ...pickDefined('turnTransport', str('turn_transport')),
    ...pickDefined('certificate', str('certificate')),
    ...pickDefined('privateKey', str('privateKey')),
    ...pickDefined('configuration', str('configuration')),
    anonymous: o.anonymous === true,
    versionCount: typeof o.version === 'number' ? o.version : 0,
    verbose: o.verbose === true,
    quiet: o.quiet === true,
    ...pickDefined('timeout', str('timeout')),
    ...pickDefined('bind', str('bind')),
    ...pickDefined('transport', str('transport')),
    ...(program.getOptionValueSource('upnp') === 'cli' ? { upnp: o.upnp === true } : {}),
  }
}

/** Flags + YAML (+ defaults) → the options every tool's node takes. */
export function resolveCommonOptions(args: CommonArgs, config: CommonConfig | undefined, configSource: 'flag' | 'default' | undefined): CommonOptions {
  if (args.verbose && args.quiet) throw new UsageError('--verbose and --quiet contradict each other', 'pick one')
  const c: Partial<CommonConfig> = config ?? {}
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
        ...pickTruthy('user', args.turnUser ?? c.turn_user),
        ...pickTruthy('pass', args.turnPass ?? c.turn_pass),
        ...pickTruthy('realm', args.turnRealm ?? c.turn_realm),
        ...pickDefined('transport', checkTurnTransport(args.turnTransport ?? c.turn_transport)),
      }
    : undefined
  if (!turnHost && (args.turnUser || args.turnPass || args.turnRealm || args.turnTransport)) {
    throw new UsageError('-u/-w/-r/--turn_transport give TURN settings but no TURN server was named', 'add -t <turn-host>')
  }

  const certificate = args.certificate ?? c.certificate
  const privateKey = args.privateKey ?? c.privateKey
  if ((certificate === undefined) !== (privateKey === undefined)) {
    const [given, missing] = certificate ? ['-c/certificate', '-p/privateKey'] : ['-p/privateKey', '-c/certificate']
    throw new UsageError(`${given} was given without ${missing}: an identity needs both files`, 'give both, or neither to use ~/.dhtnet')
  }

  return {
    verbosity,
    bootstrap,
    discovery,
    ...(turn ? { turn } : {}),
    upnp: args.upnp ?? c.enable_upnp ?? true,
    transport: checkTransport(args.transport ?? c.transport),
    ...(certificate && privateKey ? { identityFiles: { certificate, privateKey } } : {}),
    ...(config ? { configPath: config.path, configSource: configSource ?? 'flag' } : {}),
    unknownConfigKeys: config?.unknownKeys ?? [],
    ...(args.bind !== undefined ? { bindAddress: checkBind(args.bind) } : {}),
    timeoutMs: Math.round(parseTimeout(args.timeout, c.timeout) * 1000),
  }
}

/** --transport / `transport`: one of the policies (default auto). */
export function checkTransport(value: string | undefined): TransportPolicy {
  if (value === undefined) return 'auto'
  if ((TRANSPORT_POLICIES as readonly string[]).includes(value)) return value as TransportPolicy
  throw new UsageError(`--transport must be one of ${TRANSPORT_POLICIES.join(', ')}, got "${value}"`, 'auto is the default: both transports race')
}

/** --turn_transport / `turn_transport`: udp, tcp or tls (undefined: both UDP and TCP relays). */
export function checkTurnTransport(value: string | undefined): TurnTransportChoice | undefined {
  if (value === undefined) return undefined
  if ((TURN_TRANSPORTS as readonly string[]).includes(value)) return value as TurnTransportChoice
  throw new UsageError(
    `--turn_transport must be one of ${TURN_TRANSPORTS.join(', ')}, got "${value.slice(0, 16)}"`,
    'without it one TURN server serves both the UDP relay (WebRTC) and the TCP relay (ICE-TCP)',
  )
}

/** --timeout in seconds (flag wins over the YAML `timeout`), 0 < t <= 86400. */
export function parseTimeout(flag: string | undefined, fromConfig: number | undefined, defaultSeconds = DEFAULT_TIMEOUT_S): number {
  if (flag === undefined) return fromConfig ?? defaultSeconds
  const seconds = Number(flag)
  if (!/^\d+(\.\d+)?$/.test(flag.trim()) || !(seconds > 0) || seconds > 86400) {
    throw new UsageError(`--timeout must be a number of seconds between 0 and 86400, got "${flag}"`)
  }
  return seconds
}

/** A peer id as typed: 40/64 hex, or `<tool>/<id>` (ssh's %h for a `Host dnc/*` entry): the basename is used. */
export function parsePeer(text: string): ParsedPeerId {
  const candidate = text.includes('/') ? basename(text) : text
  try {
    return parsePeerId(candidate)
  } catch (err) {
    if (isDhtnetError(err)) throw new UsageError(err.message, err.hint)
    throw err
  }
}

export function checkBootstrap(text: string): void {
  const fail = (): never => {
    throw new UsageError(`bootstrap "${text}" is not host[:port]`, 'for example -b 127.0.0.1:4222, -b [::1]:4222 or -b bootstrap.sfl.io')
  }
  if (isIP(text) === 6) return // a bare IPv6 address, default port
  const m = /^(?:\[([^\]]+)\]|([^:\s[\]]+))(?::(\d+))?$/.exec(text)
  if (!m) return fail()
  if (m[1] !== undefined && isIP(m[1]) !== 6) return fail()
  if (m[3] !== undefined && (Number(m[3]) < 1 || Number(m[3]) > 65535)) return fail()
}

export function checkBind(text: string): string {
  const a = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  if (isIP(a) === 0) throw new UsageError(`--bind: "${text}" is not an IPv4 or IPv6 address`, 'for example --bind 127.0.0.1')
  return a
}

export function pickDefined<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V }
}

function pickTruthy<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value ? { [key]: value } : {}) as { [P in K]?: string }
}
