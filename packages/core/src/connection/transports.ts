/**
 * Transport choice for one connection: which transports we offer and answer with, where each one's description
 * travels in the signalling, how the attempts race, and which multiplexer runs on the winner.
 *
 * - A C++ DHTNet peer (no `dnx` key in its value) speaks only ICE-TCP + TLS with DHTNet's MultiplexedSocket.
 * - Between two of our peers every transport both sides enable is started; the responder keeps the first link that
 *   authenticates and starts our multiplexer on it; the requester keeps the link on which the responder's HELLO
 *   arrives (its multiplexers wait for it: `awaitPeerHello`) and closes the others. No extra message, no guessing.
 */
import { DhtnetError, isDhtnetError, errorMessage } from '../errors.js'
import type { Logger } from '../util/log.js'
import type { Link, Transport, TransportName, TransportSession } from '../transport/transport.js'
import type { Mux } from '../mux/mux.js'
import { Multiplexer, type MultiplexerOptions } from '../mux/native/multiplexer.js'
import type { PeerConnectionRequest } from './signalling.js'
import type { Deadline } from '../util/deadline.js'

/** Which transports a connection may use: both (default), only ICE-TCP + TLS, or only WebRTC. */
export type TransportPolicy = 'auto' | 'tcp' | 'webrtc'

export const TRANSPORT_POLICIES: readonly TransportPolicy[] = ['auto', 'tcp', 'webrtc']

/** Multiplexers for a link: ours, or DHTNet's MultiplexedSocket (a C++ peer). */
export interface MuxFactories {
  /** Our multiplexer over a byte-stream link needs message framing on the stream. */
  native(link: Link, options: Omit<MultiplexerOptions, 'reliable' | 'datagram'>): Mux
  /** DHTNet's MultiplexedSocket over a byte-stream link; undefined when not available. */
  dhtnet?: ((link: Link, options: { initiator: boolean; onChannelRequest: MultiplexerOptions['onChannelRequest']; logger: Logger }) => Mux) | undefined
}

/** The description of a transport inside a request or answer. */
export function descriptionIn(value: PeerConnectionRequest, name: TransportName): string | undefined {
  const text = name === 'ice-tcp' ? value.iceMsg : value.sdp
  return text ? text : undefined
}

/** Put a transport's description into a request or answer. */
export function setDescription(value: PeerConnectionRequest, name: TransportName, description: string): void {
  if (name === 'ice-tcp') value.iceMsg = description
  else value.sdp = description
}

/** The transports a policy allows, among those configured. */
export function allowedTransports(transports: readonly Transport[], policy: TransportPolicy): Transport[] {
  return transports.filter((t) => policy === 'auto' || (policy === 'tcp' ? t.name === 'ice-tcp' : t.name === 'webrtc'))
}

/** A started attempt on one transport. */
export interface Attempt {
  readonly transport: TransportName
  readonly session: TransportSession
  /** Aborted when the attempt lost (or the whole connection failed). */
  readonly controller: AbortController
}

/** Close every attempt except `keep`. */
export function closeAttempts(attempts: readonly Attempt[], keep?: Attempt, err?: Error): void {
  for (const a of attempts) {
    if (a === keep) continue
    a.controller.abort(err)
    a.session.close(err)
  }
}

/**
 * The error to report when every attempt failed: the deadline's own error when it expired, else the most telling
 * failure (a peer proving another identity beats a TLS failure beats a TURN relay error beats blocked UDP beats
 * "no path"), naming every transport's outcome.
 */
export function combinedFailure(failures: ReadonlyArray<{ transport: TransportName; error: unknown }>, deadline: Deadline): Error {
  if (deadline.signal.aborted) return deadline.error()
  if (failures.length === 1) return failures[0]!.error as Error
  const rank = (e: unknown): number => {
    if (!isDhtnetError(e)) return 0
    switch (e.code) {
      case 'UNTRUSTED':
      case 'IDENTITY_MISMATCH':
        return 6
      case 'TLS_FAILED':
        return 5
      // the TCP relay that should have carried the connection is misconfigured or down: what the user must fix
      case 'TURN_AUTH_FAILED':
      case 'TURN_REFUSED':
      case 'TURN_UNREACHABLE':
        return 4
      // UDP blocked (found by the UDP check) says more than "no path"
      case 'UDP_BLOCKED':
        return 3
      case 'ICE_FAILED':
        return 2
      default:
        return 1
    }
  }
  const best = [...failures].sort((a, b) => rank(b.error) - rank(a.error))[0]!
  const summary = failures.map((f) => `${f.transport}: ${errorMessage(f.error)}`).join('; ')
  const code = isDhtnetError(best.error) ? best.error.code : 'ICE_FAILED'
  // Retried (once, by the caller) when a transport met a transient failure, unless a peer proved the wrong identity.
  const retryable = rank(best.error) < 5 && failures.some((f) => isDhtnetError(f.error) && f.error.retryable)
  return new DhtnetError(code, `no transport connected (${summary})`, {
    cause: best.error,
    hint: isDhtnetError(best.error) ? best.error.hint : undefined,
    retryable,
  })
}

