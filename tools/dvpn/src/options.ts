/**
 * dvpn's options: the shared ones (@dhtnet/cli-kit: a flag wins over the YAML, the YAML over the defaults), then
 * dvpn's own from two files, as DHTNet has them: the main YAML (`-d`, dvpn.yaml: bootstrap, identity, anonymous,
 * `configuration_file`, and our `authorized_peers`) and the VPN configuration (`-C`/`configuration_file`, DHTNet's
 * test_config.yaml: `script_path`, `ip_address`, `ip_peer_address`, `ip_address_ipv6`, `ip_peer_address_ipv6`, and
 * our `masquerade`, `mtu`, `full_tunnel`, `address_grace`, `keepalive`, `tun_name`). Every VPN key may also be
 * written in the main YAML; the VPN file wins. Every problem is a UsageError naming the flag, file and key.
 */
import { homedir } from 'node:os'
import { parsePeerId, type ParsedPeerId } from '@dhtnet/core'
import {
  COMMON_KEYS,
  UsageError,
  boolKey,
  defaultConfigPathsFor,
  loadConfig,
  parseConfigText,
  parsePeer,
  pathKey,
  readConfigFile as readWithSchema,
  resolveCommonOptions,
  secondsKey,
  stringKey,
  type CommonConfig,
  type CommonOptions,
  type ConfigSchema,
  type KeyChecker,
} from '@dhtnet/cli-kit'
import { parseAddressSpec4, parseAddressSpec6, parseIPv4, parseIPv6, type AddressSpec4, type AddressSpec6 } from './addresses.js'
import type { ParsedArgs } from './cli.js'
import type { PinnedAddresses } from './pool.js'
import { MIN_MTU } from './protocol.js'

export interface AuthorizedPeer {
  readonly id: string
  readonly address?: string
  readonly address_ipv6?: string
}

/** The VPN keys (DHTNet's test_config.yaml, plus ours). */
export interface VpnConfig {
  readonly path: string
  readonly unknownKeys: string[]
  readonly script_path?: string
  readonly ip_address?: string
  readonly ip_peer_address?: string
  readonly ip_address_ipv6?: string
  readonly ip_peer_address_ipv6?: string
  readonly masquerade?: boolean
  readonly mtu?: number
  readonly full_tunnel?: boolean
  readonly address_grace?: number
  readonly keepalive?: number
  readonly tun_name?: string
}

export interface DvpnConfig extends CommonConfig, Omit<VpnConfig, 'path' | 'unknownKeys'> {
  readonly configuration_file?: string
  readonly authorized_peers?: AuthorizedPeer[]
}

const mtuKey: KeyChecker = (v, c) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < MIN_MTU || v > 65535) throw c.bad(`an MTU from ${MIN_MTU} to 65535`, v)
  return v
}

const tunNameKey: KeyChecker = (v, c) => {
  const s = stringKey(v, c) as string | undefined
  if (s !== undefined) checkTunName(s, `${c.path}: \`tun_name\``)
  return s
}

const authorizedPeersKey: KeyChecker = (list, c) => {
  const items = typeof list === 'string' ? [list] : list
  if (!Array.isArray(items)) throw c.bad('a list of device ids, or of {id, address, address_ipv6}', list)
  return items.map((entry, i) => {
    const where = `${c.path}: authorized_peers[${i}]`
    if (typeof entry === 'string') return { id: checkId(entry, where) }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
      throw new UsageError(`${where} must be a device id or a mapping {id, address, address_ipv6}, got ${JSON.stringify(entry)}`)
    const e = entry as Record<string, unknown>
    const unknown = Object.keys(e).filter((k) => !['id', 'address', 'address_ipv6'].includes(k))
    if (unknown.length > 0) throw new UsageError(`${where}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (id, address, address_ipv6)`)
    if (typeof e.id !== 'string') throw new UsageError(`${where}.id must be a device id, got ${JSON.stringify(e.id)}`)
    for (const k of ['address', 'address_ipv6'] as const) {
      if (e[k] !== undefined && typeof e[k] !== 'string') throw new UsageError(`${where}.${k} must be an address string, got ${JSON.stringify(e[k])}`)
    }
    return {
      id: checkId(e.id, where),
      ...(e.address !== undefined ? { address: e.address as string } : {}),
      ...(e.address_ipv6 !== undefined ? { address_ipv6: e.address_ipv6 as string } : {}),
    }
  })
}

function checkId(text: string, where: string): string {
  try {
    return parsePeerId(text).hex
  } catch {
    throw new UsageError(`${where} must be a 40- or 64-hex device id, got ${JSON.stringify(text)}`, 'print a device id with: dhtnet-crtmgr -a -c <certificate>')
  }
}

