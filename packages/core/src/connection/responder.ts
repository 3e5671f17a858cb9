/**
 * Incoming connections (the DHT responder, DHTNet's "-l" side: ICE controlling, TLS client): find and trust the
 * requester's chain before any transport work, start a session on every transport both sides share, answer with
 * every description, keep the first link that authenticates, start the multiplexer on it.
 */
import { type X509Certificate, createPublicKey } from 'node:crypto'
import { DhtnetError, isDhtnetError, errorMessage } from '../errors.js'
import { publicKeyIds } from '../identity/ids.js'
import { SecureDht } from '../dht/secure-dht.js'
import type { Transport } from '../transport/transport.js'
import { Deadline } from '../util/deadline.js'
import { KeyedTokenBuckets } from '../util/token-buckets.js'
import type { ManagerContext } from './context.js'
import { dhtnetMux, nativeMux } from './muxes.js'
import { NATIVE_SIGNALLING_VERSION, PEER_REQUEST_USER_TYPE, type PeerConnectionRequest, type RefusalCode, encodeRequest } from './signalling.js'
import { type Attempt, allowedTransports, closeAttempts, descriptionIn, firstLink, setDescription } from './transports.js'

export interface ResponderOptions {
  /** Do not answer refused requests, even from trusted devices (they then time out instead of learning why). */
  readonly silentRefusals: boolean
  /** Tell untrusted devices (or ones whose certificate is not found) that they were refused: 'limited' answers
   *  at most one per second (burst 4) and drops the rest silently; 'never' is DHTNet's silence; 'always' answers all. */
  readonly refuseUntrusted: 'limited' | 'never' | 'always'
  /** Most incoming requests handled at once, from the first look at the request to the end of the handshake. */
  readonly maxPendingIncoming: number
  /** Accept or refuse an incoming connection, after the trust check. */
  readonly onIceRequest: ((peerCert: X509Certificate) => boolean | Promise<boolean>) | undefined
}

/** What happened to incoming requests (counters since start). */
export interface ResponderStats {
  /** Requests handled past the rate limits. */
  handled: number
  /** Dropped: the signer sent more than its rate (burst 16, then 4 per second). */
  rateLimited: number
  /** Dropped: too many requests in progress at once. */
  busy: number
  /** Dropped: the lookups of unknown signers' certificates on the DHT are over their rate. */
  lookupsLimited: number
  /** Refused: untrusted chain, or no certificate found. */
  untrusted: number
  /** Of those, how many were told (a signed, encrypted refusal on the DHT). */
  untrustedTold: number
  /** Refused with an answer (a trusted device: declined by onIceRequest, or no shared transport). */
  refused: number
  /** Connections established. */
  connected: number
}

/** Requests one signer may send at once, and how many more per second. */
const SIGNER_BURST = 16
const SIGNER_PER_SECOND = 4
/** DHT certificate lookups for signers whose request carried no usable chain. */
const LOOKUP_BURST = 8
const LOOKUPS_PER_SECOND = 2
/** A certificate not on the DHT yet (its device just started) is looked up once more after this long. */
const CERTIFICATE_RETRY_DELAY_MS = 1000
/** Refusals sent to untrusted requesters (each costs a signature and a DHT put), all of them together. */
const UNTRUSTED_REFUSAL_BURST = 4
const UNTRUSTED_REFUSALS_PER_SECOND = 1

export class Responder {
  /** Requests being handled (trust check, transports, handshake). */
  private inFlight = 0
  private readonly perSigner = new KeyedTokenBuckets(SIGNER_BURST, SIGNER_PER_SECOND)
  private readonly lookups = new KeyedTokenBuckets(LOOKUP_BURST, LOOKUPS_PER_SECOND, 1)
  private readonly untrustedRefusals = new KeyedTokenBuckets(UNTRUSTED_REFUSAL_BURST, UNTRUSTED_REFUSALS_PER_SECOND, 1)
  readonly stats: ResponderStats = { handled: 0, rateLimited: 0, busy: 0, lookupsLimited: 0, untrusted: 0, untrustedTold: 0, refused: 0, connected: 0 }

  constructor(
    private readonly ctx: ManagerContext,
    private readonly options: () => ResponderOptions,
  ) {}

  get pending(): number {
    return this.inFlight
  }

