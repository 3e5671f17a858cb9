/**
 * A program run by the server for one session: with a pty (node-pty: its own session and process group, the pty as
 * controlling terminal, our TERM and window size) or with pipes (its own session and process group too, stdin,
 * stdout and stderr apart). Output is paused and resumed for backpressure; the session can be hung up (SIGHUP to
 * every process of the session, SIGKILL to what is left after a grace period); the server's direct child is always
 * reaped (Node and node-pty wait for it), so no zombie is left.
 *
 * Events: 'stdout' (Buffer), 'stderr' (Buffer), 'stdout-end', 'stderr-end', 'drain' (stdin can take more),
 * 'exit' (ExitStatus) once, after both output streams ended.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { closeSync, constants as fsConstants, openSync, readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { constants as osConstants } from 'node:os'
import type { IPty } from 'node-pty'
import type { ExitStatus, PtyRequest, SignalName } from './protocol.js'

const require = createRequire(import.meta.url)

export interface ProgramSpec {
  /** The checked path of the program. */
  readonly path: string
  readonly args: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string
  readonly pty: PtyRequest | null
}

/** How long a hung-up session may take to end before what is left of it is killed. */
export const HANGUP_GRACE_MS = 2000
/** After the program exits, how long to wait for its last output when the reader is slow. */
const DRAIN_LIMIT_MS = 5000

const SIGNAL_NAMES = new Map<number, string>(Object.entries(osConstants.signals).map(([name, n]) => [n, name.replace(/^SIG/, '')]))

export function exitStatusOf(code: number | null, signal: NodeJS.Signals | number | null): ExitStatus {
  if (signal !== null && signal !== 0) {
    const number = typeof signal === 'number' ? signal : ((osConstants.signals as Partial<Record<string, number>>)[signal] ?? 0)
    return { kind: 'signal', signal: number, name: SIGNAL_NAMES.get(number) ?? String(number) }
  }
  return { kind: 'exited', code: (code ?? 0) & 0xff }
}

export class Program extends EventEmitter {
  readonly pid: number
  readonly usesPty: boolean
  private readonly child: ChildProcess | undefined
  private readonly term: IPty | undefined
  private slaveFd = -1
  private outputPaused = false
  private lastOutputAt = 0
  private exited = false
  private hangupTimer: NodeJS.Timeout | undefined
  private ended = { stdout: false, stderr: false }
  private status: ExitStatus | undefined

  constructor(spec: ProgramSpec) {
    super()
    this.usesPty = spec.pty !== null
    if (spec.pty) {
      const pty = require('node-pty') as typeof import('node-pty')
      const term = pty.spawn(spec.path, [...spec.args], {
        name: spec.pty.term,
        cols: spec.pty.cols,
        rows: spec.pty.rows,
        cwd: spec.cwd,
        env: { ...spec.env },
        encoding: null,
      })
      this.term = term
      this.pid = term.pid
      this.holdSlave(term)
      term.onData((data) => {
        this.lastOutputAt = performance.now()
        this.emit('stdout', Buffer.isBuffer(data) ? data : Buffer.from(data))
      })
      term.onExit(({ exitCode, signal }) => {
        if (this.slaveFd >= 0) closeSync(this.slaveFd)
        this.slaveFd = -1
        this.ended.stderr = true
        this.finish('stdout', exitStatusOf(exitCode, signal ?? null))
      })
    } else {
      const child = spawn(spec.path, [...spec.args], {
        cwd: spec.cwd,
        env: { ...spec.env },
        // its own session and process group (setsid), so the whole session can be signalled
        detached: true,
        stdio: ['pipe', 'pipe', 'pipe'],
      })
      this.child = child
      if (child.pid === undefined) {
        // spawn failed (ENOENT, EACCES...): reported through 'error', then an exit status 127
        this.pid = -1
      } else {
        this.pid = child.pid
      }
      child.stdin.on('error', () => {}) // the program may close its stdin early (EPIPE)
      child.stdin.on('drain', () => this.emit('drain'))
      for (const name of ['stdout', 'stderr'] as const) {
        const stream = child[name]
        stream.on('data', (b: Buffer) => {
          this.lastOutputAt = performance.now()
          this.emit(name, b)
        })
        stream.on('end', () => this.endStream(name))
        stream.on('error', () => this.endStream(name))
      }
      child.on('error', (err) => {
        this.emit('stderr', Buffer.from(`dsh: cannot start ${spec.path}: ${err.message}\n`))
        this.endStream('stdout')
        this.endStream('stderr')
        this.finish(undefined, { kind: 'exited', code: 127 })
      })
      child.on('close', (code, signal) => this.finish(undefined, exitStatusOf(code, signal)))
    }
  }

