/**
 * Outgoing connections (connectDevice's side, DHTNet's "initiator": ICE controlled, TLS server): trust the peer's
 * chain, start a session on every transport the policy allows, send one request carrying every description, wait
 * for the answer, connect the transports the answer shares, keep the link the responder chose, start the
 * multiplexer.
 */
import type { X509Certificate } from 'node:crypto'
import { DhtnetError, isDhtnetError, errorMessage } from '../errors.js'
import { SecureDht } from '../dht/secure-dht.js'
import type { Link, Transport, TransportName } from '../transport/transport.js'
import type { Deadline } from '../util/deadline.js'
import type { ManagerContext } from './context.js'
import { dhtnetMux, nativeMux } from './muxes.js'
import type { PeerLink } from './peer-link.js'
import { NATIVE_SIGNALLING_VERSION, PEER_REQUEST_USER_TYPE, type PeerConnectionRequest, type RefusalCode, encodeRequest, newRequestId } from './signalling.js'
import { type Attempt, allowedTransports, closeAttempts, combinedFailure, descriptionIn, linkChosenByPeer, setDescription } from './transports.js'

const REFUSAL_MESSAGES: Record<RefusalCode, string> = {
  REFUSED: 'the peer refused the connection',
  UNTRUSTED: 'the peer does not trust our certificate',
  CERT_NOT_FOUND: 'the peer could not find our certificate on the DHT',
  UNSUPPORTED_TRANSPORT: 'the peer shares no transport with us',
  BUSY: 'the peer is busy with too many incoming connections',
}

/** Sessions started before the peer's certificate was found (local work only: nothing reaches the peer). */
export interface EarlyStart {
  readonly id: bigint
  readonly attempts: Promise<Attempt[]>
}

export class Requester {
  /** Answers we wait for, by request id. */
  private readonly pendingAnswers = new Map<string, { peerId: string; resolve: (answer: PeerConnectionRequest) => void }>()

  constructor(private readonly ctx: ManagerContext) {}

  /** An answer arrived at our keys (signed by `signer`, 64-hex); false when nobody waits for it. */
  onAnswer(answer: PeerConnectionRequest, signer: string): boolean {
    const pending = this.pendingAnswers.get(answer.id.toString())
    if (!pending) {
      this.ctx.log('debug', `ignoring an answer ${answer.id} nobody waits for`)
      return false
    }
    if (pending.peerId !== signer) {
      this.ctx.log('warn', `ignoring an answer ${answer.id} signed by ${signer.slice(0, 16)}…, not by the device we asked`)
      return false
    }
    pending.resolve(answer)
    return true
  }

  close(): void {
    this.pendingAnswers.clear()
  }

  /**
   * Start the sessions that need nothing of the peer (the WebRTC offer: library load, peer connection, local
   * candidates) while its certificate is looked up. Dropped with `abandon` if the lookup fails.
   */
  startEarly(deadline: Deadline): EarlyStart {
    const id = newRequestId()
    const early = allowedTransports(this.ctx.transports, this.ctx.policy).filter((t) => t.name === 'webrtc')
    const attempts = (async () => {
      // on the next turn of the event loop, so that the DHT lookup started just before has sent its requests
      await new Promise<void>((resolve) => setImmediate(resolve))
      return this.startSessions(early, id, [], deadline)
    })()
    attempts.catch(() => {})
    return { id, attempts }
  }

  abandon(early: EarlyStart | undefined): void {
    early?.attempts.then(
      (a) => closeAttempts(a),
      () => {},
    )
  }

