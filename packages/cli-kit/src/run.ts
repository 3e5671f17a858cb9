/**
 * The outer shell of a tool's process: parse, print the version, run main, turn an error into its message, hint
 * and exit code; signals (SIGINT/SIGTERM/SIGHUP) with a clean stop; a bounded stop; an explicit exit.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { constants } from 'node:os'
import { chalkStderr } from 'chalk'
import { CommanderError, InvalidArgumentError, type Command } from 'commander'
import { describeError, exitCodeFor, UsageError, type ExitCodes } from './errors.js'
import type { Log } from './log.js'

export type ParseOutcome<A> = { kind: 'run'; args: A } | { kind: 'exit'; code: number }

/** Runs commander on argv (without node and script). Help → exit 0; a usage problem → the usage exit code. */
export function parseWith<A>(program: Command, argv: string[], usageExit: number, read: (program: Command) => A): ParseOutcome<A> {
  try {
    program.parse(argv, { from: 'user' })
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') return { kind: 'exit', code: 0 }
      return { kind: 'exit', code: usageExit }
    }
    if (err instanceof InvalidArgumentError) return { kind: 'exit', code: usageExit }
    throw err
  }
  return { kind: 'run', args: read(program) }
}

/** commander's output settings for a tool: errors as "<tool>: error: ...", help on stdout. */
export function configureProgramOutput(program: Command, tool: string): Command {
  return program
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
      outputError: (s, write) => write(`${tool}: ${s}`),
    })
    .showHelpAfterError(`(run ${tool} --help for the list of options)`)
}

export interface CliSpec<A extends { versionCount: number }> {
  readonly tool: string
  readonly version: string
  readonly exitCodes: ExitCodes
  parse(argv: string[]): ParseOutcome<A>
  /** Loaded lazily: `--help` and `-v` do not pay for the library's start-up. */
  main(args: A): Promise<number>
  /** Run on every exit path after main failed, before the message is printed (dsh: restore the terminal). */
  onFailure?(): void
}

/** The program's entry point: never returns; the exit code is main's, or the error's. */
export async function runCli<A extends { versionCount: number }>(spec: CliSpec<A>): Promise<void> {
  const outcome = spec.parse(process.argv.slice(2))
  if (outcome.kind === 'exit') process.exit(outcome.code)
  const { args } = outcome
  if (args.versionCount === 1) {
    process.stdout.write(`${spec.tool} ${spec.version}\n`)
    process.exit(0)
  }
  try {
    process.exitCode = await spec.main(args)
  } catch (err) {
    spec.onFailure?.()
    const { message, hint } = describeError(err)
    process.stderr.write(`${spec.tool}: ${chalkStderr.red.bold('error:')} ${message}\n${hint ? `${spec.tool}: hint: ${hint}\n` : ''}`)
    const debugVar = `${spec.tool.toUpperCase()}_DEBUG`
    if (!(err instanceof UsageError) && process.env[debugVar]) process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(exitCodeFor(err, spec.exitCodes))
  }
}

/** True when `moduleUrl` is the program being run (not a module imported by tests). */
export function isMainModule(moduleUrl: string): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(moduleUrl))
  } catch {
    return false
  }
}

export const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/** 128 + the signal's number, the shell's convention for "killed by": 130 for SIGINT, 143 for SIGTERM. */
export function signalExitCode(signal: NodeJS.Signals): number {
  // a signal name this platform does not know (typed as known) counts as SIGTERM
  return 128 + ((constants.signals as Partial<Record<string, number>>)[signal] ?? 15)
}

export interface SignalHandling {
  /** Aborted by the first SIGINT/SIGTERM/SIGHUP (unless `onFirst` takes it). */
  readonly signal: AbortSignal
  /** Remove the handlers. */
  dispose(): void
}

/**
 * SIGINT, SIGTERM and SIGHUP stop the tool cleanly: the first one aborts `signal` (or is given to `onFirst`, which
 * returns true when it handled it), a second one exits at once with 128+N after `beforeExit` (the terminal...).
 */
export function handleStopSignals(log: Log, options: { onFirst?: (sig: NodeJS.Signals) => boolean; beforeExit?: () => void } = {}): SignalHandling {
  const controller = new AbortController()
  let count = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    count++
    if (count > 1) {
      options.beforeExit?.()
      process.exit(signalExitCode(sig)) // second signal: no more waiting
    }
    log.debug(`${sig}: stopping`)
    if (options.onFirst?.(sig)) return
    controller.abort(new Error(`interrupted by ${sig}`))
  }
  for (const s of STOP_SIGNALS) process.on(s, onSignal)
  return {
    signal: controller.signal,
    dispose: () => {
      for (const s of STOP_SIGNALS) process.off(s, onSignal)
    },
  }
}

/** Waits for `p` at most `ms`; `onLate` says so when it took longer. Never rejects. */
export async function stopWithin(p: Promise<void>, ms: number, onLate: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      onLate()
      resolve()
    }, ms)
  })
  try {
    await Promise.race([p.catch(() => {}), late])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits until `signal` aborts. */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve()
    signal.addEventListener('abort', () => resolve(), { once: true })
  })
}
