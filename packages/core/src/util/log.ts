/**
 * The library's one logger type: a function of a level and a message. Tools decide where it goes (stderr) and
 * which levels show; the library never writes to the console itself.
 *
 * At API boundaries a `LoggerLike` is accepted too (an object with one method per level: `console` fits) and is
 * turned into a Logger once, with `toLogger`.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export type Logger = (level: LogLevel, message: string) => void

export type LoggerLike = Logger | { debug?(message: string): void; info?(message: string): void; warn?(message: string): void; error?(message: string): void }

/** A logger that drops everything. */
export const silentLogger: Logger = () => {}

/** Normalise a LoggerLike into a Logger (silent when undefined). */
export function toLogger(logger: LoggerLike | undefined): Logger {
  if (!logger) return silentLogger
  if (typeof logger === 'function') return logger
  return (level, message) => logger[level]?.(message)
}

/** A logger that prefixes every message (`prefix: message`). */
export function prefixLogger(logger: Logger, prefix: string): Logger {
  if (logger === silentLogger) return logger
  return (level, message) => logger(level, `${prefix}: ${message}`)
}