  /** Keep the pty's slave open while the program runs: the master then never reports EIO (which on Linux can drop
   *  the last output still in the pty's buffers); its end is read to the last byte before the exit is reported. */
  private holdSlave(term: IPty): void {
    const ptsName = (term as unknown as { ptsName?: string }).ptsName
    if (!ptsName) return
    try {
      this.slaveFd = openSync(ptsName, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK)
    } catch {
      this.slaveFd = -1 // already gone (a program that ended at once): nothing left to lose
      return
    }
    // node-pty destroys its reader 200 ms after the exit; delay that until the output stopped (or DRAIN_LIMIT_MS)
    const socket = (term as unknown as { _socket?: { destroy: (...a: unknown[]) => unknown } })._socket
    if (!socket || typeof socket.destroy !== 'function') return
    const destroy = socket.destroy.bind(socket)
    let deferred = false
    socket.destroy = (...a: unknown[]) => {
      if (deferred) return destroy(...a)
      deferred = true
      const started = performance.now()
      const tick = (): void => {
        const idle = performance.now() - this.lastOutputAt > 60
        if ((idle && !this.outputPaused) || performance.now() - started > DRAIN_LIMIT_MS) destroy(...a)
        else setTimeout(tick, 20).unref()
      }
      tick()
      return socket
    }
  }

  private endStream(name: 'stdout' | 'stderr'): void {
    if (this.ended[name]) return
    this.ended[name] = true
    this.emit(`${name}-end`)
    this.maybeExit()
  }

  private finish(endStream: 'stdout' | undefined, status: ExitStatus): void {
    if (this.status) return
    this.status = status
    this.exited = true
    if (endStream) this.endStream(endStream)
    this.maybeExit()
  }

  private maybeExit(): void {
    if (!this.status || !this.ended.stdout || !this.ended.stderr) return
    this.emit('exit', this.status)
  }

  get hasExited(): boolean {
    return this.exited
  }

  /** Writes to the program's stdin; false when it should wait for 'drain'. */
  writeStdin(data: Buffer): boolean {
    if (this.term) {
      this.term.write(data)
      return true
    }
    const stdin = this.child?.stdin
    if (!stdin || stdin.destroyed || stdin.writableEnded) return true
    return stdin.write(data)
  }

  /** EOF on stdin (pipes); a pty has no half-close, so it is ignored there. */
  endStdin(): void {
    if (!this.term) this.child?.stdin?.end()
  }

  pauseOutput(): void {
    this.outputPaused = true
    if (this.term) this.term.pause()
    else {
      this.child?.stdout?.pause()
      this.child?.stderr?.pause()
    }
  }

  resumeOutput(): void {
    this.outputPaused = false
    if (this.term) this.term.resume()
    else {
      this.child?.stdout?.resume()
      this.child?.stderr?.resume()
    }
  }

  resize(rows: number, cols: number): void {
    if (!this.term || this.exited) return
    try {
      this.term.resize(cols, rows)
    } catch {
      // the pty is already closed
    }
  }

  /** A signal to the program's process group. */
  signal(name: SignalName): void {
    if (this.pid <= 0 || this.exited) return
    try {
      process.kill(-this.pid, `SIG${name}` as NodeJS.Signals)
    } catch {
      // gone
    }
  }

  /**
   * The session is over (the client went away, or the program ended and left processes behind): SIGHUP (and SIGCONT,
   * for stopped jobs) to every process of the session, SIGKILL to what is left after `graceMs`.
   */
  hangup(graceMs = HANGUP_GRACE_MS): void {
    if (this.pid <= 0 || this.hangupTimer) return
    signalSession(this.pid, 'SIGHUP')
    signalSession(this.pid, 'SIGCONT')
    this.hangupTimer = setTimeout(() => {
      signalSession(this.pid, 'SIGKILL')
      this.term?.kill('SIGKILL')
    }, graceMs)
    this.hangupTimer.unref()
  }

  /** The processes of this program's session still alive (Linux: /proc; elsewhere: the leader when alive). */
  remainingProcesses(): number[] {
    return this.pid > 0 ? sessionMembers(this.pid) : []
  }
}

/** Signals every process of the session `sid` (its leader's pid) and the leader's process group. */
export function signalSession(sid: number, signal: NodeJS.Signals): void {
  const targets = new Set(sessionMembers(sid))
  try {
    process.kill(-sid, signal)
  } catch {
    // no such group any more
  }
  for (const pid of targets) {
    try {
      process.kill(pid, signal)
    } catch {
      // gone meanwhile
    }
  }
}

/** Pids whose session id is `sid` (Linux /proc); elsewhere [sid] when that process exists. */
export function sessionMembers(sid: number): number[] {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    try {
      process.kill(sid, 0)
      return [sid]
    } catch {
      return []
    }
  }
  const out: number[] = []
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1')
      // pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses, so split after the last ')'
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[3]) === sid && fields[0] !== 'Z') out.push(Number(name))
    } catch {
      // exited meanwhile
    }
  }
  return out
}
