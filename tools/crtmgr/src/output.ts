import { chalkStderr } from 'chalk'
import { DhtnetError } from '@dhtnet/core'

export const TOOL = 'dhtnet-crtmgr'

/** A mistake in the command line: exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly hint = `run ${TOOL} --help for usage`,
  ) {
    super(message)
    this.name = 'UsageError'
  }
}

export interface Io {
  readonly out: (text: string) => void
  readonly err: (text: string) => void
}

export const processIo: Io = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
}

/** Prints an error the way every DHTNet tool does here, and returns the exit code. */
export function reportError(err: unknown, io: Io): number {
  const label = chalkStderr.red(`${TOOL}: error:`)
  if (err instanceof UsageError) {
    io.err(`${label} ${err.message}\n${chalkStderr.dim('hint:')} ${err.hint}\n`)
    return 2
  }
  if (err instanceof DhtnetError) {
    io.err(`${label} ${err.message}\n${err.hint ? `${chalkStderr.dim('hint:')} ${err.hint}\n` : ''}`)
    return 1
  }
  // Not a user mistake: an unexpected failure. Say so; the stack only on request.
  const message = err instanceof Error ? err.message : String(err)
  io.err(`${label} unexpected failure: ${message}\n`)
  if (process.env.DHTNET_DEBUG && err instanceof Error && err.stack) io.err(`${err.stack}\n`)
  else io.err(`${chalkStderr.dim('hint:')} set DHTNET_DEBUG=1 for details and report it if it persists\n`)
  return 1
}

/** "Generating RSA-4096 key for ca... done (1.2 s)" on stderr, around a slow step. */
export async function withProgress<T>(io: Io, what: string, work: () => Promise<T>): Promise<T> {
  const started = performance.now()
  io.err(`${what}... `)
  try {
    const result = await work()
    io.err(`done (${((performance.now() - started) / 1000).toFixed(1)} s)\n`)
    return result
  } catch (err) {
    io.err('failed\n')
    throw err
  }
}
