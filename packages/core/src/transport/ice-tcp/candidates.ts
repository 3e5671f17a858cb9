/**
 * DHTNet's `ice_msg`: `ufrag\npwd\n` then one candidate per line, every line ending in `\n`:
 *   `<foundation> <component> TCP <priority> <ip> <port> typ <host|srflx|prflx|relay> tcptype <active|passive|so>`
 * (RFC 6544 §4.5 without `a=candidate:` and without raddr/rport; IPv6 without brackets).
 *
 * Parsing follows pjnath's `sscanf("%31s %u %11s %u %79s %u typ %31s tcptype %31s")` (dhtnet ice_transport.cpp):
 * 7 or 8 fields, bad lines skipped, field widths enforced; a bounded input, and the remote list trimmed as DHTNet
 * trims it (at most 31 candidates, 8 host and 4 relay). Encoding is byte-identical to pjnath for the same inputs:
 * foundations `H`/`S`/`P`/`R` + the base IPv4 address in hex (an IPv6 base is hashed as pj_hash_calc does), RFC 8445
 * priorities with pjnath's local preferences: host candidates count down from 65535 per address family in the order
 * they are added (passive, then active, per address: 65535/65534 for the first address), srflx candidates get
 * 65535 - the index of their STUN configuration in DHTNet's layout (UPnP or generic srflx: 2, generic after UPnP: 3).
 */
import { DhtnetError } from '../../errors.js'
import { bytesToIp, ipToBytes, type IpFamily } from '../stun/ip.js'

export type CandidateType = 'host' | 'srflx' | 'prflx' | 'relay'
export type TcpType = 'active' | 'passive' | 'so'

export interface IceCandidate {
  readonly foundation: string
  readonly component: number
  /** 'UDP' for anything pjnath does not read as TCP (the ICE-TCP agent ignores those). */
  readonly transport: 'TCP' | 'UDP'
  readonly priority: number
  readonly family: IpFamily
  /** Normalised text form (IPv6 compressed, without brackets). */
  readonly address: string
  readonly port: number
  readonly type: CandidateType
  /** TCP candidates only. */
  readonly tcpType?: TcpType | undefined
}

export interface IceDescription {
  readonly ufrag: string
  readonly pwd: string
  readonly candidates: readonly IceCandidate[]
}

export interface IceMessageLimits {
  /** Longest ice_msg accepted (default 32 KiB). */
  readonly maxBytes?: number
  /** Lines looked at; later ones are ignored (default 256). */
  readonly maxLines?: number
}

export const MAX_ICE_MESSAGE_BYTES = 32 * 1024
export const MAX_ICE_MESSAGE_LINES = 256
/** DHTNet's trimming (PJ_ICE_ST_MAX_CAND - 1 with its config_site, 8 host, PJ_ICE_MAX_TURN relay). */
export const MAX_REMOTE_CANDIDATES = 31
export const MAX_REMOTE_HOST_CANDIDATES = 8
export const MAX_REMOTE_RELAY_CANDIDATES = 4
/** Longest ufrag/pwd accepted (RFC 8445 allows 256 characters). */
const MAX_CREDENTIAL_CHARS = 256

const TYPE_PREFERENCE: Record<CandidateType, number> = { host: 126, prflx: 110, srflx: 100, relay: 0 }
/** The local preference pjnath gives a check's PRIORITY (65535 - the local candidate's index: passive first). */
const CHECK_LOCAL_PREFERENCE: Record<TcpType, number> = { passive: 65535, active: 65534, so: 65533 }
const TYPE_PREFIX: Record<CandidateType, string> = { host: 'H', srflx: 'S', prflx: 'P', relay: 'R' }
const CANDIDATE_TYPES = new Set<string>(['host', 'srflx', 'prflx', 'relay'])
const TCP_TYPES = new Set<string>(['active', 'passive', 'so'])
/** The port TCP active candidates announce (RFC 6544: the discard port). */
export const ACTIVE_CANDIDATE_PORT = 9

/** RFC 8445 §5.1.2.1: 0x7EFFFFFF for a host candidate with local preference 65535. */
export function candidatePriority(type: CandidateType, localPreference: number, component = 1): number {
  return ((TYPE_PREFERENCE[type] << 24) + ((localPreference & 0xffff) << 8) + (256 - component)) >>> 0
}

/** The PRIORITY of a check sent from our candidate of this TCP type: prflx with pjnath's preferences
 *  (0x6EFFFEFF from an active candidate, 0x6EFFFFFF from a passive one, as in the captures). */
export function prflxPriority(tcpType: TcpType, component = 1): number {
  return candidatePriority('prflx', CHECK_LOCAL_PREFERENCE[tcpType], component)
}

