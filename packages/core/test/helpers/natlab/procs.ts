/**
 * Processes of the NAT lab, each started inside a namespace with `ip netns exec` (which execs the command, so the
 * child's pid is the process itself) and stopped by that pid: SIGTERM, then SIGKILL after a grace period.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { NET } from './topology.js'

const HERE = fileURLToPath(new URL('.', import.meta.url))
/** The repository root (packages/core/test/helpers/natlab → ../../../../..). */
export const REPO_ROOT = resolve(HERE, '../../../../..')
export const DEVICE_SCRIPT = join(HERE, 'device.ts')
export const NODE_CLI = join(REPO_ROOT, 'tools/node/dist/cli.js')

export const TURN_USER = 'natlab'
export const TURN_PASS = 'natlab-secret'
export const TURN_REALM = 'netlab.test'
export const STUN_URL = `stun:${NET.turn}:3478`
export const TURN_URL = `turn:${TURN_USER}:${TURN_PASS}@${NET.turn}:3478`

const VERBOSE = !!process.env.DHTNET_TEST_VERBOSE

export class LabProcess {
  readonly output: string[] = []
  readonly jsonLines: Array<Record<string, unknown>> = []
  private readonly waiters: Array<{ test: (line: string, json?: Record<string, unknown>) => boolean; resolve: (l: string) => void }> = []
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    this.exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }))
    // An exit (or failed spawn) must never be an unhandled 'error'.
    child.on('error', (err) => this.onLine(`spawn error: ${err.message}`))
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue
      createInterface({ input: stream }).on('line', (line) => this.onLine(line))
    }
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  private onLine(line: string): void {
    if (this.output.length < 5000) this.output.push(line)
    if (VERBOSE) process.stderr.write(`[${this.name}] ${line}\n`)
    let json: Record<string, unknown> | undefined
    if (line.startsWith('{')) {
      try {
        json = JSON.parse(line) as Record<string, unknown>
        this.jsonLines.push(json)
      } catch {
        json = undefined
      }
    }
    for (const w of [...this.waiters]) {
      if (w.test(line, json)) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve(line)
      }
    }
  }

  /** Resolves with the first line (past or future) that passes `test`; rejects on exit or after `timeoutMs`. */
  waitFor(what: string, test: (line: string, json?: Record<string, unknown>) => boolean, timeoutMs: number): Promise<string> {
    for (const line of this.output) {
      let json: Record<string, unknown> | undefined
      try {
        json = line.startsWith('{') ? (JSON.parse(line) as Record<string, unknown>) : undefined
      } catch {
        json = undefined
      }
      if (test(line, json)) return Promise.resolve(line)
    }
    return new Promise<string>((resolvePromise, reject) => {
      const waiter = {
        test,
        resolve: (l: string) => {
          clearTimeout(timer)
          resolvePromise(l)
        },
      }
      const fail = (why: string) => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        clearTimeout(timer)
        reject(new Error(`${this.name}: ${why} while waiting for ${what}; last output:\n${this.output.slice(-25).join('\n')}`))
      }
      const timer = setTimeout(() => fail(`no ${what} within ${timeoutMs} ms`), timeoutMs)
      this.waiters.push(waiter)
      void this.exited.then(({ code, signal }) => {
        // Let the last lines of output arrive first.
        setTimeout(() => {
          if (this.waiters.includes(waiter)) fail(`exited (${code ?? signal})`)
        }, 200)
      })
    })
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process is gone. Never throws. */
  async stop(graceMs = 3000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.running || this.pid === undefined) return this.exited
    try {
      process.kill(this.pid, 'SIGTERM')
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      if (this.running && this.pid !== undefined) {
        try {
          process.kill(this.pid, 'SIGKILL')
        } catch {
          // already gone
        }
      }
    }, graceMs)
    const r = await this.exited
    clearTimeout(timer)
    return r
  }
}

export function spawnInNs(netns: string, name: string, cmd: string, args: string[], env: Record<string, string> = {}): LabProcess {
  const child = spawn('ip', ['netns', 'exec', netns, cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
  })
  return new LabProcess(name, child)
}

/** A readiness wait that fails stops the process (by pid) before the error goes on: nothing is left running. */
async function stopOnFailure<T>(proc: LabProcess, wait: Promise<T>): Promise<T> {
  try {
    return await wait
  } catch (err) {
    await proc.stop()
    throw err
  }
}

/** coturn: STUN + TURN over UDP and TCP (with TCP relays, RFC 6062) on 198.51.100.10:3478, long-term credentials,
 *  no TLS/DTLS. `maxAllocateLifetimeS`: a short allocation lifetime (refresh tests). `alternateIp`: a second address
 *  it listens on too (already on the host's eth0), for RFC 5780's CHANGE-REQUEST. */