  /** A request arrived at our keys (`legacy`: at the 40-hex key, so the answer goes to the requester's legacy key). */
  async handle(req: PeerConnectionRequest, owner: Buffer, signer: string, legacy: boolean): Promise<void> {
    const ctx = this.ctx
    const options = this.options()
    // Cheap checks first: nothing below this costs us anything the sender can multiply beyond these rates.
    if (!this.perSigner.take(signer)) {
      this.stats.rateLimited++
      return
    }
    const ownerIds = publicKeyIds(owner)
    const replyKey = SecureDht.peerKey(legacy ? ownerIds.id : ownerIds.longId)
    const ownerKey = createPublicKey({ key: owner, format: 'der', type: 'spki' })
    const peerIsNative = !ctx.emulateDhtnet && req.native !== undefined
    if (this.inFlight >= options.maxPendingIncoming) {
      this.stats.busy++
      ctx.log('debug', `dropped a request from ${ownerIds.id}: ${this.inFlight} requests in progress`)
      return
    }
    this.stats.handled++
    const deadline = new Deadline(ctx.connectTimeoutMs, `incoming connection from ${signer.slice(0, 16)}…`, undefined, ctx.closing)
    deadline.onStep = (step, ms) => ctx.log('debug', `incoming ${req.id}: +${ms.toFixed(0)} ms: ${step}`)
    /** A trusted device is told why (unless silentRefusals); a stranger within the refusal budget (refuseUntrusted). */
    const refuse = async (code: RefusalCode, why: string, trusted: boolean): Promise<void> => {
      ctx.log('info', `refused a connection from ${ownerIds.id}: ${why}`)
      if (trusted) this.stats.refused++
      else this.stats.untrusted++
      // a C++ DHTNet peer does not understand refusals: it just waits for its timeout
      if (!peerIsNative) return
      if (trusted ? options.silentRefusals : !this.tellUntrusted(options.refuseUntrusted)) return
      if (!trusted) this.stats.untrustedTold++
      const refusal: PeerConnectionRequest = { id: req.id, iceMsg: '', isAnswer: true, connType: '', refused: code, native: NATIVE_SIGNALLING_VERSION }
      try {
        await deadline.race(ctx.dht.putEncrypted(replyKey, ownerKey, { data: encodeRequest(refusal), userType: PEER_REQUEST_USER_TYPE }, { signal: deadline.signal }))
      } catch (err) {
        ctx.log('debug', `sending the refusal failed: ${(err as Error).message}`)
      }
    }
    this.inFlight++
    try {
      deadline.step = 'looking up the requester certificate'
      let chain = ctx.certificates.fromRequest(req, signer)
      if (!chain) {
        if (!this.lookups.take('all')) {
          this.stats.lookupsLimited++
          return
        }
        try {
          chain = await this.findRequesterCertificate(signer, deadline)
        } catch (err) {
          if (isDhtnetError(err) && err.code === 'ABORTED') return
          return await refuse('CERT_NOT_FOUND', 'its certificate was not found on the DHT', false)
        }
      }
      if (publicKeyIds(chain[0]!).longId !== signer) return await refuse('UNTRUSTED', 'the certificate found does not match the signing key', false)
      const verdict = ctx.trust.verify(chain, { anonymous: ctx.anonymous })
      if (!verdict.ok) return await refuse('UNTRUSTED', `${verdict.reason} (${verdict.code})`, false)
      if (options.onIceRequest) {
        let ok = false
        try {
          ok = await deadline.race(Promise.resolve(options.onIceRequest(chain[0]!)))
        } catch (err) {
          ctx.log('warn', `onIceRequest failed: ${(err as Error).message}`)
        }
        if (!ok) return await refuse('REFUSED', 'onIceRequest declined it', true)
      }
      const shared = this.sharedTransports(req, peerIsNative)
      if (shared.length === 0) {
        return await refuse(
          'UNSUPPORTED_TRANSPORT',
          peerIsNative ? `it offers no transport our policy "${ctx.policy}" allows` : `it is a C++ DHTNet device (ICE-TCP only) and our policy is "${ctx.policy}"`,
          true,
        )
      }
      await this.accept(req, chain, peerIsNative, shared, replyKey, ownerKey, ownerIds.id, deadline)
      this.stats.connected++
    } finally {
      this.inFlight--
      deadline.dispose()
    }
  }