/** pj_ice_calc_foundation: type prefix + the base address (IPv4 as hex, IPv6 hashed by pj_hash_calc). */
export function candidateFoundation(type: CandidateType, baseAddress: string): string {
  const bytes = ipToBytes(baseAddress)
  if (!bytes) throw new DhtnetError('BAD_ADDRESS', `not an IP address: ${baseAddress}`)
  let value: number
  if (bytes.length === 4) value = bytes.readUInt32BE(0)
  else {
    value = 0
    for (const b of bytes) value = (Math.imul(value, 33) + b) >>> 0
  }
  return `${TYPE_PREFIX[type]}${value.toString(16)}`
}

/** One candidate line, without the trailing newline. */
export function formatCandidate(c: IceCandidate): string {
  const tail = c.transport === 'TCP' ? ` tcptype ${c.tcpType ?? 'so'}` : ''
  return `${c.foundation} ${c.component} ${c.transport} ${c.priority} ${c.address} ${c.port} typ ${c.type}${tail}`
}

/** The whole ice_msg, as DHTNet writes it (every line ends with `\n`). */
export function encodeIceMessage(desc: IceDescription): string {
  let out = `${desc.ufrag}\n${desc.pwd}\n`
  for (const c of desc.candidates) out += `${formatCandidate(c)}\n`
  return out
}

/** sscanf's %u for our purposes: decimal digits, at most 2^32-1. */
function parseUnsigned(token: string | undefined): number | undefined {
  if (token === undefined || !/^\+?\d{1,10}$/.test(token)) return undefined
  const n = Number(token)
  return n <= 0xffffffff ? n : undefined
}

/** One candidate line, or undefined when pjnath would not accept it (or it is not a literal IP address). */
export function parseCandidateLine(line: string): IceCandidate | undefined {
  if (line.length > 512) return undefined
  const t = line.trim().split(/\s+/)
  const [foundation, comp, transport, prio, ip, port, typ, type] = t
  if (foundation === undefined || foundation.length === 0 || foundation.length > 31) return undefined
  const component = parseUnsigned(comp)
  if (component === undefined || transport === undefined || transport.length > 11) return undefined
  const priority = parseUnsigned(prio)
  if (priority === undefined || ip === undefined || ip.length > 79) return undefined
  const portNumber = parseUnsigned(port)
  if (portNumber === undefined || portNumber > 65535 || typ !== 'typ' || type === undefined || type.length > 31) return undefined
  if (!CANDIDATE_TYPES.has(type)) return undefined
  const isTcp = transport === 'TCP'
  let tcpType: TcpType | undefined
  if (isTcp) {
    // the 8th field; tolerate extensions (raddr/rport) before it, which pjnath's sscanf would not
    const at = t.indexOf('tcptype', 8)
    const value = at >= 0 ? t[at + 1] : undefined
    if (value === undefined || !TCP_TYPES.has(value)) return undefined
    tcpType = value as TcpType
  }
  const bytes = ipToBytes(ip)
  if (!bytes || ip.includes('%')) return undefined
  return {
    foundation,
    component,
    transport: isTcp ? 'TCP' : 'UDP',
    priority,
    family: bytes.length === 4 ? 4 : 6,
    address: bytesToIp(bytes),
    port: portNumber,
    type: type as CandidateType,
    tcpType,
  }
}

/**
 * Parse a peer's ice_msg. Throws DhtnetError('BAD_ICE_MESSAGE') when it is too big or has no ufrag/pwd; candidate
 * lines pjnath would refuse are skipped; the result keeps component-1 candidates only, trimmed as DHTNet trims.
 */
export function parseIceMessage(text: string, limits: IceMessageLimits = {}): IceDescription {
  const maxBytes = limits.maxBytes ?? MAX_ICE_MESSAGE_BYTES
  const maxLines = limits.maxLines ?? MAX_ICE_MESSAGE_LINES
  if (typeof text !== 'string') throw new DhtnetError('BAD_ICE_MESSAGE', 'the ICE description is not text')
  if (text.length > maxBytes) throw new DhtnetError('BAD_ICE_MESSAGE', `ICE description of ${text.length} characters, more than the ${maxBytes} accepted`)
  const lines: string[] = []
  let start = 0
  while (start <= text.length && lines.length < maxLines) {
    let end = text.indexOf('\n', start)
    if (end < 0) end = text.length
    let line = text.slice(start, end)
    if (line.endsWith('\r')) line = line.slice(0, -1)
    lines.push(line)
    start = end + 1
  }
  const ufrag = lines[0] ?? ''
  const pwd = lines[1] ?? ''
  const credential = /^[\x21-\x7e]{1,256}$/
  if (!credential.test(ufrag) || ufrag.includes(':')) {
    throw new DhtnetError('BAD_ICE_MESSAGE', `the ICE description has no usable ufrag on its first line (${JSON.stringify(ufrag.slice(0, 40))})`)
  }
  if (!credential.test(pwd) || pwd.length > MAX_CREDENTIAL_CHARS) {
    throw new DhtnetError('BAD_ICE_MESSAGE', 'the ICE description has no usable password on its second line')
  }
  const all: IceCandidate[] = []
  for (const line of lines.slice(2)) {
    if (line.length === 0) continue
    const c = parseCandidateLine(line)
    if (c && c.component === 1) all.push(c)
  }
  return { ufrag, pwd, candidates: trimCandidates(all) }
}

