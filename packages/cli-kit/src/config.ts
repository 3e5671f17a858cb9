/**
 * YAML configuration files of the tools. DHTNet's keys common to every tool (`bootstrap`, `turn_*`, `certificate`,
 * `privateKey`, `verbose`, `enable_upnp`, `anonymous`) plus `timeout` and `turn_transport`; each tool adds its own keys with the same
 * checkers. Every key is checked for its type and a wrong one is a usage error that names the file and the key.
 * Unknown keys are reported (a typo must not silently do nothing) but do not stop the tool.
 */
import { access, readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { createRequire } from 'node:module'
import { UsageError } from './errors.js'

/** Checks one key's value (never null/undefined: absent keys are skipped); returns what to store, or undefined. */
export type KeyChecker = (value: unknown, where: KeyContext) => unknown

export interface KeyContext {
  /** Absolute path of the file. */
  readonly path: string
  readonly key: string
  /** "<path>: `key` must be <expected>, got <value>" as a UsageError. */
  bad(expected: string, value: unknown): UsageError
}

export type ConfigSchema = Readonly<Record<string, KeyChecker>>

/** A parsed file: the checked keys, where it came from, and the keys the tool does not know. */
export interface ParsedConfig {
  readonly path: string
  readonly unknownKeys: string[]
  readonly [key: string]: unknown
}

// --- checkers -------------------------------------------------------------------------------------------------

export const stringKey: KeyChecker = (v, c) => {
  if (typeof v !== 'string') throw c.bad('a string', v)
  return v === '' ? undefined : v
}

/** A file path; relative to the configuration file's folder, `~/` expanded. */
export const pathKey: KeyChecker = (v, c) => {
  const s = stringKey(v, c) as string | undefined
  return s === undefined ? undefined : resolveConfigPath(s, c.path)
}

export const boolKey: KeyChecker = (v, c) => {
  if (typeof v !== 'boolean') throw c.bad('true or false', v)
  return v
}

export const portKey: KeyChecker = (v, c) => checkPort(v, `${c.path}: \`${c.key}\``)

/** Seconds, 0 < t <= 86400. */
export const secondsKey: KeyChecker = (v, c) => {
  if (typeof v !== 'number' || !(v > 0) || v > 86400) throw c.bad('a number of seconds between 0 and 86400', v)
  return v
}

/** `host[:port]` string or a list of them (comma-separated entries split). */
export const bootstrapKey: KeyChecker = (v, c) => {
  const list = typeof v === 'string' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null
  if (!list) throw c.bad('a host[:port] string or a list of them', v)
  return list
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '')
}

/** A list of non-empty strings (a single string is a list of one), each at most `maxLength` characters. */
export function stringListKey(maxLength = 4096): KeyChecker {
  return (v, c) => {
    const list = typeof v === 'string' ? [v] : Array.isArray(v) ? v : null
    if (!list || !list.every((x) => typeof x === 'string' && x.trim() !== '' && x.length <= maxLength)) {
      throw c.bad(`a list of non-empty strings`, v)
    }
    return (list as string[]).map((s) => s.trim())
  }
}

/** The keys every tool reads (DHTNet's common keys plus `timeout`). */
export const COMMON_KEYS: ConfigSchema = {
  bootstrap: bootstrapKey,
  turn_host: stringKey,
  turn_user: stringKey,
  turn_pass: stringKey,
  turn_realm: stringKey,
  turn_transport: stringKey,
  certificate: pathKey,
  privateKey: pathKey,
  verbose: boolKey,
  enable_upnp: boolKey,
  transport: stringKey,
  anonymous: boolKey,
  timeout: secondsKey,
}

/** What COMMON_KEYS produce. */
export interface CommonConfig {
  readonly path: string
  readonly unknownKeys: string[]
  readonly bootstrap?: string[]
  readonly turn_host?: string
  readonly turn_user?: string
  readonly turn_pass?: string
  readonly turn_realm?: string
  /** udp | tcp | tls */
  readonly turn_transport?: string
  readonly certificate?: string
  readonly privateKey?: string
  readonly verbose?: boolean
  readonly enable_upnp?: boolean
  /** auto | tcp | webrtc */
  readonly transport?: string
  readonly anonymous?: boolean
  /** Seconds (client): how long to try before giving up. */
  readonly timeout?: number
}

