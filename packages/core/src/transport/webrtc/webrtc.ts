/**
 * One WebRTC peer connection (node-datachannel: libjuice ICE, DTLS, SCTP) carrying two pre-negotiated data
 * channels: a reliable ordered one for the multiplexer and an unordered one without retransmission for datagrams.
 *
 * Signalling is non-trickle: each side gathers its candidates, then hands over one complete SDP (the connection
 * layer sends it in one signed DHT value). Choices that make a loopback connect take a few milliseconds:
 *  - both data channels are negotiated out of band (ids 0 and 1): no DCEP round trip after SCTP is up;
 *  - auto-negotiation is off: each side produces exactly one description;
 *  - the answerer holds back the offerer's candidates (see startChecks): its connectivity checks, and so its DTLS
 *    ClientHello (the answerer is the DTLS client), cannot reach the offerer before the offerer has applied the
 *    answer. Without this, measured here: ~1 connect in 3 stalled 1 s (the first ClientHello is dropped and DTLS
 *    retransmits after 1 s), and libdatachannel sometimes tore the connection down inside setRemoteDescription.
 *    With it: ~50 ms from answer to connected on loopback (libjuice's check pacing), no stall seen in 120 runs.
 *  - the peer's relay candidates reach libjuice `relayCandidateDelayMs` (1 s) after the others, on both sides: a
 *    relayed pair can only succeed once the peer's NAT lets the relay's address in, i.e. once the peer checked our
 *    relay candidate; held back, it cannot beat a direct pair that works (measured in the NAT lab: eim↔eim with TURN
 *    selected a relayed pair without this), and a relay still takes over within a second when nothing direct works.
 *
 * Identity: the DTLS certificate is node-datachannel's own; its SHA-256 fingerprint is inside the SDP, which the
 * connection layer carries in a value signed by the device key. Once connected we check that the certificate the
 * peer presented has that fingerprint (libdatachannel does it too; we do not rely on it alone).
 */
import { EventEmitter } from 'node:events'
import type { DataChannel, PeerConnection, SelectedCandidateInfo } from 'node-datachannel'
import { DhtnetError, throwIfAborted } from '../../errors.js'
import { DataChannelTransport } from './datachannel-transport.js'
import { type IceServerSpec, parseIceServers } from './ice-servers.js'
import { acquireNative, nativeModule } from './native.js'
import { checkRemoteSdp, normalizeFingerprint, sdpCandidates, sdpFingerprint } from './sdp.js'
import { type Logger, type LoggerLike, toLogger } from '../../util/log.js'

export type WebRtcRole = 'offerer' | 'answerer'

export interface WebRtcPeerOptions {
  role: WebRtcRole
  /** STUN/TURN servers: 'stun:host:port', 'turn:user:pass@host:port' (TURN over UDP only). */
  iceServers?: readonly IceServerSpec[]
  /** Bind ICE sockets to this local address (e.g. '127.0.0.1' in tests). Default: all interfaces. */
  bindAddress?: string
  /** Local UDP port range for ICE. */
  portRange?: { begin: number; end: number }
  /** 'relay' uses TURN relays only. */
  iceTransportPolicy?: 'all' | 'relay'
  /** Longest wait for candidate gathering (STUN/TURN answers) before the description is sent as is. Default 3 s. */
  gatherTimeoutMs?: number
  /** send() on the reliable channel returns false at this many buffered bytes. Default 1 MiB. */
  highWaterMark?: number
  /** 'drain' fires on the reliable channel when the buffered bytes fall below this. Default 256 KiB. */
  lowWaterMark?: number
  logger?: LoggerLike
  /** Name in logs. */
  name?: string
  /** Answerer: start own connectivity checks at the latest this long after the answer was created (default 1 s). */
  holdChecksMs?: number
  /** The peer's relay candidates are given to ICE this long after its other candidates (default 1000 ms). */
  relayCandidateDelayMs?: number
}

export interface CandidateInfo {
  /** host, srflx, prflx or relay */
  type: string
  address: string
  port: number
  /** UDP or TCP */
  transport: string
}