/**
 * A relayed link (a TURN relay on its path) is not used before this long after the transports started connecting
 * while another transport is still trying: the relay is used only when nothing direct works. Measured in the NAT
 * lab: a direct WebRTC link comes 0.1–1.3 s after the answer; ICE-TCP's relayed one often before.
 */
export const RELAYED_LINK_GRACE_MS = 1500

/**
 * Responder side: connect every attempt; the first link to authenticate wins, the others are closed, except that a
 * relayed link waits for a direct one until RELAYED_LINK_GRACE_MS after the start while other attempts are still
 * pending (a second relayed link loses to the first). Resolves with the winning link and its attempt.
 */
export function firstLink(
  attempts: readonly Attempt[],
  connect: (a: Attempt) => Promise<Link>,
  deadline: Deadline,
  relayedGraceMs = RELAYED_LINK_GRACE_MS,
): Promise<{ link: Link; attempt: Attempt }> {
  const startedAt = performance.now()
  return new Promise((resolve, reject) => {
    const failures: Array<{ transport: TransportName; error: unknown }> = []
    const pending = new Set(attempts)
    let settled = false
    let held: { link: Link; attempt: Attempt; timer: NodeJS.Timeout } | undefined
    const choose = (link: Link, attempt: Attempt): void => {
      settled = true
      if (held) {
        clearTimeout(held.timer)
        if (held.link !== link) held.link.close()
        held = undefined
      }
      if (deadline.signal.aborted) {
        // nobody waits for this link any more
        link.close()
        closeAttempts(attempts)
        reject(deadline.error())
        return
      }
      closeAttempts(attempts, attempt)
      resolve({ link, attempt })
    }
    const failIfDone = (): void => {
      if (settled || held || pending.size > 0) return
      settled = true
      reject(combinedFailure(failures, deadline))
    }
    for (const attempt of attempts) {
      connect(attempt).then(
        (link) => {
          pending.delete(attempt)
          if (settled) {
            link.close()
            return
          }
          if (!link.path.relay) return choose(link, attempt)
          if (held) {
            link.close()
            if (pending.size === 0) choose(held.link, held.attempt)
            return
          }
          if (pending.size === 0) return choose(link, attempt)
          const timer = setTimeout(
            () => {
              if (!settled && held?.link === link) choose(link, attempt)
            },
            Math.max(0, startedAt + relayedGraceMs - performance.now()),
          )
          timer.unref()
          held = { link, attempt, timer }
          link.once('close', (err?: Error) => {
            if (settled || held?.link !== link) return
            clearTimeout(held.timer)
            held = undefined
            failures.push({ transport: attempt.transport, error: err ?? new DhtnetError('CONNECTION_CLOSED', `the relayed ${attempt.transport} link closed`) })
            failIfDone()
          })
        },
        (error: unknown) => {
          pending.delete(attempt)
          failures.push({ transport: attempt.transport, error })
          if (settled) return
          if (held && pending.size === 0) return choose(held.link, held.attempt)
          failIfDone()
        },
      )
    }
  })
}

/**
 * Requester side, between two of our peers: every link that authenticates gets a multiplexer waiting for the
 * responder's HELLO; the first to receive it wins and the other attempts are closed.
 */
export function linkChosenByPeer(
  attempts: readonly Attempt[],
  connect: (a: Attempt) => Promise<Link>,
  makeMux: (link: Link) => Multiplexer,
  deadline: Deadline,
): Promise<{ link: Link; mux: Multiplexer; attempt: Attempt }> {
  return new Promise((resolve, reject) => {
    const failures: Array<{ transport: TransportName; error: unknown }> = []
    const waiting = new Set<Multiplexer>()
    let settled = false
    const fail = (attempt: Attempt, error: unknown): void => {
      failures.push({ transport: attempt.transport, error })
      if (!settled && failures.length === attempts.length) {
        settled = true
        reject(combinedFailure(failures, deadline))
      }
    }
    for (const attempt of attempts) {
      connect(attempt).then(
        (link) => {
          if (settled) {
            link.close()
            return
          }
          const mux = makeMux(link)
          waiting.add(mux)
          const onHello = (): void => {
            mux.off('close', onClose)
            waiting.delete(mux)
            if (settled) {
              mux.close()
              link.close()
              return
            }
            settled = true
            for (const other of waiting) other.close()
            waiting.clear()
            closeAttempts(attempts, attempt)
            resolve({ link, mux, attempt })
          }
          const onClose = (err?: Error): void => {
            mux.off('hello', onHello)
            waiting.delete(mux)
            link.close(err)
            fail(attempt, err ?? new DhtnetError('CONNECTION_CLOSED', `the ${attempt.transport} link closed before the peer chose it`))
          }
          mux.once('hello', onHello)
          mux.once('close', onClose)
        },
        (error: unknown) => fail(attempt, error),
      )
    }
    deadline.signal.addEventListener(
      'abort',
      () => {
        for (const mux of waiting) mux.close()
        waiting.clear()
      },
      { once: true },
    )
  })
}
