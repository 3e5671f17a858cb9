/**
 * dnc's YAML configuration: DHTNet's keys (tools/dnc/dnc.yaml) plus `allow_all_services` and `timeout`, read and
 * checked by the tools' configuration reader (@dhtnet/cli-kit): a wrong type is a usage error naming the file and
 * the key; unknown keys are reported but do not stop dnc.
 */
import { homedir } from 'node:os'
import {
  COMMON_KEYS,
  UsageError,
  boolKey,
  checkPort,
  defaultConfigPathsFor,
  findFirstExisting,
  parseConfigText,
  portKey,
  readConfigFile as readWithSchema,
  stringKey,
  type CommonConfig,
  type ConfigSchema,
  type KeyChecker,
} from '@dhtnet/cli-kit'

export { checkPort }

export interface ServiceEntry {
  /** IPv4, IPv6 or host name, as written. */
  readonly ip: string
  readonly port: number
}

export interface DncConfig extends CommonConfig {
  readonly ip?: string
  readonly port?: number
  readonly authorized_services?: ServiceEntry[]
  readonly allow_all_services?: boolean
}

const servicesKey: KeyChecker = (list, c) => {
  if (!Array.isArray(list)) throw c.bad('a list of {ip, port} entries', list)
  return list.map((entry, i) => {
    const where = `${c.path}: authorized_services[${i}]`
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

export const DNC_CONFIG_KEYS: ConfigSchema = {
  ...COMMON_KEYS,
  ip: stringKey,
  port: portKey,
  authorized_services: servicesKey,
  allow_all_services: boolKey,
}

/** Where dnc looks for a configuration when no -d is given, in order. */
export function defaultConfigPaths(home: string = homedir()): string[] {
  return defaultConfigPathsFor('dnc', home)
}

/** The first default configuration file that exists, if any. */
export function findDefaultConfig(home?: string): Promise<string | undefined> {
  return findFirstExisting(defaultConfigPaths(home))
}

export async function readConfigFile(path: string): Promise<DncConfig> {
  return await readWithSchema(path, DNC_CONFIG_KEYS)
}

/** Parses and checks a configuration; relative paths in it are relative to the file's folder. */
export function parseConfig(text: string, path: string): DncConfig {
  return parseConfigText(text, path, DNC_CONFIG_KEYS)
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}