export interface CandidatePair {
  local: CandidateInfo
  remote: CandidateInfo
  /** e.g. 'host/host', 'srflx/relay' (local/remote) */
  type: string
}

export type WebRtcState = 'new' | 'signalling' | 'connecting' | 'connected' | 'closed'

const RELIABLE_LABEL = 'dhtnet-mux'
const DATAGRAM_LABEL = 'dhtnet-dgram'

let counter = 0

/**
 * Events: 'connected'; 'close' (err?: Error) once.
 */
export class WebRtcPeer extends EventEmitter {
  readonly role: WebRtcRole
  readonly name: string
  /** Ordered, reliable: the multiplexer's transport. */
  reliable!: DataChannelTransport
  /** Unordered, no retransmission: datagrams. */
  datagram!: DataChannelTransport
  readonly createdAt = Date.now()

  private readonly pc: PeerConnection
  private dcReliable?: DataChannel
  private dcDatagram?: DataChannel
  private readonly options: WebRtcPeerOptions
  private readonly log: Logger
  private readonly release: () => void
  private _state: WebRtcState = 'new'
  private closeError: Error | undefined
  private expectedFingerprint: string | undefined
  private ownFingerprint: string | undefined
  private iceConnected = false
  private connectedPromise: Promise<void> | undefined
  private pair: CandidatePair | null = null
  private finalBytes: { sent: number; received: number } | undefined
  private heldCandidates: string[] = []
  private heldMid = '0'
  private checksTimer: NodeJS.Timeout | undefined
  private relayTimer: NodeJS.Timeout | undefined

  constructor(options: WebRtcPeerOptions) {
    super()
    this.options = options
    this.role = options.role
    this.name = options.name ?? `pc${++counter}-${options.role}`
    this.log = toLogger(options.logger)
    const iceServers = parseIceServers(options.iceServers)
    let ndc: ReturnType<typeof nativeModule>
    try {
      ndc = nativeModule()
    } catch (err) {
      throw new DhtnetError('WEBRTC_ERROR', `cannot load node-datachannel: ${(err as Error).message}`, { cause: err, hint: 'reinstall the dependencies (pnpm install)' })
    }
    this.release = acquireNative(this, this.log)
    try {
      this.pc = new ndc.PeerConnection(this.name, {
        iceServers,
        disableAutoNegotiation: true,
        ...(options.bindAddress ? { bindAddress: options.bindAddress } : {}),
        ...(options.portRange ? { portRangeBegin: options.portRange.begin, portRangeEnd: options.portRange.end } : {}),
        ...(options.iceTransportPolicy ? { iceTransportPolicy: options.iceTransportPolicy } : {}),
      })
    } catch (err) {
      this.release()
      throw new DhtnetError('WEBRTC_ERROR', `cannot create a peer connection: ${(err as Error).message}`, { cause: err })
    }
    this.pc.onStateChange((s) => this.onState(s))
    this.pc.onIceStateChange((s) => {
      if (s === 'connected' || s === 'completed') this.iceConnected = true
    })
  }

  get state(): WebRtcState {
    return this._state
  }

  get closed(): boolean {
    return this._state === 'closed'
  }

  /** Offerer: create the channels, gather, and return the complete offer SDP. `gatherUntil`: stop waiting for the
   *  STUN/TURN answers once it resolves (they will not come: UDP is blocked). */
  async createOffer(options: { signal?: AbortSignal; gatherUntil?: Promise<unknown> } = {}): Promise<string> {
    if (this.role !== 'offerer') throw new DhtnetError('WEBRTC_ERROR', 'createOffer() is for the offerer')
    this.assertState('new')
    this._state = 'signalling'
    this.createChannels()
    this.pc.setLocalDescription('offer')
    return this.gatheredDescription(options.signal, options.gatherUntil)
  }