/** DHTNet's trimming when a peer sends too many candidates: keep the order, at most 8 host and 4 relay, 31 in all. */
export function trimCandidates(candidates: readonly IceCandidate[]): IceCandidate[] {
  if (candidates.length <= MAX_REMOTE_CANDIDATES) return [...candidates]
  const out: IceCandidate[] = []
  let hosts = MAX_REMOTE_HOST_CANDIDATES
  let relays = MAX_REMOTE_RELAY_CANDIDATES
  for (const c of candidates) {
    if (c.type === 'host') {
      if (hosts === 0) continue
      hosts--
    } else if (c.type === 'relay') {
      if (relays === 0) continue
      relays--
    }
    if (out.length === MAX_REMOTE_CANDIDATES) break
    out.push(c)
  }
  return out
}

/** What our local candidates are made of. */
export interface LocalCandidateInputs {
  /** Interface addresses with the port listening on each (one passive + one active candidate per address). */
  readonly hosts: ReadonlyArray<{ readonly address: string; readonly passivePort: number }>
  /** Public TCP mappings (UPnP / NAT-PMP): each gives a srflx `passive` candidate whose base is `localAddress`. */
  readonly mapped?: ReadonlyArray<{ readonly address: string; readonly port: number; readonly localAddress: string }>
  /** The public address the DHT sees, with the local address it was seen from: a srflx `active` candidate (port 9). */
  readonly reflexive?: { readonly address: string; readonly localAddress: string } | undefined
  /** Relayed addresses of our TURN/TCP allocations, in TURN server order: `relay` `passive` candidates. */
  readonly relays?: ReadonlyArray<{ readonly address: string; readonly port: number }>
}

function candidate(type: CandidateType, tcpType: TcpType, localPreference: number, address: string, port: number, base: string): IceCandidate {
  const bytes = ipToBytes(address)
  if (!bytes) throw new DhtnetError('BAD_ADDRESS', `not an IP address: ${address}`)
  return {
    foundation: candidateFoundation(type, base),
    component: 1,
    transport: 'TCP',
    priority: candidatePriority(type, localPreference),
    family: bytes.length === 4 ? 4 : 6,
    address: bytesToIp(bytes),
    port,
    type,
    tcpType,
  }
}

/** Our candidates in pjnath's order: per host address passive then active (IPv4 first); then mapped srflx; then the
 *  DHT srflx; then the relays (pjnath adds its TURN candidates after its STUN ones). Local preferences as pjnath's
 *  (see the top of this file): a relay's is 65535 - the index of its TURN server (`RELAY_PREF - idx`), its base the
 *  relayed address itself (foundation `R` + that address). */
export function localCandidates(inputs: LocalCandidateInputs): IceCandidate[] {
  const out: IceCandidate[] = []
  for (const family of [4, 6] as const) {
    let index = 0
    for (const h of inputs.hosts) {
      if ((ipToBytes(h.address)?.length === 4 ? 4 : 6) !== family) continue
      out.push(candidate('host', 'passive', 65535 - index++, h.address, h.passivePort, h.address))
      out.push(candidate('host', 'active', 65535 - index++, h.address, ACTIVE_CANDIDATE_PORT, h.address))
    }
  }
  const mapped = inputs.mapped ?? []
  // DHTNet's STUN configurations: 0 host IPv4, 1 host IPv6, 2 UPnP (or generic srflx), 3 generic srflx after UPnP
  for (const m of mapped) out.push(candidate('srflx', 'passive', 65535 - 2, m.address, m.port, m.localAddress))
  if (inputs.reflexive) {
    const config = mapped.length > 0 ? 3 : 2
    out.push(candidate('srflx', 'active', 65535 - config, inputs.reflexive.address, ACTIVE_CANDIDATE_PORT, inputs.reflexive.localAddress))
  }
  ;(inputs.relays ?? []).forEach((r, index) => out.push(candidate('relay', 'passive', 65535 - index, r.address, r.port, r.address)))
  return out
}
