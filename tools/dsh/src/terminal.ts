/**
 * The local terminal of an interactive session: raw mode (every key, Ctrl-C/Z/D included, goes to the remote pty)
 * and its restoration on every exit path — the session's end, an error (the caller restores before printing),
 * process.exit() from a second signal, an uncaught exception. libuv restores the exact termios it saved when raw
 * mode was first set, so `stty -a` reads the same after.
 */
import type { ReadStream } from 'node:tty'

export interface TerminalGuard {
  /** True while the terminal is in raw mode. */
  readonly raw: boolean
  /** Back to the mode the terminal had; idempotent, synchronous. */
  restore(): void
}

export function enterRawMode(stdin: ReadStream): TerminalGuard {
  let raw = false
  const restore = (): void => {
    if (!raw) return
    raw = false
    process.off('exit', restore)
    try {
      stdin.setRawMode(false)
    } catch {
      // the terminal is gone (hang-up): nothing to restore
    }
  }
  stdin.setRawMode(true)
  raw = true
  // process.exit() and fatal errors run 'exit' handlers synchronously: the terminal is restored on those paths too
  process.on('exit', restore)
  return {
    get raw() {
      return raw
    },
    restore,
  }
}

/** The window size to announce: from whichever of stdout, stderr, stdin is a terminal. */
export function windowSize(): { rows: number; cols: number } {
  for (const s of [process.stdout, process.stderr]) {
    if (s.isTTY && s.columns && s.rows) return { rows: s.rows, cols: s.columns }
  }
  return { rows: 24, cols: 80 }
}