export const VPN_KEYS: ConfigSchema = {
  script_path: pathKey,
  ip_address: stringKey,
  ip_peer_address: stringKey,
  ip_address_ipv6: stringKey,
  ip_peer_address_ipv6: stringKey,
  masquerade: boolKey,
  mtu: mtuKey,
  full_tunnel: boolKey,
  address_grace: secondsKey,
  keepalive: secondsKey,
  tun_name: tunNameKey,
}

export const DVPN_CONFIG_KEYS: ConfigSchema = {
  ...COMMON_KEYS,
  ...VPN_KEYS,
  configuration_file: pathKey,
  authorized_peers: authorizedPeersKey,
}

export function defaultConfigPaths(home: string = homedir()): string[] {
  return defaultConfigPathsFor('dvpn', home)
}

export async function readConfigFile(path: string): Promise<DvpnConfig> {
  return await readWithSchema(path, DVPN_CONFIG_KEYS)
}

export function parseConfig(text: string, path: string): DvpnConfig {
  return parseConfigText(text, path, DVPN_CONFIG_KEYS)
}

export async function readVpnConfigFile(path: string): Promise<VpnConfig> {
  return await readWithSchema(path, VPN_KEYS)
}

export function parseVpnConfig(text: string, path: string): VpnConfig {
  return parseConfigText(text, path, VPN_KEYS)
}

export function checkTunName(name: string, what: string): void {
  if (Buffer.byteLength(name) > 15 || name === '' || /[\s/:]/.test(name) || (name.match(/%d/g) ?? []).length > 1 || /%(?!d)/.test(name)) {
    throw new UsageError(`${what}: "${name}" is not an interface name (1-15 characters, no space, / or :, at most one %d)`)
  }
}

/** Grace period of a leaving client's addresses. */
export const DEFAULT_GRACE_S = 120
/** Client keepalive: a PING this often; no answer for 3 of them = the connection is gone (reconnect). */
export const DEFAULT_KEEPALIVE_S = 5
export const DEFAULT_TUN_NAME = 'dvpn%d'
/** The server's TUN MTU, and the largest a client uses: a packet of this size still fits one datagram message. */
export const DEFAULT_SERVER_MTU = 65535

/** The server's networks as configured (undefined: the defaults derived from its id at start). */
export interface ServerNetworks {
  readonly v4?: { readonly server: AddressSpec4; readonly clients: AddressSpec4 }
  readonly v6?: { readonly server: AddressSpec6; readonly clients: AddressSpec6 }
}

export interface ServerOptions extends CommonOptions {
  readonly mode: 'server'
  readonly anonymous: boolean
  /** Ids (40/64 hex) accepted whatever their CA. */
  readonly allowedPeers: string[]
  /** Fixed addresses by device id. */
  readonly pins: Map<string, PinnedAddresses>
  readonly networks: ServerNetworks
  readonly scriptPath?: string
  readonly masquerade: boolean
  readonly mtu: number
  readonly graceMs: number
  readonly tunName: string
  readonly vpnConfigPath?: string
}

export interface ClientOptions extends CommonOptions {
  readonly mode: 'client'
  readonly peer: ParsedPeerId
  readonly fullTunnel: boolean
  readonly scriptPath?: string
  /** Explicit MTU (else: what the server and the path allow). */
  readonly mtu?: number
  readonly keepaliveMs: number
  readonly tunName: string
  readonly vpnConfigPath?: string
}

export type DvpnOptions = ServerOptions | ClientOptions

function spec<T>(text: string | undefined, parse: (t: string) => T, what: string): T | undefined {
  if (text === undefined) return undefined
  try {
    return parse(text)
  } catch (err) {
    throw new UsageError(`${what}: ${(err as Error).message}`, 'DHTNet\'s prefix form ("10.80.77.", "fd00:0:0:1::"), CIDR ("10.80.77.0/24") or an address')
  }
}

/** ip_address / ip_peer_address (and their IPv6) → the server's address and the clients' subnet, per family. */
export function resolveNetworks(v: Partial<VpnConfig>, where: string): ServerNetworks {
  const s4 = spec(v.ip_address, parseAddressSpec4, `${where}: ip_address`)
  const c4 = spec(v.ip_peer_address, parseAddressSpec4, `${where}: ip_peer_address`)
  const s6 = spec(v.ip_address_ipv6, parseAddressSpec6, `${where}: ip_address_ipv6`)
  const c6 = spec(v.ip_peer_address_ipv6, parseAddressSpec6, `${where}: ip_peer_address_ipv6`)
  return {
    ...(s4 || c4 ? { v4: { server: s4 ?? { subnet: c4!.subnet, address: undefined }, clients: c4 ?? s4! } } : {}),
    ...(s6 || c6 ? { v6: { server: s6 ?? { subnet: c6!.subnet, address: undefined }, clients: c6 ?? s6! } } : {}),
  }
}

