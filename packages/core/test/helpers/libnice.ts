/** Drives test/helpers/libnice-peer.py (libnice through PyGObject): a real, independent ICE-TCP implementation. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const SCRIPT = fileURLToPath(new URL('./libnice-peer.py', import.meta.url))
const PYTHON = '/usr/bin/python3'

/** Why libnice cannot run here (Debian packages missing), or undefined. */
export function libniceMissing(): string | undefined {
  if (!existsSync(PYTHON)) return `${PYTHON} is missing`
  if (!existsSync('/usr/lib/x86_64-linux-gnu/girepository-1.0/Nice-0.1.typelib') && !existsSync('/usr/lib/girepository-1.0/Nice-0.1.typelib')) {
    return 'gir1.2-nice-0.1 is not installed (scripts/setup installs it)'
  }
  return undefined
}

export type LibniceEvent = Record<string, unknown>

export class LibnicePeer {
  private readonly child: ChildProcessWithoutNullStreams
  private readonly events: LibniceEvent[] = []
  private waiters: Array<() => void> = []
  stderr = ''

  constructor(role: 'controlling' | 'controlled', address = '127.0.0.1') {
    this.child = spawn(PYTHON, [SCRIPT, role, address], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()))
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as LibniceEvent)
      } catch {
        this.stderr += `unparsable line: ${line}\n`
      }
      for (const w of this.waiters.splice(0)) w()
    })
    this.child.on('exit', () => {
      for (const w of this.waiters.splice(0)) w()
    })
  }

  /** The first event (in order) with that key, waiting up to timeoutMs. */
  async next(key: string, timeoutMs = 15_000): Promise<LibniceEvent> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const i = this.events.findIndex((e) => key in e)
      if (i >= 0) return this.events.splice(i, 1)[0]!
      if (this.child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`libnice: no "${key}" event (exit ${this.child.exitCode}); events ${JSON.stringify(this.events)}; stderr: ${this.stderr}`)
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100)
        this.waiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    }
  }

  /** Wait for a component state (e.g. 'ready'). */
  async state(wanted: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const e = await this.next('state', Math.max(1, deadline - Date.now()))
      if (e.state === wanted) return
      if (e.state === 'failed') throw new Error(`libnice: ICE failed; stderr: ${this.stderr}`)
    }
  }

  send(obj: unknown): void {
    this.child.stdin.write(`${JSON.stringify(obj)}\n`)
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return
    this.child.stdin.end()
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()))
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(t)
  }
}