export async function startCoturn(netns: string, workDir: string, options: { maxAllocateLifetimeS?: number; alternateIp?: string } = {}): Promise<LabProcess> {
  const proc = spawnInNs(netns, 'coturn', 'turnserver', [
    '-v', // verbose: logs the listeners (readiness) and allocations (diagnostics)
    '-n', // no configuration file (do not read /etc/turnserver.conf)
    '--no-cli',
    '--no-tls',
    '--no-dtls',
    '--listening-ip',
    NET.turn,
    ...(options.alternateIp ? ['--listening-ip', options.alternateIp] : []),
    '--relay-ip',
    NET.turn,
    '--listening-port',
    '3478',
    '--min-port',
    '49152',
    '--max-port',
    '65535',
    '--lt-cred-mech',
    '--user',
    `${TURN_USER}:${TURN_PASS}`,
    '--realm',
    TURN_REALM,
    // the lab's public range (TEST-NET-2): relaying to peers there must be allowed explicitly
    '--allowed-peer-ip=198.51.100.0-198.51.100.255',
    '--userdb',
    join(workDir, 'turndb'),
    '--pidfile',
    join(workDir, 'turnserver.pid'),
    '--log-file',
    'stdout',
    '--simple-log',
    '--no-software-attribute',
    ...(options.maxAllocateLifetimeS !== undefined ? [`--max-allocate-lifetime=${options.maxAllocateLifetimeS}`] : []),
  ])
  await stopOnFailure(
    proc,
    proc.waitFor('coturn to listen', (l) => /UDP listener opened on\s*:?\s*198\.51\.100\.10:3478/.test(l), 10_000),
  )
  return proc
}

/** Our bootstrap node: the BUILT dhtnet-node, as a user runs it (daemon mode: no TTY). */
export async function startBootstrap(netns: string): Promise<LabProcess> {
  if (!existsSync(NODE_CLI)) {
    throw new Error(`${NODE_CLI} is missing: build the workspace first (pnpm exec turbo run build)`)
  }
  const proc = spawnInNs(netns, 'dhtnet-node', process.execPath, [NODE_CLI, '-p', String(NET.bootPort), '--ipv4', NET.boot, '--no-ipv6', '--no-discovery'])
  await stopOnFailure(
    proc,
    proc.waitFor('dhtnet-node to listen', (l) => l.includes('dhtnet-node listening on'), 15_000),
  )
  return proc
}

export interface DeviceConfig {
  mode: 'serve' | 'connect'
  key: string
  cert: string
  iceServers: string[]
  /** connect: the peer's 40-hex id */
  peer?: string
  /** connect: bytes sent through the echo channel */
  bytes?: number
  /** connect: bound of connectDevice */
  timeoutMs?: number
  label?: string
  /** UPnP/NAT-PMP port mapping (true, or PortMapper options) */
  upnp?: boolean | Record<string, unknown>
  /** The tools' TURN setting (the runtime's `turn`): one server for WebRTC's UDP relay and ICE-TCP's TCP relay,
   *  unless `transport` picks one. */
  turn?: { host: string; user: string; pass: string; realm?: string; transport?: 'udp' | 'tcp' | 'tls' }
  /** Which transports connections may use (default auto). */
  transport?: 'auto' | 'tcp' | 'webrtc'
  /** Append every log line (all levels) to this file. */
  logFile?: string
  /** connect: wait this long between 256 KiB blocks (a connection held over time). */
  paceMs?: number
  /** connect: one way to the server's "sink" channel instead of an echo (benchmarks) */
  sink?: boolean
}

/** device.ts inside a host namespace (node --import tsx). `env`: extra environment variables. */
export function startDevice(netns: string, name: string, config: DeviceConfig, env: Record<string, string> = {}): LabProcess {
  return spawnInNs(netns, name, process.execPath, ['--import', 'tsx', DEVICE_SCRIPT], {
    ...env,
    NATLAB_DEVICE: JSON.stringify({ bootstrap: `${NET.boot}:${NET.bootPort}`, ...config }),
  })
}

export function tempDir(): { path: string; write(name: string, data: string | Buffer, mode?: number): string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), 'dhtnet-natlab-'))
  return {
    path,
    write(name, data, mode = 0o644) {
      const p = join(path, name)
      writeFileSync(p, data, { mode })
      return p
    },
    remove() {
      rmSync(path, { recursive: true, force: true })
    },
  }
}