  /** A new connection to a device whose chain is known: trust check, request, answer, transports, multiplexer. */
  async connect(peerId: string, chain: X509Certificate[], connType: string, deadline: Deadline, early?: EarlyStart): Promise<PeerLink> {
    const ctx = this.ctx
    const peerCert = chain[0]!
    try {
      if (peerId === ctx.identity.longId) throw new DhtnetError('BAD_PEER_ID', 'cannot connect to our own device id')
      const verdict = ctx.trust.verify(chain, { anonymous: ctx.anonymous })
      if (!verdict.ok) {
        throw new DhtnetError('UNTRUSTED', `refusing to connect to ${peerId}: ${verdict.reason} (${verdict.code})`, {
          hint: ctx.anonymous ? undefined : "trust the peer's CA, allow the peer, or run in anonymous mode",
        })
      }
    } catch (err) {
      this.abandon(early)
      throw err
    }
    const id = early?.id ?? newRequestId()
    deadline.step = 'gathering candidates'
    const earlyAttempts = early ? await deadline.race(early.attempts).catch((err: unknown) => this.sessionFailure(err, [])) : []
    const started = new Set(earlyAttempts.map((a) => a.transport))
    const rest = allowedTransports(ctx.transports, ctx.policy).filter((t) => !started.has(t.name))
    const failures: Array<{ transport: TransportName; error: unknown }> = []
    const attempts = [...earlyAttempts, ...(await this.startSessions(rest, id, chain, deadline, failures))]
    const answerKey = id.toString()
    try {
      if (attempts.length === 0) {
        const why = failures.length > 0 ? combinedFailure(failures, deadline) : undefined
        throw new DhtnetError(isDhtnetError(why) ? why.code : 'ICE_FAILED', `no transport could start (policy "${ctx.policy}")${why ? `: ${why.message}` : ''}`, {
          cause: why,
          hint: isDhtnetError(why) && why.hint ? why.hint : 'check the network configuration and the transport policy',
        })
      }
      const request: PeerConnectionRequest = ctx.emulateDhtnet
        ? { id, iceMsg: '', isAnswer: false, connType }
        : { id, iceMsg: '', isAnswer: false, connType, certificate: ctx.chainPem, native: NATIVE_SIGNALLING_VERSION }
      for (const a of attempts) setDescription(request, a.transport, a.session.localDescription)
      const answer = await this.exchange(peerId, peerCert, request, deadline)
      return await this.connectAnswered(peerId, chain, connType, id, answer, attempts, deadline)
    } catch (err) {
      closeAttempts(attempts, undefined, isDhtnetError(err) ? err : undefined)
      throw err
    } finally {
      this.pendingAnswers.delete(answerKey)
    }
  }

  /** Publish the request and wait for the answer. */
  private async exchange(peerId: string, peerCert: X509Certificate, request: PeerConnectionRequest, deadline: Deadline): Promise<PeerConnectionRequest> {
    const ctx = this.ctx
    let resolveAnswer!: (req: PeerConnectionRequest) => void
    const answered = new Promise<PeerConnectionRequest>((resolve) => (resolveAnswer = resolve))
    this.pendingAnswers.set(request.id.toString(), { peerId, resolve: resolveAnswer })
    // Listening starts here at the latest (answers arrive at our keys; a listen also returns what is already
    // stored). Not earlier when not started: the values of earlier runs stored at our keys (answers to previous
    // requests, 10 min) each cost an RSA decryption; here they are decrypted while we wait for the peer's answer.
    ctx.startListening()
    deadline.step = 'publishing the request on the DHT'
    // The answer may come before the put completes (a put also waits for slow or dead storage nodes).
    const put = ctx.dht
      .putEncrypted(
        SecureDht.peerKey(peerId),
        peerCert,
        { data: encodeRequest(request), userType: PEER_REQUEST_USER_TYPE, ...(request.connType ? { pushType: request.connType } : {}) },
        { signal: deadline.signal },
      )
      .then(
        (r) => ({ put: r.ok, error: undefined as unknown }),
        (error: unknown) => ({ put: false, error }),
      )
    const first = await deadline.race(Promise.race([answered.then((answer) => ({ answer })), put]))
    deadline.step = 'waiting for the answer on the DHT (no answer yet: the peer may be offline)'
    let answer: PeerConnectionRequest
    if ('answer' in first) answer = first.answer
    else {
      if (!first.put) {
        deadline.throwIfAborted()
        throw new DhtnetError(
          'PEER_NOT_FOUND',
          `the connection request to ${peerId} could not be stored on the DHT (${first.error ? (first.error as Error).message : 'no node accepted it'})`,
          { hint: 'check the DHT bootstrap and that the node is connected', cause: first.error },
        )
      }
      answer = await deadline.race(answered)
    }
    if (answer.refused) {
      const code = answer.refused === 'BUSY' ? 'REFUSED' : answer.refused
      throw new DhtnetError(code, `${peerId}: ${REFUSAL_MESSAGES[answer.refused]}`, {
        hint: answer.refused === 'UNTRUSTED' ? 'the peer must trust our CA (or run anonymous)' : undefined,
      })
    }
    return answer
  }

