/**
 * The WebRTC transport as a plug-in (transport.ts): one WebRtcPeer per connection attempt, its SDP as the
 * description, and a Link over its two data channels once DTLS is up and the peer's certificate matches the
 * fingerprint of its signed description.
 *
 * With a port mapper (UPnP IGD / NAT-PMP), each peer connection is pinned to one free local UDP port, that port is
 * mapped on the gateway and the mapped address is added to our description as a srflx candidate (DHTNet §8.4), so a
 * peer can reach us behind a NAT that does not allow hole punching. A failed mapping never fails a connection.
 *
 * With a STUN or TURN server configured, each session also asks whether UDP gets out at all (udp-check.ts: the
 * server answers over TCP but not over UDP). When it does not, gathering stops waiting for answers that cannot come,
 * and unless the peer is on our own subnet (UDP on the LAN still works) the session fails with UDP_BLOCKED after
 * `udpBlockedGraceMs` without a connection, instead of waiting for libjuice's ICE timeout: the other transports
 * (ICE-TCP, its TURN/TCP relay) carry the connection, or the user learns what to configure.
 */
import { EventEmitter } from 'node:events'
import type { X509Certificate } from 'node:crypto'
import { networkInterfaces } from 'node:os'
import { isIPv4 } from 'node:net'
import { DhtnetError, isDhtnetError } from '../../errors.js'
import type { Identity } from '../../identity/types.js'
import { publicKeyIds } from '../../identity/ids.js'
import type { Logger } from '../../util/log.js'
import type { PortMapper, PortMapping } from '../../nat/port-mapper.js'
import { addMappedCandidate, freeUdpPort } from '../../nat/mapped-candidate.js'
import type { Link, PathInfo, Transport, TransportConnectOptions, TransportSession, TransportSessionContext } from '../transport.js'
import { bindingMessage, checkBindingMessage } from './binding.js'
import type { IceServerSpec } from './ice-servers.js'
import { parseIceServers } from './ice-servers.js'
import { preloadNative } from './native.js'
import { UdpReachability, type UdpCheckResult } from './udp-check.js'
import { WebRtcPeer } from './webrtc.js'
import type { DataChannelTransport } from './datachannel-transport.js'

export interface WebRtcTransportOptions {
  /** Our device identity: its key signs the identity binding of every connection (binding.ts). */
  identity: Identity
  /** STUN/TURN servers: 'stun:HOST:PORT', 'turn:USER:PASSWORD@HOST:PORT' (TURN over UDP). */
  iceServers?: readonly IceServerSpec[]
  /** Bind ICE to this local address (tests: '127.0.0.1'). Default: every interface. */
  bindAddress?: string
  /** UDP port range for ICE. */
  portRange?: { begin: number; end: number }
  /** UPnP/NAT-PMP: map one UDP port per connection and offer it as a candidate. The caller owns the mapper. */
  portMapper?: PortMapper
  /** After the answer is published, the responder waits this long before its own checks (see WebRtcPeer). */
  answererChecksDelayMs?: number
  /** UDP found blocked (udp-check.ts): fail a session with UDP_BLOCKED after this long without a connection
   *  (default 4000 ms; the ICE-TCP transport, racing, gives up on a pathless peer after ~5 s). */
  udpBlockedGraceMs?: number
  logger: Logger
}

const UDP_BLOCKED_GRACE_MS = 4000

/** After publishing our answer, wait this long before our own connectivity checks (see WebRtcPeer.startChecks). */
const ANSWERER_CHECKS_DELAY_MS = 150

export class WebRtcTransport implements Transport {
  readonly name = 'webrtc'
  private readonly options: WebRtcTransportOptions
  private readonly log: Logger
  private readonly sessions = new Set<WebRtcSession>()
  private readonly closing = new AbortController()
  private readonly udpCheck: UdpReachability | undefined

