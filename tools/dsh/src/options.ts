/**
 * dsh's options: the shared ones (@dhtnet/cli-kit: flags win over the YAML, the YAML over the defaults), then dsh's
 * own: the program and its arguments, -e, -T/-t, --raw (client); authorized_peers, authorized_binaries, accept_env
 * (server). Every problem is a UsageError naming the flag or key.
 */
import { homedir } from 'node:os'
import { parsePeerId, type ParsedPeerId } from '@dhtnet/core'
import {
  COMMON_KEYS,
  UsageError,
  defaultConfigPathsFor,
  loadConfig,
  parseConfigText,
  parsePeer,
  readConfigFile as readWithSchema,
  resolveCommonOptions,
  stringKey,
  stringListKey,
  type CommonConfig,
  type CommonOptions,
  type ConfigSchema,
} from '@dhtnet/cli-kit'
import type { ParsedArgs } from './cli.js'
import { LIMITS } from './protocol.js'

export interface DshConfig extends CommonConfig {
  /** Client: the program to run (DHTNet's key). */
  readonly binary?: string
  readonly authorized_peers?: string[]
  readonly authorized_binaries?: string[]
  readonly accept_env?: string[]
}

export const DSH_CONFIG_KEYS: ConfigSchema = {
  ...COMMON_KEYS,
  binary: stringKey,
  authorized_peers: stringListKey(200),
  authorized_binaries: stringListKey(LIMITS.binaryBytes),
  accept_env: stringListKey(LIMITS.envNameBytes),
}

export function defaultConfigPaths(home: string = homedir()): string[] {
  return defaultConfigPathsFor('dsh', home)
}

export async function readConfigFile(path: string): Promise<DshConfig> {
  return await readWithSchema(path, DSH_CONFIG_KEYS)
}

export function parseConfig(text: string, path: string): DshConfig {
  return parseConfigText(text, path, DSH_CONFIG_KEYS)
}

/** What a server passes on from a client's -e by default (as OpenSSH's AcceptEnv on Debian). */
export const DEFAULT_ACCEPT_ENV = ['LANG', 'LC_*']

export interface ServerOptions extends CommonOptions {
  readonly mode: 'server'
  readonly anonymous: boolean
  /** Ids (40/64 hex, lowercase) accepted whatever their CA. */
  readonly allowedPeers: string[]
  /** undefined: the login shell of the server's user. */
  readonly binaries: string[] | undefined
  readonly acceptEnv: string[]
}

export type PtyMode = 'auto' | 'force' | 'never'

export interface ClientOptions extends CommonOptions {
  readonly mode: 'client'
  readonly peer: ParsedPeerId
  /** '' = the server's default program (our protocol); for --raw, the channel name. */
  readonly binary: string
  readonly args: string[]
  readonly env: Record<string, string>
  readonly pty: PtyMode
  readonly raw: boolean
}

export type DshOptions = ServerOptions | ClientOptions

/** DHTNet's raw protocol needs a channel name: its shipped dsh.yaml runs bash. */
export const RAW_DEFAULT_BINARY = 'bash'

export async function resolveOptions(args: ParsedArgs, env: { home?: string } = {}): Promise<DshOptions> {
  let peer: ParsedPeerId | undefined
  if (!args.listen) {
    if (args.peer === undefined) {
      throw new UsageError(
        'missing PEER_ID: the id of the device to reach',
        'run dsh <peer-id> [-- command args...] (40 or 64 hex characters), or dsh -l for the server; dsh --help lists the options',
      )
    }
    peer = parsePeer(args.peer)
  } else if (args.peer !== undefined) {
    throw new UsageError(`dsh -l takes no PEER_ID (got "${args.peer}")`, 'the server accepts sessions; run dsh <peer-id> on the client')
  }
  const { config, source } = await loadConfig<DshConfig>(args.configuration, defaultConfigPaths(env.home), readConfigFile)
  const c: Partial<DshConfig> = config ?? {}
  const common = resolveCommonOptions(args, config, source)

  if (args.listen) {
    for (const [flag, given] of [
      ['-e/--env', args.env.length > 0],
      ['-T/-t', args.pty !== 'auto'],
      ['--raw', args.raw],
      ['a command', args.command.length > 0],
    ] as const) {
      if (given) throw new UsageError(`${flag} is a client option and cannot be used with -l`)
    }
    const allowedPeers = (c.authorized_peers ?? []).map((text, i) => {
      try {
        return parsePeerId(text).hex
      } catch {
        throw new UsageError(
          `${c.path}: authorized_peers[${i}] must be a 40- or 64-hex device id, got ${JSON.stringify(text)}`,
          'print a device id with: dhtnet-crtmgr -a -c <certificate>',
        )
      }
    })
    for (const [i, b] of (c.authorized_binaries ?? []).entries()) {
      if (!b.startsWith('/') && b.includes('/')) throw new UsageError(`${c.path}: authorized_binaries[${i}] must be a program name or an absolute path, got ${JSON.stringify(b)}`)
    }
    return {
      ...common,
      mode: 'server',
      anonymous: args.anonymous || c.anonymous === true,
      allowedPeers,
      binaries: c.authorized_binaries,
      acceptEnv: c.accept_env ?? DEFAULT_ACCEPT_ENV,
    }
  }

  if (args.anonymous) throw new UsageError('-a/--anonymous is a server option: use it with -l')
  const envVars: Record<string, string> = {}
  for (const e of args.env) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(e)
    if (!m || m[1]!.length > LIMITS.envNameBytes) throw new UsageError(`-e: "${e}" is not KEY=VALUE`, 'for example -e LANG=C.UTF-8')
    envVars[m[1]!] = m[2]!
  }
  // the program: -s/--binary (or YAML `binary`) then the command's words as arguments; else the command's first word
  const binaryFlag = args.binary ?? c.binary
  let binary: string
  let cmdArgs: string[]
  if (binaryFlag !== undefined) {
    binary = binaryFlag
    cmdArgs = [...args.command]
  } else if (args.command.length > 0) {
    binary = args.command[0]!
    cmdArgs = args.command.slice(1)
  } else {
    binary = ''
    cmdArgs = []
  }
  if (args.raw) {
    if (cmdArgs.length > 0) throw new UsageError("--raw runs a program without arguments (DHTNet's protocol has none)", `drop the arguments, or leave out --raw`)
    if (binary === '') binary = RAW_DEFAULT_BINARY
  }
  if (args.pty === 'force' && args.raw) throw new UsageError("-t: DHTNet's raw protocol has no pty", 'leave out --raw or -t')
  return {
    ...common,
    mode: 'client',
    peer: peer!,
    binary,
    args: cmdArgs,
    env: envVars,
    pty: args.pty,
    raw: args.raw,
  }
}
