/**
 * ICE server configuration: STUN and TURN URLs as users write them, turned into node-datachannel's IceServer.
 * libjuice (the ICE agent node-datachannel is built with) relays over TURN/UDP only: TURN over TCP or TLS is
 * refused here with an explanation instead of being silently skipped by the library.
 */
import type { IceServer } from 'node-datachannel'
import { DhtnetError } from '../../errors.js'

/** 'stun:host[:port]', 'turn:user:pass@host[:port][?transport=udp]', or the parts of a TURN server. */
export type IceServerSpec = string | { url: string; username?: string; password?: string }

const DEFAULT_PORT = 3478

function bad(spec: string, why: string): DhtnetError {
  return new DhtnetError('BAD_ICE_SERVER', `bad ICE server "${redact(spec)}": ${why}`, {
    hint: 'write stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT] (TURN over UDP)',
  })
}

/** Hide a password in messages. */
function redact(spec: string): string {
  return spec.replace(/^(turns?:[^:@]*:)[^@]*@/i, '$1***@')
}

function splitHostPort(text: string, spec: string): { hostname: string; port: number } {
  let hostname: string
  let portText: string | undefined
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(text)
  if (v6) {
    hostname = v6[1]!
    portText = v6[2]
  } else {
    const parts = text.split(':')
    if (parts.length > 2) throw bad(spec, 'an IPv6 address must be written in brackets, e.g. [::1]:3478')
    hostname = parts[0]!
    portText = parts[1]
  }
  if (!hostname || !/^[A-Za-z0-9.\-_:]+$/.test(hostname)) throw bad(spec, 'missing or invalid host name')
  const port = portText === undefined || portText === '' ? DEFAULT_PORT : Number(portText)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(spec, `invalid port "${portText}"`)
  return { hostname, port }
}

/** Parse one ICE server. Throws BAD_ICE_SERVER or UNSUPPORTED_TRANSPORT with what to write instead. */
export function parseIceServer(input: IceServerSpec): IceServer {
  const spec = typeof input === 'string' ? input.trim() : input.url.trim()
  const m = /^(stun|stuns|turn|turns):(.*)$/i.exec(spec)
  if (!m) throw bad(spec, 'it must start with stun: or turn:')
  const scheme = m[1]!.toLowerCase()
  let rest = m[2]!.replace(/^\/\//, '')
  let query = ''
  const q = rest.indexOf('?')
  if (q >= 0) {
    query = rest.slice(q + 1)
    rest = rest.slice(0, q)
  }
  const transport = /(?:^|&)transport=([a-z]+)/i.exec(query)?.[1]?.toLowerCase() ?? 'udp'
  if (scheme === 'stuns' || scheme === 'turns' || transport !== 'udp') {
    throw new DhtnetError('UNSUPPORTED_TRANSPORT', `ICE server "${redact(spec)}": only UDP is supported for STUN and TURN`, {
      hint: 'node-datachannel is built with libjuice, which relays over TURN/UDP only; use turn:USER:PASSWORD@HOST:PORT',
    })
  }
  let username = typeof input === 'string' ? undefined : input.username
  let password = typeof input === 'string' ? undefined : input.password
  const at = rest.lastIndexOf('@')
  if (at >= 0) {
    const cred = rest.slice(0, at)
    rest = rest.slice(at + 1)
    const colon = cred.indexOf(':')
    if (colon < 0) throw bad(spec, 'credentials must be USER:PASSWORD')
    username = decodeURIComponent(cred.slice(0, colon))
    password = decodeURIComponent(cred.slice(colon + 1))
  }
  const { hostname, port } = splitHostPort(rest, spec)
  if (scheme === 'stun') {
    if (username !== undefined) throw bad(spec, 'a STUN server takes no credentials')
    return { hostname, port }
  }
  if (!username || password === undefined) throw bad(spec, 'a TURN server needs a user name and a password')
  return { hostname, port, username, password, relayType: 'TurnUdp' }
}

export function parseIceServers(specs: readonly IceServerSpec[] | undefined): IceServer[] {
  return (specs ?? []).map(parseIceServer)
}