  constructor(options: WebRtcTransportOptions) {
    const servers = parseIceServers(options.iceServers) // fail early on a bad ICE server
    this.options = options
    this.log = options.logger
    const loopback = options.bindAddress !== undefined && /^(127\.|::1$|localhost$)/.test(options.bindAddress)
    const first = servers[0]
    this.udpCheck = first && !loopback ? new UdpReachability({ hostname: first.hostname, port: first.port }, { bindAddress: options.bindAddress, log: this.log }) : undefined
  }

  /** Load the native library in the background (it is needed as soon as a connection starts). */
  preload(): void {
    preloadNative()
  }

  async createSession(context: TransportSessionContext): Promise<TransportSession> {
    if (this.closing.signal.aborted) throw new DhtnetError('ABORTED', 'the WebRTC transport is closed')
    const role = context.role === 'requester' ? 'offerer' : 'answerer'
    const peerTag = context.connectionId.toString(16).slice(-8)
    const { rtc, mapping } = await this.newPeer(role, `${role === 'offerer' ? 'to' : 'from'}-${peerTag}`)
    const udp = this.udpCheck?.check()
    const session = new WebRtcSession(
      rtc,
      this.options.identity,
      context,
      this.options.answererChecksDelayMs ?? ANSWERER_CHECKS_DELAY_MS,
      udp,
      this.options.udpBlockedGraceMs ?? UDP_BLOCKED_GRACE_MS,
    )
    this.sessions.add(session)
    rtc.once('close', () => this.sessions.delete(session))
    try {
      // no use waiting for STUN/TURN answers over a network that drops UDP
      const gatherUntil = udp?.then((r) => (r.verdict === 'blocked' ? undefined : new Promise<never>(() => {})))
      const description =
        role === 'offerer'
          ? rtc.createOffer({ signal: context.signal, ...(gatherUntil ? { gatherUntil } : {}) })
          : rtc.createAnswer(context.remoteDescription ?? '', { signal: context.signal, ...(gatherUntil ? { gatherUntil } : {}) })
      session.localDescription = await withMappedCandidate(description, mapping)
      return session
    } catch (err) {
      rtc.close(isDhtnetError(err) ? err : undefined)
      throw err
    }
  }

  async close(): Promise<void> {
    this.closing.abort()
    const closed = new DhtnetError('CONNECTION_CLOSED', 'the WebRTC transport was closed')
    const waits = [...this.sessions].map((s) => s.closeAndWait(closed))
    this.sessions.clear()
    await Promise.all(waits)
  }

  private async newPeer(role: 'offerer' | 'answerer', name: string): Promise<{ rtc: WebRtcPeer; mapping: Promise<PortMapping | undefined> | undefined }> {
    const { portMapper: mapper, bindAddress } = this.options
    // With a port mapper: one known local port, so that it can be mapped (libjuice uses one socket per agent).
    let port: number | undefined
    if (mapper) {
      try {
        port = await freeUdpPort(bindAddress)
      } catch (err) {
        this.log('warn', `UPnP: no free local UDP port to map (${(err as Error).message}); connecting without a mapping`)
      }
    }
    const rtc = new WebRtcPeer({
      role,
      iceServers: this.options.iceServers,
      bindAddress,
      portRange: port !== undefined ? { begin: port, end: port } : this.options.portRange,
      logger: this.log,
      name,
    })
    if (!mapper || port === undefined) return { rtc, mapping: undefined }
    const mapped = port
    const mapping = mapper.mapUdp(mapped, { signal: this.closing.signal }).then(
      (m) => m,
      (err: unknown) => {
        this.log('info', `UPnP: no mapping for ${name} (${isDhtnetError(err) ? `${err.code}: ` : ''}${(err as Error).message}); connecting without it`)
        return undefined
      },
    )
    rtc.once('close', () => {
      void mapping.then((m) => (m ? mapper.unmapUdp(mapped) : undefined))
    })
    return { rtc, mapping }
  }
}

/** Our description, plus the srflx candidate of the connection's port mapping when there is one. */
async function withMappedCandidate(description: Promise<string>, mapping: Promise<PortMapping | undefined> | undefined): Promise<string> {
  if (!mapping) return description
  const [sdp, m] = await Promise.all([description, mapping])
  return m ? addMappedCandidate(sdp, m) : sdp
}

