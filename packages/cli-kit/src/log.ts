/**
 * A tool's messages: always on stderr (stdout carries data only). Three levels chosen by -q / --verbose: quiet
 * prints errors only, normal adds the few lines a user needs (ids, "listening on"), verbose adds progress.
 */
import { chalkStderr } from 'chalk'

export type Verbosity = 'quiet' | 'normal' | 'verbose'

export interface Log {
  readonly verbosity: Verbosity
  error(message: string): void
  warn(message: string): void
  info(message: string): void
  debug(message: string): void
}

/** Lines prefixed with `<tool>: `; colours only when stderr is a terminal that supports them (NO_COLOR honoured). */
export function createLog(tool: string, verbosity: Verbosity, write: (line: string) => void = (l) => process.stderr.write(l)): Log {
  const emit = (prefix: string, message: string): void => write(`${tool}: ${prefix}${message}\n`)
  return {
    verbosity,
    error: (m) => emit(chalkStderr.red.bold('error: '), m),
    warn: (m) => (verbosity !== 'quiet' ? emit(chalkStderr.yellow('warning: '), m) : undefined),
    info: (m) => (verbosity !== 'quiet' ? emit('', m) : undefined),
    debug: (m) => (verbosity === 'verbose' ? emit('', m) : undefined),
  }
}
