/**
 * Every error the library throws on purpose is a DhtnetError with a stable `code`.
 * Codes are part of the public API: tools map them to messages and exit codes, tests assert them.
 */
export class DhtnetError extends Error {
  readonly code: string
  /** What the user can do about it, when there is something to do. */
  readonly hint?: string

  constructor(code: string, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'DhtnetError'
    this.code = code
    if (options.hint !== undefined) this.hint = options.hint
  }
}

export function isDhtnetError(err: unknown, code?: string): err is DhtnetError {
  return err instanceof DhtnetError && (code === undefined || err.code === code)
}

/** Reject with an ABORTED error if the signal is already aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DhtnetError('ABORTED', 'operation aborted', { cause: signal.reason })
}
