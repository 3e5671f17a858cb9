/**
 * dnc's YAML configuration: DHTNet's keys (tools/dnc/dnc.yaml) plus `allow_all_services` and `timeout`.
 * Read with the `yaml` package; every key is checked for its type and a wrong one is a usage error that names the
 * file and the key. Unknown keys are reported (a typo must not silently do nothing) but do not stop dnc.
 */
import { readFile, access } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { createRequire } from 'node:module'
import { UsageError } from '../errors.js'

export interface ServiceEntry {
  /** IPv4, IPv6 or host name, as written. */
  readonly ip: string
  readonly port: number
}

export interface DncConfig {
  /** Absolute path of the file read. */
  readonly path: string
  readonly bootstrap?: string[]
  readonly turn_host?: string
  readonly turn_user?: string
  readonly turn_pass?: string
  readonly turn_realm?: string
  readonly verbose?: boolean
  readonly enable_upnp?: boolean
  readonly certificate?: string
  readonly privateKey?: string
  readonly ip?: string
  readonly port?: number
  readonly anonymous?: boolean
  readonly authorized_services?: ServiceEntry[]
  readonly allow_all_services?: boolean
  /** Seconds (client): how long to try before giving up. */
  readonly timeout?: number
  /** Keys present in the file that dnc does not know. */
  readonly unknownKeys: string[]
}

const STRING_KEYS = ['turn_host', 'turn_user', 'turn_pass', 'turn_realm', 'ip'] as const
const PATH_KEYS = ['certificate', 'privateKey'] as const
const BOOL_KEYS = ['verbose', 'enable_upnp', 'anonymous', 'allow_all_services'] as const
const KNOWN = new Set<string>([
  ...STRING_KEYS,
  ...PATH_KEYS,
  ...BOOL_KEYS,
  'bootstrap',
  'port',
  'authorized_services',
  'timeout',
])

// loaded on first use: the yaml package costs ~40 ms of start-up, which a run without a configuration file saves
const require = createRequire(import.meta.url)
let yaml: typeof import('yaml') | undefined

/** Where dnc looks for a configuration when no -d is given, in order. */
export function defaultConfigPaths(home: string = homedir()): string[] {
  return [join(home, '.dnc', 'config.yml'), '/etc/dhtnet/dnc.yaml']
}

/** The first default configuration file that exists, if any. */
export async function findDefaultConfig(home?: string): Promise<string | undefined> {
  for (const p of defaultConfigPaths(home)) {
    if (await access(p).then(() => true, () => false)) return p
  }
  return undefined
}

export async function readConfigFile(path: string): Promise<DncConfig> {
  const abs = resolve(path)
  let text: string
  try {
    text = await readFile(abs, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a folder' : (err as Error).message
    throw new UsageError(`cannot read configuration file ${abs}: ${why}`, 'check the path given to -d, or run dhtnet-crtmgr --interactive to create one')
  }
  return parseConfig(text, abs)
}

/** Parses and checks a configuration; relative paths in it are relative to the file's folder. */
export function parseConfig(text: string, path: string): DncConfig {
  yaml ??= require('yaml') as typeof import('yaml')
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
  const bad = (key: string, expected: string, value: unknown): UsageError =>
    new UsageError(`${path}: \`${key}\` must be ${expected}, got ${JSON.stringify(value)}`)
  const out: Record<string, unknown> = { path, unknownKeys: Object.keys(obj).filter((k) => !KNOWN.has(k)) }

  for (const key of [...STRING_KEYS, ...PATH_KEYS]) {
    const v = obj[key]
    if (v === undefined || v === null) continue
    if (typeof v !== 'string') throw bad(key, 'a string', v)
    if (v === '') continue
    out[key] = (PATH_KEYS as readonly string[]).includes(key) ? resolvePath(v, path) : v
  }
  for (const key of BOOL_KEYS) {
    const v = obj[key]
    if (v === undefined || v === null) continue
    if (typeof v !== 'boolean') throw bad(key, 'true or false', v)
    out[key] = v
  }
  if (obj.bootstrap !== undefined && obj.bootstrap !== null) {
    const v = obj.bootstrap
    const list = typeof v === 'string' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : null
    if (!list) throw bad('bootstrap', 'a host[:port] string or a list of them', v)
    out.bootstrap = list.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '')
  }
  if (obj.port !== undefined && obj.port !== null) out.port = checkPort(obj.port, `${path}: \`port\``)
  if (obj.timeout !== undefined && obj.timeout !== null) {
    const t = obj.timeout
    if (typeof t !== 'number' || !(t > 0) || t > 86400) throw bad('timeout', 'a number of seconds between 0 and 86400', t)
    out.timeout = t
  }
  if (obj.authorized_services !== undefined && obj.authorized_services !== null) {
    const list = obj.authorized_services
    if (!Array.isArray(list)) throw bad('authorized_services', 'a list of {ip, port} entries', list)
    out.authorized_services = list.map((entry, i) => {
      const where = `${path}: authorized_services[${i}]`
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw new UsageError(`${where} must be a mapping like {ip: "127.0.0.1", port: 22}, got ${JSON.stringify(entry)}`)
      }
      const e = entry as Record<string, unknown>
      if (typeof e.ip !== 'string' || e.ip.trim() === '') {
        throw new UsageError(`${where}.ip must be an IPv4 or IPv6 address or a host name, got ${JSON.stringify(e.ip)}`)
      }
      return { ip: stripBrackets(e.ip.trim()), port: checkPort(e.port, `${where}.port`) }
    })
  }
  return out as unknown as DncConfig
}

/** A TCP port 1..65535 given as a number or a string of digits. */
export function checkPort(value: unknown, what: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : NaN
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new UsageError(`${what} must be a port number from 1 to 65535, got ${JSON.stringify(value)}`)
  }
  return n
}

function resolvePath(p: string, configPath: string): string {
  if (p === '~' || p.startsWith('~/')) return join(homedir(), p.slice(1))
  return isAbsolute(p) ? p : resolve(dirname(configPath), p)
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}
