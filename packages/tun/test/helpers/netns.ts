/**
 * Network namespaces for the TUN tests and the benchmark: one per run (name with the pid), deleted at the end, and
 * TunChild, a tun-child.ts process inside it driven by JSON lines. Nothing here touches the host's namespace.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { accessSync, constants, existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const PKG_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const CHILD = join(PKG_DIR, 'test/helpers/tun-child.ts')
const ADDON = join(PKG_DIR, 'build/Release/dhtnet_tun.node')

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

/** Why the namespace tests cannot run here, or undefined when they can. */
export function tunLabUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'TUN devices are Linux only'
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and TUN devices)'
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing (modprobe tun)'
  if (!existsSync(ADDON)) return `the addon is not built (${ADDON}): pnpm install`
  for (const cmd of ['ip', 'ping', 'setpriv']) if (!hasCommand(cmd)) return `${cmd} is missing (scripts/setup installs it)`
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK)
  } catch {
    return 'cannot open /dev/net/tun'
  }
  return undefined
}

export interface RunResult {
  status: number | null
  stdout: string
  stderr: string
}

export function run(cmd: string, args: string[], timeoutMs = 30_000): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs })
  return { status: r.status, stdout: r.stdout || '', stderr: (r.stderr || '') + (r.error ? String(r.error) : '') }
}

/** Runs a command; throws with its output when it fails. */
export function must(cmd: string, args: string[]): string {
  const r = run(cmd, args)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`)
  return r.stdout
}

export class Netns {
  readonly name: string

  constructor(tag: string) {
    this.name = `dhtnet-tun-${tag}-${process.pid}`
    run('ip', ['netns', 'del', this.name]) // a leftover of a crashed run with the same pid
    must('ip', ['netns', 'add', this.name])
    must('ip', ['-n', this.name, 'link', 'set', 'lo', 'up'])
  }

  /** `ip -n <ns> ...args` */
  ip(...args: string[]): RunResult {
    return run('ip', ['-n', this.name, ...args])
  }

  /** A command inside the namespace. */
  exec(cmd: string, args: string[], timeoutMs = 30_000): RunResult {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], timeoutMs)
  }

  /** Asynchronous variant (the test process must keep serving the child's events meanwhile). */
  execAsync(cmd: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return new Promise((resolvePromise) => {
      const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
      const timer = setTimeout(() => {
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
      }, timeoutMs)
      child.on('error', (err) => (stderr += String(err)))
      child.on('close', (status) => {
        clearTimeout(timer)
        resolvePromise({ status, stdout, stderr })
      })
    })
  }

  linkExists(ifname: string): boolean {
    return this.ip('link', 'show', 'dev', ifname).status === 0
  }

  delete(): void {
    run('ip', ['netns', 'del', this.name])
  }
}

export type ChildEvent = Record<string, unknown> & { ev: string }

/** tun-child.ts in a namespace; `wrap` prefixes the node command (e.g. setpriv ... to drop privileges). */
export class TunChild {
  readonly events: ChildEvent[] = []
  readonly stderr: string[] = []
  readonly exited: Promise<number | null>
  readonly #proc: ChildProcess
  #waiters: { test: (e: ChildEvent) => boolean; resolve: (e: ChildEvent) => void }[] = []

  constructor(ns: Netns, wrap: string[] = []) {
    this.#proc = spawn('ip', ['netns', 'exec', ns.name, ...wrap, process.execPath, '--expose-gc', '--import', 'tsx', CHILD], {
      cwd: PKG_DIR,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.exited = new Promise((r) => this.#proc.on('close', (code) => r(code)))
    this.#proc.on('error', (err) => this.stderr.push(`spawn error: ${err.message}`))
    let buffered = ''
    this.#proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buffered += d
      let nl: number
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        let event: ChildEvent
        try {
          event = JSON.parse(line) as ChildEvent
        } catch {
          this.stderr.push(`stdout: ${line}`)
          continue
        }
        this.events.push(event)
        for (const w of [...this.#waiters]) {
          if (w.test(event)) {
            this.#waiters.splice(this.#waiters.indexOf(w), 1)
            w.resolve(event)
          }
        }
      }
    })
    this.#proc.stderr!.setEncoding('utf8').on('data', (d: string) => this.stderr.push(d))
  }

  send(cmd: Record<string, unknown>): void {
    this.#proc.stdin!.write(JSON.stringify(cmd) + '\n')
  }

  /** The first event (already received or to come) that matches; rejects after timeoutMs or when the child exits. */
  waitFor(test: (e: ChildEvent) => boolean, what: string, timeoutMs = 20_000): Promise<ChildEvent> {
    const seen = this.events.find(test)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolvePromise, reject) => {
      const fail = (why: string): void => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter)
        clearTimeout(timer)
        reject(new Error(`tun-child: ${why} while waiting for ${what}; events: ${JSON.stringify(this.events.slice(-10))}; stderr: ${this.stderr.join('').slice(-2000)}`))
      }
      const waiter = {
        test,
        resolve: (e: ChildEvent) => {
          clearTimeout(timer)
          resolvePromise(e)
        },
      }
      const timer = setTimeout(() => fail(`nothing within ${timeoutMs} ms`), timeoutMs)
      this.#waiters.push(waiter)
      void this.exited.then((code) => setTimeout(() => this.#waiters.includes(waiter) && fail(`exited (${code})`), 100))
    })
  }

  /** Sends a command and waits for the event it causes. */
  async request(cmd: Record<string, unknown>, test: (e: ChildEvent) => boolean, what: string, timeoutMs?: number): Promise<ChildEvent> {
    const from = this.events.length
    this.send(cmd)
    return this.waitFor((e) => this.events.indexOf(e) >= from && test(e), what, timeoutMs)
  }

  /** Asks it to exit; SIGKILL (by pid) if it has not within graceMs. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#proc.exitCode !== null || this.#proc.signalCode !== null) return
    try {
      this.send({ op: 'exit' })
      this.#proc.stdin!.end()
    } catch {
      // stdin already closed
    }
    const timer = setTimeout(() => {
      if (this.#proc.pid !== undefined && this.#proc.exitCode === null) process.kill(this.#proc.pid, 'SIGKILL')
    }, graceMs)
    await this.exited
    clearTimeout(timer)
  }
}
