import { isDhtnetError } from '@dhtnet/core'

/** A mistake in the command line or the configuration: exit code 2, message and hint, never a stack trace. */
export class UsageError extends Error {
  readonly hint: string | undefined
  constructor(message: string, hint?: string) {
    super(message)
    this.name = 'UsageError'
    this.hint = hint
  }
}

/** A failure at run time with a message that names the step that failed: exit code 1. */
export class RunError extends Error {
  readonly hint: string | undefined
  constructor(message: string, options: { hint?: string | undefined; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RunError'
    this.hint = options.hint
  }
}

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** Which step of a connection an error code belongs to, as shown to the user. */
const STEPS: Record<string, string> = {
  PEER_NOT_FOUND: 'DHT lookup',
  DHT_NOT_CONNECTED: 'DHT bootstrap',
  BOOTSTRAP_FAILED: 'DHT bootstrap',
  CERT_NOT_FOUND: 'certificate lookup',
  ICE_FAILED: 'ICE',
  UNTRUSTED: 'trust',
  REFUSED: 'peer refused the connection',
  CHANNEL_DECLINED: 'service refused',
  CHANNEL_RESET: 'remote service',
  TIMEOUT: 'timeout',
  PEER_UNREACHABLE: 'connection lost',
  CONNECTION_CLOSED: 'connection lost',
}

/** "step: message" for an error from the library or from dnc itself; hint separately. */
export function describeError(err: unknown): { message: string; hint: string | undefined } {
  if (err instanceof UsageError || err instanceof RunError) return { message: err.message, hint: err.hint }
  if (isDhtnetError(err)) {
    const step = STEPS[err.code]
    const message = step && !err.message.toLowerCase().startsWith(step.toLowerCase()) ? `${step}: ${err.message}` : err.message
    return { message, hint: err.hint }
  }
  if (err instanceof Error) return { message: err.message, hint: undefined }
  return { message: String(err), hint: undefined }
}