  /**
   * The requester's certificate from the DHT. A C++ DHTNet device does not carry it in its request and publishes it
   * when it starts, so a first request may come before its certificate is stored: one more look a moment later.
   */
  private async findRequesterCertificate(signer: string, deadline: Deadline): Promise<X509Certificate[]> {
    try {
      return await this.ctx.certificates.find(signer, deadline)
    } catch (err) {
      if (!isDhtnetError(err, 'CERT_NOT_FOUND')) throw err
      await deadline.race(new Promise((resolve) => setTimeout(resolve, CERTIFICATE_RETRY_DELAY_MS)))
      return this.ctx.certificates.find(signer, deadline)
    }
  }

  private tellUntrusted(policy: ResponderOptions['refuseUntrusted']): boolean {
    if (policy === 'never') return false
    return policy === 'always' || this.untrustedRefusals.take('all')
  }

  /** The transports the request offers that our policy allows (a C++ peer: ICE-TCP only). */
  private sharedTransports(req: PeerConnectionRequest, peerIsNative: boolean): Transport[] {
    return allowedTransports(this.ctx.transports, this.ctx.policy).filter((t) => (peerIsNative || t.name === 'ice-tcp') && descriptionIn(req, t.name) !== undefined)
  }

  private async accept(
    req: PeerConnectionRequest,
    chain: X509Certificate[],
    peerIsNative: boolean,
    transports: Transport[],
    replyKey: Buffer,
    ownerKey: ReturnType<typeof createPublicKey>,
    requesterId: string,
    deadline: Deadline,
  ): Promise<void> {
    const ctx = this.ctx
    const signer = publicKeyIds(chain[0]!).longId
    deadline.step = 'gathering candidates'
    const started = await Promise.allSettled(
      transports.map(async (t): Promise<Attempt> => {
        const controller = new AbortController()
        const session = await t.createSession({
          role: 'responder',
          connectionId: req.id,
          peerChain: chain,
          remoteDescription: descriptionIn(req, t.name),
          peerIsNative,
          signal: AbortSignal.any([deadline.signal, controller.signal]),
        })
        return { transport: t.name, session, controller }
      }),
    )
    const attempts: Attempt[] = []
    started.forEach((r, i) => {
      if (r.status === 'fulfilled') attempts.push(r.value)
      else ctx.log('info', `incoming ${req.id}: the ${transports[i]!.name} transport could not start: ${errorMessage(r.reason)}`)
    })
    if (attempts.length === 0) throw deadline.signal.aborted ? deadline.error() : new DhtnetError('ICE_FAILED', 'no transport could start for an incoming connection')
    try {
      deadline.step = 'publishing the answer on the DHT'
      const answer: PeerConnectionRequest = { id: req.id, iceMsg: '', isAnswer: true, connType: '', ...(ctx.emulateDhtnet ? {} : { native: NATIVE_SIGNALLING_VERSION }) }
      for (const a of attempts) setDescription(answer, a.transport, a.session.localDescription)
      // Not awaited: the requester gets the answer through its listen as soon as one storage node has it, while the
      // put itself may wait for slow or dead nodes. A lost answer shows up as a timeout on its side.
      ctx.dht.putEncrypted(replyKey, ownerKey, { data: encodeRequest(answer), userType: PEER_REQUEST_USER_TYPE }, { signal: deadline.signal }).then(
        (r) => {
          if (!r.ok) ctx.log('warn', `the answer to ${requesterId} could not be stored on the DHT`)
        },
        (err: unknown) => ctx.log('debug', `publishing the answer to ${requesterId} failed: ${(err as Error).message}`),
      )
      deadline.step = `ICE connectivity checks and the secure handshake (${attempts.map((a) => a.transport).join(' and ')})`
      const { link } = await deadline.race(
        firstLink(attempts, (a) => a.session.connect({ peerIsNative, signal: AbortSignal.any([deadline.signal, a.controller.signal]) }), deadline),
      )
      try {
        const peerCert = chain[0]!
        const mux = peerIsNative ? nativeMux(ctx, link, peerCert, false, false) : dhtnetMux(ctx, link, peerCert, false)
        ctx.register({ id: req.id, peerId: signer, chain, initiator: false, connType: req.connType, link, mux })
      } catch (err) {
        link.close(isDhtnetError(err) ? err : undefined)
        throw err
      }
    } catch (err) {
      closeAttempts(attempts, undefined, isDhtnetError(err) ? err : undefined)
      throw err
    }
  }
}