// --- reading ----------------------------------------------------------------------------------------------------

// loaded on first use: the yaml package costs ~40 ms of start-up, which a run without a configuration file saves
const require = createRequire(import.meta.url)

/** Parses and checks a configuration against `schema`; relative paths in it are relative to the file's folder. */
export function parseConfigText(text: string, path: string, schema: ConfigSchema): ParsedConfig {
  const yaml = require('yaml') as typeof import('yaml')
  const doc = yaml.parseDocument(text, { uniqueKeys: true, prettyErrors: true })
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!
    throw new UsageError(`${path} is not valid YAML: ${e.message.split('\n')[0]}`, 'fix the file, or give another one with -d')
  }
  const raw: unknown = doc.toJS() ?? {}
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new UsageError(`${path} must be a YAML mapping of keys (bootstrap: ..., port: ...)`)
  }
  const obj = raw as Record<string, unknown>
  const out: Record<string, unknown> = { path, unknownKeys: Object.keys(obj).filter((k) => !Object.hasOwn(schema, k)) }
  for (const [key, check] of Object.entries(schema)) {
    const value = obj[key]
    if (value === undefined || value === null) continue
    const context: KeyContext = {
      path,
      key,
      bad: (expected, got) => new UsageError(`${path}: \`${key}\` must be ${expected}, got ${JSON.stringify(got)}`),
    }
    const checked = check(value, context)
    if (checked !== undefined) out[key] = checked
  }
  return out as ParsedConfig
}

/** Reads and checks a configuration file; an unreadable file is a usage error with the reason. */
export async function readConfigFile(path: string, schema: ConfigSchema): Promise<ParsedConfig> {
  const abs = resolve(path)
  let text: string
  try {
    text = await readFile(abs, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a folder' : (err as Error).message
    throw new UsageError(`cannot read configuration file ${abs}: ${why}`, 'check the path given to -d, or run dhtnet-crtmgr --interactive to create one')
  }
  return parseConfigText(text, abs, schema)
}

/** The first of `paths` that exists, if any. */
export async function findFirstExisting(paths: readonly string[]): Promise<string | undefined> {
  for (const p of paths) {
    if (
      await access(p).then(
        () => true,
        () => false,
      )
    )
      return p
  }
  return undefined
}

/** Where a tool looks for a configuration when no -d is given, in order: ~/.<tool>/config.yml, /etc/dhtnet/<tool>.yaml. */
export function defaultConfigPathsFor(tool: string, home: string = homedir()): string[] {
  return [join(home, `.${tool}`, 'config.yml'), `/etc/dhtnet/${tool}.yaml`]
}

/**
 * The configuration a run uses: the file of -d, else the first default location that exists, else none.
 * `source` says which (for the verbose log).
 */
export async function loadConfig<T extends { readonly path: string }>(
  flagPath: string | undefined,
  defaults: readonly string[],
  read: (path: string) => Promise<T>,
): Promise<{ config: T | undefined; source: 'flag' | 'default' | undefined }> {
  if (flagPath !== undefined) return { config: await read(flagPath), source: 'flag' }
  const found = await findFirstExisting(defaults)
  return found ? { config: await read(found), source: 'default' } : { config: undefined, source: undefined }
}

/** A TCP port 1..65535 given as a number or a string of digits. */
export function checkPort(value: unknown, what: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : NaN
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new UsageError(`${what} must be a port number from 1 to 65535, got ${JSON.stringify(value)}`)
  }
  return n
}

export function resolveConfigPath(p: string, configPath: string): string {
  if (p === '~' || p.startsWith('~/')) return join(homedir(), p.slice(1))
  return isAbsolute(p) ? p : resolve(dirname(configPath), p)
}
