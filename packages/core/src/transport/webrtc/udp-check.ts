/**
 * Does this network let UDP out? Asked of the first configured STUN/TURN server, the honest way: one STUN Binding
 * request over UDP (retransmitted at 0, 250, 750 and 1500 ms, within `udpTimeoutMs`) and, at the same time, one over TCP to the same server
 * and port (RFC 8489 allows both; coturn listens on both by default).
 *
 *  - an answer over UDP (success or error: either proves the path)  → 'open'
 *  - none over UDP within `udpTimeoutMs`, but one over TCP          → 'blocked' (the server is up, UDP does not pass)
 *  - neither                                                         → 'unknown' (the server is down or unreachable:
 *                                                                      nothing to conclude about UDP)
 *
 * One probe serves every connection for `cacheMs` (a network change is seen at the next probe). Bounded: two sockets,
 * four datagrams, one 20-byte request and at most one 548-byte answer read over TCP; every timer cleared.
 */
import { createSocket } from 'node:dgram'
import { lookup } from 'node:dns/promises'
import { connect as tcpConnect, isIP } from 'node:net'
import { StunMessageBuilder } from '../stun/builder.js'
import { StunMethod } from '../stun/constants.js'
import { StunMessage, looksLikeStun } from '../stun/message.js'
import { formatHostPort } from '../stun/ip.js'
import type { Logger } from '../../util/log.js'

export type UdpVerdict = 'open' | 'blocked' | 'unknown'

export interface UdpCheckResult {
  readonly verdict: UdpVerdict
  /** The server asked, as 'stun:host:port'. */
  readonly server: string
  /** One sentence for messages: what answered and what did not. */
  readonly detail: string
}

export interface UdpCheckOptions {
  /** Send the UDP request from this local address (the ICE bind address). */
  readonly bindAddress?: string | undefined
  /** How long the UDP answer may take (default 1200 ms: three requests, at 0, 250 and 750 ms). */
  readonly udpTimeoutMs?: number
  /** How long a result is reused (default 30 s). */
  readonly cacheMs?: number
  readonly log: Logger
}

const RETRANSMIT_AT_MS = [0, 250, 750, 1500]
const MAX_TCP_ANSWER = 548

export class UdpReachability {
  private cached: { at: number; result: Promise<UdpCheckResult> } | undefined

  constructor(
    private readonly server: { readonly hostname: string; readonly port: number },
    private readonly options: UdpCheckOptions,
  ) {}

  /** The verdict (shared by concurrent calls and reused for cacheMs). Never rejects. */
  check(): Promise<UdpCheckResult> {
    const now = Date.now()
    if (this.cached && now - this.cached.at < (this.options.cacheMs ?? 30_000)) return this.cached.result
    const result = this.probe()
    this.cached = { at: now, result }
    return result
  }

  private async probe(): Promise<UdpCheckResult> {
    const { hostname, port } = this.server
    const name = `stun:${formatHostPort(hostname, port)}`
    const timeoutMs = this.options.udpTimeoutMs ?? 1200
    let address: string
    let family: 4 | 6
    try {
      if (isIP(hostname)) {
        address = hostname
        family = isIP(hostname) === 6 ? 6 : 4
      } else {
        const r = await lookup(hostname, { family: this.options.bindAddress?.includes(':') ? 6 : 4 })
        address = r.address
        family = r.family === 6 ? 6 : 4
      }
    } catch (err) {
      return { verdict: 'unknown', server: name, detail: `${name} could not be resolved (${(err as Error).message})` }
    }
    const started = performance.now()
    const tcp = tcpAnswers(address, port, timeoutMs)
    const udp = await udpAnswers(address, port, family, this.options.bindAddress, timeoutMs)
    const ms = Math.round(performance.now() - started)
    let result: UdpCheckResult
    if (udp) {
      void tcp
      result = { verdict: 'open', server: name, detail: `${name} answered over UDP in ${ms} ms` }
    } else if (await tcp) {
      result = { verdict: 'blocked', server: name, detail: `${name} answered a STUN request over TCP but none over UDP within ${timeoutMs} ms` }
    } else {
      result = { verdict: 'unknown', server: name, detail: `${name} answered neither over UDP nor over TCP within ${timeoutMs} ms` }
    }
    this.options.log('debug', `webrtc: UDP check: ${result.verdict} (${result.detail})`)
    return result
  }
}

function bindingRequest(): { bytes: Buffer; id: Buffer } {
  const b = StunMessageBuilder.create(StunMethod.BINDING, 'request')
  return { bytes: b.build({ fingerprint: false }), id: b.transactionId }
}

function isAnswer(buf: Buffer, id: Buffer): boolean {
  if (!looksLikeStun(buf)) return false
  try {
    const m = StunMessage.decode(buf, { maxBytes: MAX_TCP_ANSWER })
    return m.method === StunMethod.BINDING && (m.class === 'success' || m.class === 'error') && Buffer.from(m.transactionId).equals(id)
  } catch {
    return false
  }
}

/** true when a Binding answer with our transaction id arrives over UDP within timeoutMs. */
function udpAnswers(address: string, port: number, family: 4 | 6, bindAddress: string | undefined, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket(family === 6 ? 'udp6' : 'udp4')
    const { bytes, id } = bindingRequest()
    const timers: NodeJS.Timeout[] = []
    let done = false
    const finish = (ok: boolean): void => {
      if (done) return
      done = true
      for (const t of timers) clearTimeout(t)
      socket.close()
      resolve(ok)
    }
    socket.on('error', () => finish(false))
    socket.on('message', (msg) => {
      if (isAnswer(msg, id)) finish(true)
    })
    const bind = bindAddress && (bindAddress.includes(':') ? 6 : 4) === family ? bindAddress : undefined
    socket.bind(0, bind, () => {
      for (const at of RETRANSMIT_AT_MS.filter((t) => t < timeoutMs)) {
        timers.push(setTimeout(() => socket.send(bytes, port, address, () => {}), at))
      }
      timers.push(setTimeout(() => finish(false), timeoutMs))
    })
  })
}

/** true when a Binding answer arrives over TCP within timeoutMs. */
function tcpAnswers(address: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: address, port })
    const { bytes, id } = bindingRequest()
    let received = Buffer.alloc(0)
    let done = false
    const finish = (ok: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    socket.on('error', () => finish(false))
    socket.on('close', () => finish(false))
    socket.on('connect', () => socket.write(bytes))
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      if (received.length > MAX_TCP_ANSWER) return finish(false)
      if (received.length < 20) return
      const total = 20 + received.readUInt16BE(2)
      if (total > MAX_TCP_ANSWER) return finish(false)
      if (received.length >= total) finish(isAnswer(received.subarray(0, total), id))
    })
  })
}