  /** Connect the transports the answer shares with our request; the multiplexer that fits the peer on the winner. */
  private async connectAnswered(
    peerId: string,
    chain: X509Certificate[],
    connType: string,
    id: bigint,
    answer: PeerConnectionRequest,
    attempts: Attempt[],
    deadline: Deadline,
  ): Promise<PeerLink> {
    const ctx = this.ctx
    const peerCert = chain[0]!
    const peerIsNative = !ctx.emulateDhtnet && answer.native !== undefined
    // a C++ DHTNet peer speaks only ICE-TCP (it ignores our other descriptions)
    const usable = attempts.filter((a) => (peerIsNative || a.transport === 'ice-tcp') && descriptionIn(answer, a.transport) !== undefined)
    closeAttempts(attempts.filter((a) => !usable.includes(a)))
    if (usable.length === 0) {
      throw new DhtnetError(
        'UNSUPPORTED_TRANSPORT',
        peerIsNative
          ? `${peerId} answered with no transport we offered (our policy: "${ctx.policy}")`
          : `${peerId} is a C++ DHTNet device, which speaks only ICE-TCP + TLS, and our transport policy is "${ctx.policy}"`,
        { hint: peerIsNative ? 'use the same transport policy on both sides, or "auto"' : 'use the transport policy "auto" or "tcp"' },
      )
    }
    deadline.step = `ICE connectivity checks and the secure handshake (${usable.map((a) => a.transport).join(' and ')})`
    const connect = (a: Attempt): Promise<Link> =>
      a.session.connect({
        remoteDescription: descriptionIn(answer, a.transport),
        peerIsNative,
        peerChain: chain,
        signal: AbortSignal.any([deadline.signal, a.controller.signal]),
      })
    if (peerIsNative) {
      const { link, mux } = await deadline.race(linkChosenByPeer(usable, connect, (l) => nativeMux(ctx, l, peerCert, true, true), deadline))
      return ctx.register({ id, peerId, chain, initiator: true, connType, link, mux })
    }
    const attempt = usable[0]!
    const link = await deadline.race(connect(attempt))
    try {
      const mux = dhtnetMux(ctx, link, peerCert, true)
      return ctx.register({ id, peerId, chain, initiator: true, connType, link, mux })
    } catch (err) {
      link.close(isDhtnetError(err) ? err : undefined)
      throw err
    }
  }

  /** Start a session on each transport, in parallel; a transport that cannot start is logged and left out. */
  private async startSessions(
    transports: readonly Transport[],
    id: bigint,
    chain: readonly X509Certificate[],
    deadline: Deadline,
    failures: Array<{ transport: TransportName; error: unknown }> = [],
  ): Promise<Attempt[]> {
    const started = await Promise.allSettled(
      transports.map(async (t): Promise<Attempt> => {
        const controller = new AbortController()
        const session = await t.createSession({
          role: 'requester',
          connectionId: id,
          peerChain: chain,
          signal: AbortSignal.any([deadline.signal, controller.signal]),
        })
        return { transport: t.name, session, controller }
      }),
    )
    const attempts: Attempt[] = []
    started.forEach((r, i) => {
      if (r.status === 'fulfilled') attempts.push(r.value)
      else {
        failures.push({ transport: transports[i]!.name, error: r.reason })
        this.ctx.log('info', `the ${transports[i]!.name} transport could not start: ${errorMessage(r.reason)}`)
      }
    })
    if (deadline.signal.aborted) {
      closeAttempts(attempts)
      throw deadline.error()
    }
    return attempts
  }

  private sessionFailure(err: unknown, fallback: Attempt[]): Attempt[] {
    if (isDhtnetError(err) && (err.code === 'TIMEOUT' || err.code === 'ABORTED')) throw err
    this.ctx.log('info', `a transport could not start: ${errorMessage(err)}`)
    return fallback
  }
}
