/**
 * Processes started by the tests, each stopped by its pid (SIGTERM, then SIGKILL after a grace period).
 * Output is collected so a test can wait for a line and show what a process printed when something fails.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'

export interface ExitStatus {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** 'pipe' (default) lets the test write to stdin; 'ignore' gives /dev/null. */
  stdin?: 'pipe' | 'ignore'
  /** Run inside this network namespace (`ip netns exec`, which execs: the pid is the program's). */
  netns?: string
  /** Keep stdout as raw chunks instead of text (the data stream of dnc). Default: text. */
  rawStdout?: boolean
  /** Collect at most this many bytes of stdout in memory (default 16 MiB). */
  maxStdoutBytes?: number
  /**
   * Start it as the leader of its own process group and signal the whole group (its pid as group id): for a
   * wrapper such as script(1) whose child must not outlive it.
   */
  group?: boolean
}

export class Proc {
  readonly child: ChildProcess
  readonly pid: number
  readonly name: string
  private readonly group: boolean
  stdoutText = ''
  stderrText = ''
  readonly stdoutChunks: Buffer[] = []
  stdoutBytes = 0
  exitStatus: ExitStatus | undefined
  readonly exited: Promise<ExitStatus>
  /** SHA-256 of everything the process wrote on stdout, set when stdout ended. */
  stdoutSha256: string | undefined
  private readonly stdoutHash = createHash('sha256')
  private readonly lineWaiters = new Set<() => void>()

  constructor(name: string, child: ChildProcess, options: StartOptions) {
    if (child.pid === undefined) throw new Error(`${name} did not start`)
    this.child = child
    this.pid = child.pid
    this.name = name
    this.group = options.group === true
    const max = options.maxStdoutBytes ?? 16 * 1024 * 1024
    child.stdout?.on('end', () => {
      this.stdoutSha256 = this.stdoutHash.digest('hex')
    })
    child.stdout?.on('data', (b: Buffer) => {
      this.stdoutHash.update(b)
      this.stdoutBytes += b.length
      if (options.rawStdout) {
        if (this.stdoutBytes <= max) this.stdoutChunks.push(b)
      } else if (this.stdoutText.length < max) {
        this.stdoutText += b.toString('utf8')
      }
      this.notify()
    })
    child.stderr?.on('data', (b: Buffer) => {
      if (this.stderrText.length < 1024 * 1024) this.stderrText += b.toString('utf8')
      this.notify()
    })
    child.stdin?.on('error', () => {}) // the process may exit before reading everything
    this.exited = new Promise((resolve) => {
      // 'close': exited and every output stream read to its end (the hash is complete)
      child.on('close', (code, signal) => {
        this.exitStatus = { code, signal }
        this.notify()
        resolve(this.exitStatus)
      })
      child.on('error', (err) => {
        this.stderrText += `\n[spawn error: ${err.message}]`
        this.exitStatus = { code: -1, signal: null }
        this.notify()
        resolve(this.exitStatus)
      })
    })
  }

  get stdout(): Buffer {
    return Buffer.concat(this.stdoutChunks)
  }

  private notify(): void {
    for (const w of [...this.lineWaiters]) w()
  }

  /** Waits until stdout or stderr (or either, default) matches; returns the match. Fails on exit or timeout. */
  async waitFor(pattern: RegExp, timeoutMs: number, stream: 'stdout' | 'stderr' | 'any' = 'any'): Promise<RegExpMatchArray> {
    const check = (): RegExpMatchArray | null => {
      if (stream !== 'stderr') {
        const m = this.stdoutText.match(pattern)
        if (m) return m
      }
      if (stream !== 'stdout') return this.stderrText.match(pattern)
      return null
    }
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        this.lineWaiters.delete(tick)
      }
      const tick = (): void => {
        const m = check()
        if (m) {
          done()
          resolve(m)
        } else if (this.exitStatus) {
          done()
          reject(new Error(`${this.name} exited (${JSON.stringify(this.exitStatus)}) before printing ${pattern}\n${this.describe()}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${this.name} did not print ${pattern} within ${timeoutMs} ms\n${this.describe()}`))
      }, timeoutMs)
      this.lineWaiters.add(tick)
      tick()
    })
  }

  /** Waits for the exit, failing the test after timeoutMs (the process is then killed). */
  async waitExit(timeoutMs: number): Promise<ExitStatus> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.kill('SIGKILL')
        reject(new Error(`${this.name} did not exit within ${timeoutMs} ms\n${this.describe()}`))
      }, timeoutMs)
    })
    try {
      return await Promise.race([this.exited, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  kill(signal: NodeJS.Signals): void {
    if (this.exitStatus) return
    try {
      process.kill(this.group ? -this.pid : this.pid, signal)
    } catch {
      // already gone
    }
  }

  /** SIGTERM, then SIGKILL after graceMs. Resolves with the exit status. */
  async stop(graceMs = 3000): Promise<ExitStatus> {
    if (this.exitStatus) return this.exitStatus
    this.kill('SIGTERM')
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }

  describe(): string {
    const tail = (s: string): string => (s.length > 3000 ? `...${s.slice(-3000)}` : s)
    return `--- ${this.name} (pid ${this.pid}) stderr:\n${tail(this.stderrText)}\n--- stdout (${this.stdoutBytes} bytes):\n${this.stdoutChunks.length ? '<binary>' : tail(this.stdoutText)}`
  }
}

/** Every process a test file starts, so `after` can stop them all, one pid at a time. */
export class Processes {
  private readonly all: Proc[] = []

  start(name: string, command: string, args: readonly string[], options: StartOptions = {}): Proc {
    const [cmd, argv] = options.netns ? ['ip', ['netns', 'exec', options.netns, command, ...args]] : [command, [...args]]
    const spawnOptions: SpawnOptions = {
      stdio: [options.stdin ?? 'pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      ...(options.group ? { detached: true } : {}),
      ...(options.cwd ? { cwd: options.cwd } : {}),
    }
    const proc = new Proc(name, spawn(cmd, argv, spawnOptions), options)
    this.all.push(proc)
    return proc
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.all.map((p) => p.stop()))
  }

  /** What every process printed, for a failing test's message. */
  describeAll(): string {
    return this.all.map((p) => p.describe()).join('\n')
  }
}

/** Runs a command to completion (bounded), returning its output; throws on a non-zero exit unless allowed. */
export async function run(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; input?: string | Buffer; allowFailure?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()))
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
  child.stdin.on('error', () => {})
  child.stdin.end(options.input ?? '')
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  if (code !== 0 && !options.allowFailure) {
    throw new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr.trim()}`)
  }
  return { code, stdout, stderr }
}
