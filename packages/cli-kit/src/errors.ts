/**
 * The two kinds of failure a tool reports, and how any error becomes what the user reads: a message that names
 * the step that failed (describeFailure of @dhtnet/core), a hint, never a stack trace for a user mistake.
 */
import { describeFailure } from '@dhtnet/core'

/** A mistake in the command line or the configuration: the tool's usage exit code, message and hint. */
export class UsageError extends Error {
  readonly hint: string | undefined
  constructor(message: string, hint?: string) {
    super(message)
    this.name = 'UsageError'
    this.hint = hint
  }
}

/** A failure at run time with a message that names the step that failed: the tool's failure exit code. */
export class RunError extends Error {
  readonly hint: string | undefined
  /** An exit code other than the tool's failure code (dsh: the remote status it could not deliver otherwise). */
  readonly exitCode: number | undefined
  constructor(message: string, options: { hint?: string | undefined; cause?: unknown; exitCode?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RunError'
    this.hint = options.hint
    this.exitCode = options.exitCode
  }
}

/** A tool's exit codes: dnc uses 0/1/2; dsh, like ssh, 255 for its own failures (0..254 belong to the remote). */
export interface ExitCodes {
  readonly failure: number
  readonly usage: number
}

/** "step: message" for an error from the library or from a tool itself; hint separately. */
export function describeError(err: unknown): { message: string; hint: string | undefined } {
  if (err instanceof UsageError || err instanceof RunError) return { message: err.message, hint: err.hint }
  const { message, hint } = describeFailure(err)
  return { message, hint }
}

/** The exit code for an error thrown out of a tool's main. */
export function exitCodeFor(err: unknown, codes: ExitCodes): number {
  if (err instanceof UsageError) return codes.usage
  if (err instanceof RunError && err.exitCode !== undefined) return err.exitCode
  return codes.failure
}
