/**
 * TURN server addresses as users write them (RFC 7065 URIs and plain host:port), and their resolution to the one IP
 * address every connection of an allocation goes to (RFC 6062 data connections must reach the same server).
 *
 *   host | host:port | [v6]:port | turn:host[:port][?transport=tcp] | turns:host[:port] | turn:USER:PASS@host…
 *
 * Default ports: 3478 (turn, tcp), 5349 (turns, tls). Credentials inside a URI are taken out of it and never appear
 * in an error message.
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { DhtnetError } from '../../errors.js'

export type TurnTransport = 'tcp' | 'tls'

export interface TurnServerAddress {
  /** As written (a host name or an IP literal, IPv6 without brackets). */
  readonly host: string
  readonly port: number
  readonly transport: TurnTransport
  /** Credentials found in the URI (turn:USER:PASS@host), if any. */
  readonly username?: string
  readonly password?: string
}

export const DEFAULT_TURN_PORT = 3478
export const DEFAULT_TURNS_PORT = 5349

function bad(why: string): DhtnetError {
  return new DhtnetError('BAD_ICE_SERVER', `bad TURN server: ${why}`, {
    hint: 'write host[:port], turn:host[:port]?transport=tcp or turns:host[:port]',
  })
}

/**
 * Parse a TURN server. `transport` (when given) wins over the scheme's default but not over an explicit
 * `?transport=`; turns: with transport=tcp is refused (TLS is what turns: means).
 */
export function parseTurnServer(input: string | URL, transport?: TurnTransport): TurnServerAddress {
  let text = (typeof input === 'string' ? input : input.href).trim()
  if (text.length === 0 || text.length > 512) throw bad('empty or longer than 512 characters')
  let scheme: 'turn' | 'turns' | undefined
  const m = /^(turns?):(.*)$/i.exec(text)
  if (m) {
    scheme = m[1]!.toLowerCase() as 'turn' | 'turns'
    text = m[2]!.replace(/^\/\//, '')
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw bad('the scheme must be turn: or turns:')
  }
  let query = ''
  const q = text.indexOf('?')
  if (q >= 0) {
    query = text.slice(q + 1)
    text = text.slice(0, q)
  }
  let username: string | undefined
  let password: string | undefined
  const at = text.lastIndexOf('@')
  if (at >= 0) {
    const cred = text.slice(0, at)
    text = text.slice(at + 1)
    const colon = cred.indexOf(':')
    if (colon < 0) throw bad('credentials in the address must be USER:PASSWORD')
    try {
      username = decodeURIComponent(cred.slice(0, colon))
      password = decodeURIComponent(cred.slice(colon + 1))
    } catch {
      throw bad('credentials in the address are not valid URI text')
    }
  }
  const queryTransport = /(?:^|&)transport=([a-z]+)/i.exec(query)?.[1]?.toLowerCase()
  if (queryTransport !== undefined && queryTransport !== 'tcp' && queryTransport !== 'tls') {
    throw new DhtnetError('UNSUPPORTED_TRANSPORT', `TURN over ${queryTransport.slice(0, 8)} is not what this client does (TCP or TLS)`, {
      hint: "UDP relays are WebRTC's (turn:…); this client relays TCP over turn:…?transport=tcp or turns:",
    })
  }
  if (scheme === 'turns' && queryTransport === 'tcp') throw bad('turns: means TLS, not transport=tcp')
  const chosen: TurnTransport = scheme === 'turns' ? 'tls' : queryTransport === 'tls' ? 'tls' : (queryTransport ?? transport ?? 'tcp')
  let host: string
  let portText: string | undefined
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d*))?$/.exec(text)
  if (v6) {
    host = v6[1]!
    portText = v6[2]
  } else {
    const parts = text.split(':')
    if (parts.length > 2) throw bad('an IPv6 address must be written in brackets, e.g. [::1]:3478')
    host = parts[0]!
    portText = parts[1]
  }
  if (!host || host.length > 253 || !/^[A-Za-z0-9.\-_:]+$/.test(host)) throw bad('missing or invalid host name')
  const port = portText === undefined || portText === '' ? (chosen === 'tls' ? DEFAULT_TURNS_PORT : DEFAULT_TURN_PORT) : Number(portText)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`invalid port "${String(portText).slice(0, 8)}"`)
  return { host, port, transport: chosen, ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) }
}

/** The server's IP: the literal itself, or the first address DNS gives (bounded by the signal). */
export async function resolveTurnHost(host: string, signal: AbortSignal): Promise<string> {
  if (isIP(host)) return host
  const found = lookup(host, { verbatim: true })
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = () => reject(new DhtnetError('ABORTED', 'resolving the TURN server aborted', { cause: signal.reason }))
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
    void found.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {})
  })
  try {
    const { address } = await Promise.race([found, aborted])
    return address
  } catch (err) {
    if (err instanceof DhtnetError) throw err
    throw new DhtnetError('TURN_UNREACHABLE', `cannot resolve the TURN server ${host}: ${(err as Error).message}`, {
      cause: err,
      hint: 'check the TURN server name and the DNS configuration',
    })
  }
}