  /** Answerer: apply the peer's offer, create the channels, gather, and return the complete answer SDP. */
  async createAnswer(offerSdp: string, options: { signal?: AbortSignal; gatherUntil?: Promise<unknown> } = {}): Promise<string> {
    if (this.role !== 'answerer') throw new DhtnetError('WEBRTC_ERROR', 'createAnswer() is for the answerer')
    this.assertState('new')
    this.expectedFingerprint = checkRemoteSdp(offerSdp, 'the offer')
    this._state = 'signalling'
    // Make the offerer the DTLS client (see the header comment).
    let offer = offerSdp
    // Hold the offerer's candidates back (see startChecks): the offer is applied without them.
    const lines = offer.split(/\r?\n/)
    this.heldCandidates = lines.filter((l) => l.startsWith('a=candidate:')).map((l) => l.slice(2))
    offer = lines.filter((l) => !l.startsWith('a=candidate:') && !l.startsWith('a=end-of-candidates')).join('\r\n')
    const mid = /^a=mid:(\S+)/m.exec(offer)?.[1] ?? '0'
    this.heldMid = mid
    try {
      this.pc.setRemoteDescription(offer, 'offer')
    } catch (err) {
      throw new DhtnetError('BAD_SDP', `the offer was refused by the WebRTC stack: ${(err as Error).message}`, { cause: err })
    }
    this.createChannels()
    this.pc.setLocalDescription('answer')
    const sdp = await this.gatheredDescription(options.signal, options.gatherUntil)
    this._state = 'connecting'
    this.checksTimer = setTimeout(() => this.startChecks(), this.options.holdChecksMs ?? 1000)
    return sdp
  }

  /**
   * Answerer: start our own connectivity checks towards the offerer's candidates. Call it once the answer is on its
   * way (plus a little time for it to arrive); `createAnswer` also schedules it after `holdChecksMs`.
   *
   * Why: if our checks reach the offerer before it has applied our answer, libdatachannel may complete ICE in the
   * middle of setRemoteDescription and tear the connection down ("Got a remote candidate without ICE transport",
   * or a failed DTLS handshake). Until then the offerer's own checks still reach us and are answered (we learn it
   * as a peer-reflexive candidate), so on loopback or an open network nothing waits for this.
   */
  startChecks(): void {
    if (this.checksTimer) {
      clearTimeout(this.checksTimer)
      this.checksTimer = undefined
    }
    const held = this.heldCandidates
    this.heldCandidates = []
    if (this._state === 'closed') return
    const relays = held.filter(isRelayCandidate)
    this.addRemoteCandidates(
      held.filter((c) => !isRelayCandidate(c)),
      this.heldMid,
    )
    this.addRelayCandidatesLater(relays, this.heldMid)
  }

  private addRemoteCandidates(candidates: readonly string[], mid: string): void {
    if (this._state === 'closed') return
    for (const c of candidates) {
      try {
        this.pc.addRemoteCandidate(c, mid)
      } catch (err) {
        this.log('debug', `${this.name}: remote candidate "${c}" refused: ${(err as Error).message}`)
      }
    }
  }

  /** The peer's relay candidates, after the others had their head start (see the header comment). */
  private addRelayCandidatesLater(relays: readonly string[], mid: string): void {
    if (relays.length === 0) return
    this.relayTimer = setTimeout(() => {
      this.relayTimer = undefined
      if (this._state !== 'connected') this.addRemoteCandidates(relays, mid)
    }, this.options.relayCandidateDelayMs ?? 1000)
    this.relayTimer.unref()
  }

  /** Offerer: apply the peer's answer; connectivity checks start. */
  acceptAnswer(answerSdp: string): void {
    if (this.role !== 'offerer') throw new DhtnetError('WEBRTC_ERROR', 'acceptAnswer() is for the offerer')
    this.assertState('signalling')
    this.expectedFingerprint = checkRemoteSdp(answerSdp, 'the answer')
    // the answer's relay candidates come later (see the header comment)
    const lines = answerSdp.split(/\r?\n/)
    const relays = lines.filter((l) => l.startsWith('a=candidate:') && isRelayCandidate(l)).map((l) => l.slice(2))
    const mid = /^a=mid:(\S+)/m.exec(answerSdp)?.[1] ?? '0'
    if (relays.length > 0) answerSdp = lines.filter((l) => !(l.startsWith('a=candidate:') && isRelayCandidate(l)) && l !== 'a=end-of-candidates').join('\r\n')
    try {
      this.pc.setRemoteDescription(answerSdp, 'answer')
    } catch (err) {
      const message = (err as Error).message
      if (/without ICE transport/.test(message)) {
        // libdatachannel tore the connection down while applying a valid answer (a race inside the library when
        // ICE completes during setRemoteDescription). Transient: a new attempt normally succeeds.
        const e = new DhtnetError('ICE_FAILED', `the WebRTC stack failed while applying the answer: ${message}`, { cause: err, retryable: true })
        this.close(e)
        throw e
      }
      throw new DhtnetError('BAD_SDP', `the answer was refused by the WebRTC stack: ${message}`, { cause: err })
    }
    this._state = 'connecting'
    this.addRelayCandidatesLater(relays, mid)
  }

