/**
 * Which step of reaching a peer an error belongs to, in the words a tool shows its user: "DHT bootstrap",
 * "certificate lookup", "ICE", "trust", "refused", ... so that every tool says the same thing for the same failure.
 */
import { isDhtnetError } from '../errors.js'

/** Step names by error code (codes not listed have no step: the message alone says it). */
export const FAILURE_STEPS: Readonly<Record<string, string>> = {
  PEER_NOT_FOUND: 'DHT lookup',
  DHT_NOT_CONNECTED: 'DHT bootstrap',
  BOOTSTRAP_FAILED: 'DHT bootstrap',
  CERT_NOT_FOUND: 'certificate lookup',
  ICE_FAILED: 'ICE',
  UDP_BLOCKED: 'ICE',
  TURN_AUTH_FAILED: 'TURN',
  TURN_REFUSED: 'TURN',
  TURN_UNREACHABLE: 'TURN',
  TLS_FAILED: 'TLS',
  UNTRUSTED: 'trust',
  REFUSED: 'peer refused the connection',
  BUSY: 'peer refused the connection',
  UNSUPPORTED_TRANSPORT: 'transport',
  CHANNEL_DECLINED: 'service refused',
  CHANNEL_RESET: 'remote service',
  TIMEOUT: 'timeout',
  PEER_UNREACHABLE: 'connection lost',
  CONNECTION_CLOSED: 'connection lost',
}

export interface DescribedFailure {
  /** The step, when the error has one. */
  readonly step: string | undefined
  /** "step: message" (the step is not repeated when the message already starts with it). */
  readonly message: string
  readonly hint: string | undefined
}

/** Describes an error of the library (or any error) for a user: the step that failed, the message, the hint. */
export function describeFailure(err: unknown): DescribedFailure {
  if (isDhtnetError(err)) {
    const step = FAILURE_STEPS[err.code]
    const message = step && !err.message.toLowerCase().startsWith(step.toLowerCase()) ? `${step}: ${err.message}` : err.message
    return { step, message, hint: err.hint }
  }
  if (err instanceof Error) return { step: undefined, message: err.message, hint: undefined }
  return { step: undefined, message: String(err), hint: undefined }
}
