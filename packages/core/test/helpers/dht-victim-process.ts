/**
 * Drives the victim process of the hardening tests and benchmarks (dht-victim.ts, forked with tsx and --expose-gc)
 * over IPC, and a legitimate prober that pings it every few ms from its own loopback address while it is attacked.
 * Every process is stopped by its pid (SIGKILL after 10 s if it does not stop).
 */
import { fork, type ChildProcess } from 'node:child_process'
import dgram from 'node:dgram'
import { resolve } from 'node:path'
import { WireEncoder, decodeMessage } from '../../src/dht/wire.js'
import { randomHash } from '../../src/dht/infohash.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface VictimStats {
  /** DhtNode.stats(): the counters (number-valued fields) are what tests read */
  node: Record<string, number>
  secure: Record<string, number>
  rssMb: number
  heapMb: number
  externalMb: number
  cpuS: number
  lagMaxMs: number
  lagSumMs: number
  heard: number
  sids: number[]
}

export class Victim {
  port = 0
  nodeId = ''
  id = ''
  longId = ''
  peerKeys: Buffer[] = []
  private waiters = new Map<string, (m: unknown) => void>()

  private constructor(readonly child: ChildProcess) {
    child.on('message', (m: { op: string }) => {
      const w = this.waiters.get(m.op)
      if (w) {
        this.waiters.delete(m.op)
        w(m)
      }
    })
  }

  static async start(env: Record<string, string> = {}): Promise<Victim> {
    const child = fork(resolve(import.meta.dirname, 'dht-victim.ts'), [], {
      execArgv: ['--import', 'tsx', '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, ...env },
    })
    const v = new Victim(child)
    const ready = (await v.request({ op: 'ready' }, 60_000, false)) as { port: number; nodeId: string; id: string; longId: string; peerKeys: string[] }
    v.port = ready.port
    v.nodeId = ready.nodeId
    v.id = ready.id
    v.longId = ready.longId
    v.peerKeys = ready.peerKeys.map((k) => Buffer.from(k, 'hex'))
    return v
  }

  request(m: { op: string; [k: string]: unknown }, timeoutMs = 30_000, send = true): Promise<unknown> {
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`victim did not answer '${m.op}' in ${timeoutMs} ms`)), timeoutMs)
      this.waiters.set(m.op, (x) => {
        clearTimeout(t)
        res(x)
      })
      if (send) this.child.send(m)
    })
  }

  /** `gc`: collect garbage first (for memory figures; it costs the victim a full collection) */
  stats(gc = false): Promise<VictimStats> {
    return this.request({ op: 'stats', gc }) as Promise<VictimStats>
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return
    const done = new Promise((r) => this.child.once('exit', r))
    this.child.send({ op: 'stop' })
    const k = setTimeout(() => this.child.kill('SIGKILL'), 10_000)
    await done
    clearTimeout(k)
  }
}

/** Pings the victim every `everyMs` from its own loopback address; round trips and losses (no answer in 2 s). */
export class Prober {
  private sock!: dgram.Socket
  private readonly enc = new WireEncoder({ myId: randomHash(), userAgent: 'RNG1', network: 0, isClient: false })
  private readonly sentAt = new Map<number, number>()
  private tid = 1
  private timer?: NodeJS.Timeout
  rtts: number[] = []
  lost = 0

  static async open(port: number, address = '127.0.0.3'): Promise<Prober> {
    const p = new Prober()
    p.sock = dgram.createSocket('udp4')
    await new Promise<void>((r) => p.sock.bind(0, address, () => r()))
    p.sock.on('message', (m) => {
      let msg
      try {
        msg = decodeMessage(m)
      } catch {
        return
      }
      const t0 = p.sentAt.get(msg.tid)
      if (msg.kind === 'reply' && t0 !== undefined) {
        p.sentAt.delete(msg.tid)
        p.rtts.push(performance.now() - t0)
      }
    })
    p.port = port
    return p
  }

  private port = 0

  start(everyMs = 20): void {
    this.rtts = []
    this.lost = 0
    this.timer = setInterval(() => {
      const now = performance.now()
      for (const [t, at] of this.sentAt)
        if (now - at > 2000) {
          this.sentAt.delete(t)
          this.lost++
        }
      const tid = this.tid++
      this.sentAt.set(tid, now)
      this.sock.send(this.enc.ping(tid), this.port, '127.0.0.1')
    }, everyMs)
  }

  async stop(): Promise<{ max: number; p50: number; lost: number; n: number }> {
    clearInterval(this.timer)
    await sleep(2100)
    this.lost += this.sentAt.size
    this.sentAt.clear()
    const s = [...this.rtts].sort((a, b) => a - b)
    return { max: s.length ? s[s.length - 1]! : NaN, p50: s.length ? s[Math.floor(s.length / 2)]! : NaN, lost: this.lost, n: s.length }
  }

  close(): void {
    clearInterval(this.timer)
    this.sock.close()
  }
}