  /**
   * Resolves once DTLS is up, the peer's certificate matches the fingerprint of its SDP, and both data channels are
   * open. Rejects with ICE_FAILED, UNTRUSTED, TIMEOUT or ABORTED (and closes the connection).
   */
  waitConnected(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    if (!this.connectedPromise) {
      this.connectedPromise = new Promise<void>((resolve, reject) => {
        if (this._state === 'connected') return resolve()
        if (this._state === 'closed') return reject(this.closeError ?? closedError())
        const done = (err?: Error) => {
          this.off('connected', onOk)
          this.off('close', onClose)
          if (err) reject(err)
          else resolve()
        }
        const onOk = () => done()
        const onClose = (err?: Error) => done(err ?? closedError())
        this.on('connected', onOk)
        this.on('close', onClose)
      })
      this.connectedPromise.catch(() => {})
    }
    const { signal, timeoutMs } = options
    if (!signal && !timeoutMs) return this.connectedPromise
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const cleanup = () => {
        if (timer) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const onAbort = () => {
        cleanup()
        const err = new DhtnetError('ABORTED', 'connection aborted', { cause: signal?.reason })
        this.close(err)
        reject(err)
      }
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      if (timeoutMs) {
        timer = setTimeout(() => {
          cleanup()
          const err = new DhtnetError(
            'TIMEOUT',
            this.iceConnected
              ? `the DTLS/SCTP handshake did not finish within ${timeoutMs} ms after ICE connected`
              : `ICE found no working path to the peer within ${timeoutMs} ms`,
            { hint: this.iceConnected ? undefined : 'check firewalls; configure a TURN server (turn:USER:PASSWORD@HOST:PORT)' },
          )
          this.close(err)
          reject(err)
        }, timeoutMs)
      }
      this.connectedPromise!.then(
        () => {
          cleanup()
          resolve()
        },
        (err: Error) => {
          cleanup()
          reject(err)
        },
      )
    })
  }

  /** The candidate pair in use (set once connected). */
  selectedCandidatePair(): CandidatePair | null {
    if (this.pair || this._state !== 'connected') return this.pair
    try {
      const p = this.pc.getSelectedCandidatePair()
      if (p) this.pair = toPair(p.local, p.remote)
    } catch {
      // not available
    }
    return this.pair
  }

  /** The peer's address as "ip:port" (from the selected pair). */
  remoteAddress(): string | undefined {
    const p = this.selectedCandidatePair()
    if (!p) return undefined
    return p.remote.address.includes(':') ? `[${p.remote.address}]:${p.remote.port}` : `${p.remote.address}:${p.remote.port}`
  }

  /** SHA-256 fingerprint (AA:BB:..) of our own DTLS certificate, as in our description. */
  get localFingerprint(): string | undefined {
    return this.ownFingerprint
  }

  /** SHA-256 fingerprint (AA:BB:..) the peer's DTLS certificate was checked against. */
  get remoteFingerprint(): string | undefined {
    return this._state === 'connected' ? this.expectedFingerprint : undefined
  }

  /** Bytes on the wire (all layers), as libdatachannel counts them. */
  get bytesSent(): number {
    if (this.finalBytes) return this.finalBytes.sent
    try {
      return this.pc.bytesSent()
    } catch {
      return 0
    }
  }

  get bytesReceived(): number {
    if (this.finalBytes) return this.finalBytes.received
    try {
      return this.pc.bytesReceived()
    } catch {
      return 0
    }
  }

  /** Round-trip time estimate in ms from SCTP, if known. */
  get rttMs(): number | undefined {
    try {
      const r = this.pc.rtt()
      return r >= 0 ? r : undefined
    } catch {
      return undefined
    }
  }

  /** Close the connection and both channels; 'close' fires once with `err`. Never throws. */
  close(err?: Error): void {
    if (this._state === 'closed') return
    const wasConnected = this._state === 'connected'
    this._state = 'closed'
    this.closeError = err
    if (this.checksTimer) clearTimeout(this.checksTimer)
    if (this.relayTimer) clearTimeout(this.relayTimer)
    if (wasConnected) {
      try {
        this.finalBytes = { sent: this.pc.bytesSent(), received: this.pc.bytesReceived() }
      } catch {
        // ignore
      }
    }
    // undefined until the channels are created (the fields are declared for the connected state)
    ;(this.reliable as DataChannelTransport | undefined)?.close(err)
    ;(this.datagram as DataChannelTransport | undefined)?.close(err)
    try {
      this.pc.close()
    } catch {
      // already closed
    }
    this.release()
    if (err) this.log('debug', `${this.name}: closed: ${err.message}`)
    this.emit('close', err)
  }

  // -----------------------------------------------------------------------------------------------------------

  private assertState(expected: WebRtcState): void {
    if (this._state === 'closed') throw this.closeError ?? closedError()
    if (this._state !== expected) throw new DhtnetError('WEBRTC_ERROR', `${this.name}: expected state ${expected}, in ${this._state}`)
  }

  private createChannels(): void {
    this.dcReliable = this.pc.createDataChannel(RELIABLE_LABEL, { negotiated: true, id: 0 })
    this.dcDatagram = this.pc.createDataChannel(DATAGRAM_LABEL, { negotiated: true, id: 1, unordered: true, maxRetransmits: 0 })
    this.reliable = new DataChannelTransport(this.dcReliable, {
      reliable: true,
      highWaterMark: this.options.highWaterMark ?? 1024 * 1024,
      lowWaterMark: this.options.lowWaterMark ?? 256 * 1024,
    })
    this.datagram = new DataChannelTransport(this.dcDatagram, { reliable: false })
    const onOpen = () => this.checkConnected()
    this.reliable.on('open', onOpen)
    this.datagram.on('open', onOpen)
    // A channel closing means the connection is over (the peer closed it, or SCTP died).
    const onChannelClose = (err?: Error) => {
      if (this._state !== 'closed') this.close(err ?? new DhtnetError('CONNECTION_CLOSED', 'the peer closed the connection'))
    }
    this.reliable.on('close', onChannelClose)
    this.datagram.on('close', onChannelClose)
  }

  private async gatheredDescription(signal: AbortSignal | undefined, until?: Promise<unknown>): Promise<string> {
    throwIfAborted(signal)
    const limit = this.options.gatherTimeoutMs ?? 3000
    if (this.pc.gatheringState() !== 'complete') {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => finish(), limit)
        const onAbort = () => finish(new DhtnetError('ABORTED', 'connection aborted', { cause: signal?.reason }))
        const onClose = (err?: Error) => finish(err ?? closedError())
        const finish = (err?: Error) => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          this.off('close', onClose)
          this.off('gathered', onGathered)
          if (err) reject(err)
          else resolve()
        }
        const onGathered = () => finish()
        void until?.then(
          () => finish(),
          () => {},
        )
        this.on('gathered', onGathered)
        this.on('close', onClose)
        signal?.addEventListener('abort', onAbort, { once: true })
        this.pc.onGatheringStateChange((s) => {
          if (s === 'complete') this.emit('gathered')
        })
        if (this.pc.gatheringState() === 'complete') finish()
      })
    }
    if (this._state === 'closed') throw this.closeError ?? closedError()
    const desc = this.pc.localDescription()
    if (!desc) throw new DhtnetError('WEBRTC_ERROR', `${this.name}: no local description was produced`)
    this.ownFingerprint = sdpFingerprint(desc.sdp)
    if (sdpCandidates(desc.sdp).length === 0) {
      throw new DhtnetError('ICE_FAILED', 'no ICE candidate could be gathered (no usable network interface?)', {
        hint: 'check the network configuration or the bind address',
      })
    }
    return desc.sdp
  }

  private onState(state: string): void {
    if (this._state === 'closed') return
    if (state === 'connected') {
      this.checkConnected()
    } else if (state === 'failed') {
      let ice = ''
      try {
        ice = this.pc.iceState()
      } catch {
        // closed
      }
      if (ice === 'connected' || ice === 'completed') this.iceConnected = true
      // A path exists but the handshake on it failed: retryable (once, by the connection layer). libdatachannel
      // 0.24.5 with OpenSSL 1.1.1 still fails a DTLS handshake now and then with "Handshake failed: fatal I/O error"
      // and nothing wrong on the wire (seen in the NAT lab's eim↔eim case; libdatachannel#1632 describes the same
      // signature); a new peer connection succeeds. A certificate that does not match the signed fingerprint fails
      // the same way and gets the same one retry.
      this.close(
        this.iceConnected
          ? new DhtnetError(
              'ICE_FAILED',
              'the DTLS handshake failed after ICE connected (a certificate that does not match the signed fingerprint, or a handshake error inside the WebRTC library)',
              {
                retryable: true,
              },
            )
          : new DhtnetError('ICE_FAILED', 'ICE found no working path to the peer', {
              hint: 'check firewalls; configure a TURN server (turn:USER:PASSWORD@HOST:PORT)',
            }),
      )
    } else if (state === 'disconnected') {
      // Before 'connected' with ICE up: the peer gave up its side (its own handshake failed): retryable like above.
      this.close(
        new DhtnetError('CONNECTION_CLOSED', 'the connection to the peer was lost (ICE disconnected)', {
          retryable: this._state !== 'connected' && this.iceConnected,
        }),
      )
    } else if (state === 'closed') {
      this.close(new DhtnetError('CONNECTION_CLOSED', 'the peer connection closed'))
    }
  }

  /** connected = DTLS up + fingerprint verified + both channels open. */
  private checkConnected(): void {
    if (this._state === 'connected' || this._state === 'closed') return
    let pcState: string
    try {
      pcState = this.pc.state()
    } catch {
      return
    }
    const reliable = this.reliable as DataChannelTransport | undefined // undefined until the channels are created
    const datagram = this.datagram as DataChannelTransport | undefined
    if (pcState !== 'connected' || !reliable?.isOpen || !datagram?.isOpen) return
    // Only meaningful once connected: before the handshake libdatachannel reports an empty sha-1 value.
    const presented = this.pc.remoteFingerprint()
    const got = normalizeFingerprint(presented.value)
    if (presented.algorithm !== 'sha-256' || !this.expectedFingerprint || got !== this.expectedFingerprint) {
      this.close(
        new DhtnetError(
          'UNTRUSTED',
          `the peer's DTLS certificate (${presented.algorithm} ${got || 'none'}) does not match the fingerprint in its signed description (${this.expectedFingerprint ?? 'none'})`,
        ),
      )
      return
    }
    this._state = 'connected'
    this.selectedCandidatePair()
    this.emit('connected')
  }
}

/** `candidate:… typ relay …` (with or without the `a=` prefix). */
function isRelayCandidate(line: string): boolean {
  return / typ relay( |$)/.test(line)
}

function closedError(): DhtnetError {
  return new DhtnetError('CONNECTION_CLOSED', 'the peer connection is closed')
}

function toCandidate(c: SelectedCandidateInfo): CandidateInfo {
  return { type: c.type, address: c.address, port: c.port, transport: c.transportType }
}

function toPair(local: SelectedCandidateInfo, remote: SelectedCandidateInfo): CandidatePair {
  const l = toCandidate(local)
  const r = toCandidate(remote)
  return { local: l, remote: r, type: `${l.type}/${r.type}` }
}