/** How long a connection whose identity binding failed stays open (unused) before it is closed. */
const BINDING_FAILURE_LINGER_MS = 1000

class WebRtcSession implements TransportSession {
  localDescription = ''
  private lingering = false

  constructor(
    private readonly rtc: WebRtcPeer,
    private readonly identity: Identity,
    private readonly context: TransportSessionContext,
    private readonly answererChecksDelayMs: number,
    private readonly udp: Promise<UdpCheckResult> | undefined,
    private readonly udpBlockedGraceMs: number,
  ) {}

  async connect(options: TransportConnectOptions): Promise<Link> {
    const rtc = this.rtc
    const remote = (rtc.role === 'offerer' ? options.remoteDescription : this.context.remoteDescription) ?? ''
    const blocked = this.udpBlockedFailure(remote)
    try {
      if (rtc.role === 'offerer') {
        rtc.acceptAnswer(options.remoteDescription ?? '')
      } else {
        // Our own checks start once the answer had time to reach the requester (see WebRtcPeer.startChecks); until
        // then the requester's checks reach us and are answered, so on loopback or an open network nothing waits for
        // this; behind NATs it delays the hole punching by this much.
        setTimeout(() => rtc.startChecks(), this.answererChecksDelayMs).unref()
      }
      await Promise.race([rtc.waitConnected({ signal: options.signal }), blocked.failure])
      blocked.cancel()
      const peerChain = options.peerChain ?? this.context.peerChain
      if (peerChain.length === 0) throw new DhtnetError('INTERNAL_ERROR', 'a WebRTC session was connected without the peer certificate')
      await this.bind(peerChain[0]!, options.signal)
      return new WebRtcLink(rtc)
    } catch (err) {
      blocked.cancel()
      if (isDhtnetError(err, 'IDENTITY_MISMATCH') && !rtc.closed) {
        // Keep the connection (unused) a moment before closing it: the peer's own binding check then sees our
        // binding and reports the mismatch too. Closed at once, the peer may learn of the close before it reads our
        // binding (node-datachannel delivers state changes and messages through different queues).
        this.lingering = true
        setTimeout(() => rtc.close(err), BINDING_FAILURE_LINGER_MS).unref()
      } else {
        rtc.close(isDhtnetError(err) ? err : undefined)
      }
      throw err
    }
  }

  /**
   * Rejects with UDP_BLOCKED `udpBlockedGraceMs` after the UDP check found UDP blocked, unless the peer announced a
   * host candidate on one of our subnets (UDP inside the LAN is not what a firewall blocks) or cancel() came first.
   */
  private udpBlockedFailure(remoteSdp: string): { failure: Promise<never>; cancel: () => void } {
    let timer: NodeJS.Timeout | undefined
    let cancelled = false
    const failure = new Promise<never>((_resolve, reject) => {
      void this.udp?.then((r) => {
        if (cancelled || r.verdict !== 'blocked' || peerOnOurSubnet(remoteSdp)) return
        timer = setTimeout(() => {
          reject(new DhtnetError('UDP_BLOCKED', `UDP seems blocked on this network (${r.detail}): WebRTC found no path to the peer within ${this.udpBlockedGraceMs / 1000} s`))
        }, this.udpBlockedGraceMs)
        timer.unref()
      })
    })
    failure.catch(() => {})
    return {
      failure,
      cancel: () => {
        cancelled = true
        if (timer) clearTimeout(timer)
      },
    }
  }

