/**
 * The tools' TURN settings (DHTNet's -t/-u/-w/-r, YAML turn_host/turn_user/turn_pass/turn_realm, plus our
 * turn_transport) → what each transport uses: WebRTC a TURN/UDP ICE server (libjuice relays over UDP only), ICE-TCP
 * a TURN allocation over TCP or TLS with a TCP relay (RFC 6062, transport/ice-tcp/relay.ts).
 *
 *   turn_transport  WebRTC (UDP relay)       ICE-TCP (TCP relay)
 *   (not set)       turn:host:port           the same server over TCP    one server serves both (DHTNet: TCP)
 *   udp             turn:host:port           —
 *   tcp             —                        host:port over TCP (3478)
 *   tls             —                        host:port over TLS (5349), the server's certificate checked
 *
 * The host may also be written as a URI: `turn:host?transport=tcp` means tcp, `turns:host` means tls,
 * `?transport=udp` udp (an explicit turn_transport wins). Credentials are never put in a message.
 */
import { DhtnetError } from '../errors.js'
import type { IceServerSpec } from '../transport/webrtc/ice-servers.js'
import type { IceTcpRelayOptions } from '../transport/ice-tcp/relay.js'
import { formatHostPort } from '../transport/stun/ip.js'
import { DEFAULT_TURN_PORT, DEFAULT_TURNS_PORT } from '../transport/turn/server-address.js'

export type TurnTransportChoice = 'udp' | 'tcp' | 'tls'
export const TURN_TRANSPORTS: readonly TurnTransportChoice[] = ['udp', 'tcp', 'tls']

export interface TurnServerOptions {
  readonly host: string
  readonly user?: string
  readonly pass?: string
  /** The realm we expect (the server announces the one its key uses; a difference is logged). */
  readonly realm?: string
  /** udp: WebRTC's UDP relay only; tcp / tls: ICE-TCP's TCP relay only, reached over TCP or TLS; not set: both. */
  readonly transport?: TurnTransportChoice
}

export interface TurnSettings {
  /** For WebRTC (TURN over UDP). */
  readonly iceServers: IceServerSpec[]
  /** For ICE-TCP (a TCP relay reached over TCP or TLS). */
  readonly tcpRelay?: IceTcpRelayOptions
}

function bad(host: string, why: string): DhtnetError {
  return new DhtnetError('BAD_ICE_SERVER', `TURN server "${host.replace(/^([^@]*)@/, '***@').slice(0, 80)}": ${why}`, {
    hint: 'write -t host[:port] (turn:host[:port]?transport=tcp, turns:host[:port]) and --turn_transport udp|tcp|tls',
  })
}

/** Split what the user wrote into host, port (if any) and the transport its scheme or query names (if any). */
function parseHost(text: string): { host: string; port: number | undefined; named: TurnTransportChoice | undefined } {
  let rest = text.trim()
  let named: TurnTransportChoice | undefined
  const scheme = /^(turns?|stuns?):(?:\/\/)?/i.exec(rest)
  if (scheme) {
    const s = scheme[1]!.toLowerCase()
    if (s.startsWith('stun')) throw bad(text, 'a STUN server is not a TURN server')
    if (s === 'turns') named = 'tls'
    rest = rest.slice(scheme[0].length)
  }
  const q = rest.indexOf('?')
  if (q >= 0) {
    const t = /(?:^|&)transport=([a-z]+)/i.exec(rest.slice(q + 1))?.[1]?.toLowerCase()
    rest = rest.slice(0, q)
    if (t !== undefined) {
      if (t !== 'udp' && t !== 'tcp' && t !== 'tls') throw bad(text, `unknown transport "${t.slice(0, 8)}"`)
      if (named === 'tls' && t !== 'tls') throw bad(text, 'turns: means TLS')
      named = t
    }
  }
  if (rest.includes('@')) throw bad(text, 'give the credentials with -u and -w (turn_user, turn_pass), not in the address')
  let host: string
  let portText: string | undefined
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d*))?$/.exec(rest)
  if (v6) {
    host = v6[1]!
    portText = v6[2]
  } else {
    const parts = rest.split(':')
    if (parts.length > 2) throw bad(text, 'an IPv6 address must be written in brackets, e.g. [2001:db8::1]:3478')
    host = parts[0]!
    portText = parts[1]
  }
  if (!host || !/^[A-Za-z0-9.\-_:]+$/.test(host)) throw bad(text, 'missing or invalid host name')
  const port = portText === undefined || portText === '' ? undefined : Number(portText)
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw bad(text, `invalid port "${portText!.slice(0, 8)}"`)
  return { host, port, named }
}

export function turnSettings(turn: TurnServerOptions): TurnSettings {
  if (turn.transport !== undefined && !TURN_TRANSPORTS.includes(turn.transport)) {
    throw new DhtnetError('BAD_OPTION', `unknown TURN transport "${String(turn.transport).slice(0, 16)}"`, { hint: `use one of: ${TURN_TRANSPORTS.join(', ')}` })
  }
  const { host, port, named } = parseHost(turn.host)
  if (!turn.user || turn.pass === undefined || turn.pass === '') {
    throw new DhtnetError('BAD_ICE_SERVER', `TURN server ${formatHostPort(host, port ?? DEFAULT_TURN_PORT)} needs a user name and a password`, {
      hint: 'give -u USER and -w PASSWORD (or turn_user/turn_pass in the YAML)',
    })
  }
  const transport = turn.transport ?? named
  const iceServers: IceServerSpec[] = []
  if (transport === undefined || transport === 'udp') {
    iceServers.push({ url: `turn:${formatHostPort(host, port ?? DEFAULT_TURN_PORT)}`, username: turn.user, password: turn.pass })
  }
  if (transport === 'udp') return { iceServers }
  const tls = transport === 'tls'
  const tcpRelay: IceTcpRelayOptions = {
    server: formatHostPort(host, port ?? (tls ? DEFAULT_TURNS_PORT : DEFAULT_TURN_PORT)),
    transport: tls ? 'tls' : 'tcp',
    username: turn.user,
    password: turn.pass,
    ...(turn.realm ? { realm: turn.realm } : {}),
  }
  return { iceServers, tcpRelay }
}