export async function resolveOptions(args: ParsedArgs, env: { home?: string } = {}): Promise<DvpnOptions> {
  let peer: ParsedPeerId | undefined
  if (!args.listen) {
    if (args.peer === undefined) {
      throw new UsageError(
        'missing PEER_ID: the id of the VPN server to join',
        'run dvpn <peer-id> (40 or 64 hex characters), or dvpn -l for the server; dvpn --help lists the options',
      )
    }
    peer = parsePeer(args.peer)
  } else if (args.peer !== undefined) {
    throw new UsageError(`dvpn -l takes no PEER_ID (got "${args.peer}")`, 'the server accepts clients; run dvpn <peer-id> on the client')
  }
  if (args.extraArgs.length > 0) throw new UsageError(`unexpected argument${args.extraArgs.length > 1 ? 's' : ''}: ${args.extraArgs.join(' ')}`, 'dvpn takes one PEER_ID')

  const { config, source } = await loadConfig<DvpnConfig>(args.configuration, defaultConfigPaths(env.home), readConfigFile)
  const c: Partial<DvpnConfig> = config ?? {}
  const common = resolveCommonOptions(args, config, source)
  const vpnPath = args.vpnConfiguration ?? c.configuration_file
  const vpnFile = vpnPath !== undefined ? await readVpnConfigFile(vpnPath) : undefined
  // the VPN file's keys win over the same keys in the main file
  const v: Partial<VpnConfig> = { ...pickVpnKeys(c), ...(vpnFile ? pickVpnKeys(vpnFile) : {}) }
  const unknownConfigKeys = [...common.unknownConfigKeys, ...(vpnFile?.unknownKeys.map((k) => `${k} (in ${vpnFile.path})`) ?? [])]
  const where = vpnFile?.path ?? config?.path ?? 'configuration'
  const mtu = args.mtu !== undefined ? parseMtu(args.mtu) : v.mtu
  const tunName = args.tun ?? v.tun_name ?? DEFAULT_TUN_NAME
  checkTunName(tunName, '--tun')

  if (args.listen) {
    if (args.fullTunnel) throw new UsageError('--full-tunnel is a client option: the server routes for its clients (see masquerade)')
    const peers = c.authorized_peers ?? []
    const pins = new Map<string, PinnedAddresses>()
    for (const [i, p] of peers.entries()) {
      if (p.address === undefined) {
        if (p.address_ipv6 !== undefined) throw new UsageError(`${config!.path}: authorized_peers[${i}]: address_ipv6 needs an address (IPv4) too`)
        continue
      }
      const v4 = spec(p.address, parseIPv4, `${config!.path}: authorized_peers[${i}].address`)!
      const v6 = spec(p.address_ipv6, parseIPv6, `${config!.path}: authorized_peers[${i}].address_ipv6`)
      pins.set(p.id, { v4, ...(v6 !== undefined ? { v6 } : {}) })
    }
    return {
      ...common,
      unknownConfigKeys,
      mode: 'server',
      anonymous: args.anonymous || c.anonymous === true,
      allowedPeers: peers.map((p) => p.id),
      pins,
      networks: resolveNetworks(v, where),
      ...(v.script_path ? { scriptPath: v.script_path } : {}),
      masquerade: v.masquerade === true,
      mtu: mtu ?? DEFAULT_SERVER_MTU,
      graceMs: Math.round((v.address_grace ?? DEFAULT_GRACE_S) * 1000),
      tunName,
      ...(vpnFile ? { vpnConfigPath: vpnFile.path } : {}),
    }
  }
  if (args.anonymous) throw new UsageError('-a/--anonymous is a server option: use it with -l')
  return {
    ...common,
    unknownConfigKeys,
    mode: 'client',
    peer: peer!,
    fullTunnel: args.fullTunnel || v.full_tunnel === true,
    ...(v.script_path ? { scriptPath: v.script_path } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
    keepaliveMs: Math.round((v.keepalive ?? DEFAULT_KEEPALIVE_S) * 1000),
    tunName,
    ...(vpnFile ? { vpnConfigPath: vpnFile.path } : {}),
  }
}

function pickVpnKeys(c: Partial<VpnConfig>): Partial<VpnConfig> {
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(VPN_KEYS)) if ((c as Record<string, unknown>)[k] !== undefined) out[k] = (c as Record<string, unknown>)[k]
  return out
}

export function parseMtu(text: string): number {
  const n = Number(text)
  if (!/^\d+$/.test(text.trim()) || n < MIN_MTU || n > 65535) throw new UsageError(`--mtu must be a number from ${MIN_MTU} to 65535, got "${text}"`)
  return n
}