  /** Exchange and check the identity bindings (binding.ts) before anything else travels on the connection. */
  private async bind(peerCertificate: X509Certificate, signal: AbortSignal): Promise<void> {
    const rtc = this.rtc
    const local = rtc.localFingerprint
    const remote = rtc.remoteFingerprint
    if (!local || !remote) throw new DhtnetError('INTERNAL_ERROR', 'the DTLS fingerprints are not known after the handshake')
    const ours = this.context.role
    const theirs = ours === 'requester' ? 'responder' : 'requester'
    const peerLongId = publicKeyIds(peerCertificate).longId
    const message = bindingMessage(this.identity.privateKey, {
      connectionId: this.context.connectionId,
      signerRole: ours,
      signerFingerprint: local,
      receiverFingerprint: remote,
      signerLongId: this.identity.longId,
      receiverLongId: peerLongId,
    })
    rtc.reliable.send(message)
    const received = await rtc.reliable.takeFirstMessage(signal)
    checkBindingMessage(received, peerCertificate, {
      connectionId: this.context.connectionId,
      signerRole: theirs,
      signerFingerprint: remote,
      receiverFingerprint: local,
      signerLongId: peerLongId,
      receiverLongId: this.identity.longId,
    })
  }

  close(err?: Error): void {
    if (!this.lingering) this.rtc.close(err)
  }

  closeAndWait(err: Error): Promise<void> {
    if (this.rtc.closed) return Promise.resolve()
    const closed = new Promise<void>((resolve) => this.rtc.once('close', () => resolve()))
    this.rtc.close(err)
    return closed
  }
}

/** true when the SDP has a host candidate inside one of our interfaces' subnets (IPv4 by netmask, IPv6 by /64). */
export function peerOnOurSubnet(sdp: string): boolean {
  const hosts: string[] = []
  for (const line of sdp.split(/\r?\n/)) {
    const f = line.startsWith('a=candidate:') ? line.split(' ') : undefined
    if (f && f[7] === 'host' && f[4]) hosts.push(f[4])
  }
  if (hosts.length === 0) return false
  const ours = Object.values(networkInterfaces()).flatMap((list) => list ?? [])
  return hosts.some((ip) =>
    ours.some((o) => {
      if (o.internal) return false
      if (isIPv4(ip)) return o.family === 'IPv4' && sameIpv4Net(ip, o.address, o.netmask)
      return o.family === 'IPv6' && ip.includes(':') && v6Prefix64(ip) === v6Prefix64(o.address)
    }),
  )
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => ((n << 8) | Number(part)) >>> 0, 0)
}

function sameIpv4Net(a: string, b: string, mask: string): boolean {
  const m = ipv4ToInt(mask)
  return (ipv4ToInt(a) & m) >>> 0 === (ipv4ToInt(b) & m) >>> 0
}

function v6Prefix64(ip: string): string {
  const [head = '', tail = ''] = ip.split('%')[0]!.split('::')
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = ip.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h
  return groups
    .slice(0, 4)
    .map((g) => parseInt(g || '0', 16).toString(16))
    .join(':')
}

/** A connected WebRTC peer as a Link: the reliable and the datagram data channels. */
export class WebRtcLink extends EventEmitter implements Link {
  readonly transport = 'webrtc'
  readonly reliable: DataChannelTransport
  readonly datagram: DataChannelTransport

  constructor(readonly rtc: WebRtcPeer) {
    super()
    this.reliable = rtc.reliable
    this.datagram = rtc.datagram
    rtc.once('close', (err?: Error) => this.emit('close', err))
  }

  get path(): PathInfo {
    const pair = this.rtc.selectedCandidatePair()
    const fmt = (c: { address: string; port: number } | undefined): string | undefined =>
      c ? (c.address.includes(':') ? `[${c.address}]:${c.port}` : `${c.address}:${c.port}`) : undefined
    const relayed = pair && (pair.local.type === 'relay' || pair.remote.type === 'relay')
    return {
      transport: 'webrtc',
      candidatePair: pair?.type,
      relay: relayed ? 'udp' : undefined,
      localAddress: fmt(pair?.local),
      remoteAddress: fmt(pair?.remote),
    }
  }

  get wireBytesIn(): number {
    return this.rtc.bytesReceived
  }

  get wireBytesOut(): number {
    return this.rtc.bytesSent
  }

  get closed(): boolean {
    return this.rtc.closed
  }

  close(err?: Error): void {
    this.rtc.close(err)
  }
}
