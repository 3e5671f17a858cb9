/**
 * UDP load generator for the DHT benchmark: OpenDHT `ping` and `get` queries to one node on loopback, spread over
 * 16 source addresses (127.0.0.2 – 127.0.0.17) so that a per-IP rate limit is not what gets measured. Closed loop:
 * each socket keeps `window` requests in flight; a request unanswered after `timeoutMs` is counted lost and
 * replaced. Bounded by `durationMs` and `maxRequests`.
 */
import dgram from 'node:dgram'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { MsgpackWriter, msgpackDecode } from '../../packages/core/src/dht/value.js'

export interface LoadOptions {
  host: string
  port: number
  kind: 'ping' | 'get'
  durationMs: number
  maxRequests: number
  sources?: string[]
  window?: number
  timeoutMs?: number
  network?: number
}

export interface LoadResult {
  kind: string
  sent: number
  answered: number
  errors: number
  lost: number
  elapsedMs: number
  answeredPerSec: number
  latencyMedianMs: number
  latencyP95Ms: number
}

export const DEFAULT_SOURCES = Array.from({ length: 16 }, (_, i) => `127.0.0.${i + 2}`)

function packQuery(kind: 'ping' | 'get', id: Buffer, key: Buffer, t: number, network: number): Buffer {
  const w = new MsgpackWriter(96)
  w.map(network ? 5 : 4)
  w.str('a')
  if (kind === 'ping') w.map(1).str('id').bin(id)
  else w.map(2).str('id').bin(id).str('h').bin(key)
  w.str('q').str(kind)
  w.str('t').uint(t)
  w.str('y').str('q')
  if (network) w.str('n').uint(network)
  return w.finish()
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const sources = opts.sources ?? DEFAULT_SOURCES
  const window = opts.window ?? 16
  const timeoutMs = opts.timeoutMs ?? 400
  const key = randomBytes(20)
  let sent = 0, answered = 0, errors = 0, lost = 0
  const latencies: number[] = []
  let stopping = false
  const sockets: dgram.Socket[] = []
  const start = performance.now()

  await Promise.all(
    sources.map(async (addr) => {
      const sock = dgram.createSocket('udp4')
      sockets.push(sock)
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject)
        sock.bind(0, addr, () => resolve())
      })
      const id = randomBytes(20)
      const pending = new Map<number, number>()
      let t = randomBytes(4).readUInt32BE(0) >>> 8
      const sendOne = () => {
        if (stopping || sent >= opts.maxRequests) return
        t = (t + 1) >>> 0
        pending.set(t, performance.now())
        sent++
        sock.send(packQuery(opts.kind, id, key, t, opts.network ?? 0), opts.port, opts.host)
      }
      sock.on('message', (msg) => {
        let m: { t?: unknown; y?: unknown; q?: unknown }
        try {
          m = msgpackDecode(msg) as typeof m
        } catch {
          return
        }
        if (m.y === 'q') return // the node querying us back: ignored
        const tid = typeof m.t === 'number' ? m.t : typeof m.t === 'bigint' ? Number(m.t) : -1
        const at = pending.get(tid)
        if (at === undefined) return
        pending.delete(tid)
        if (m.y === 'e') errors++
        else {
          answered++
          latencies.push(performance.now() - at)
        }
        sendOne()
      })
      sock.on('error', () => {})
      const sweep = setInterval(() => {
        const now = performance.now()
        for (const [tid, at] of pending) {
          if (now - at > timeoutMs) {
            pending.delete(tid)
            lost++
            sendOne()
          }
        }
      }, 50)
      ;(sock as dgram.Socket & { sweep?: NodeJS.Timeout }).sweep = sweep
      for (let i = 0; i < window; i++) sendOne()
    }),
  )
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (performance.now() - start >= opts.durationMs || sent >= opts.maxRequests) {
        clearInterval(check)
        resolve()
      }
    }, 20)
  })
  stopping = true
  const elapsedMs = performance.now() - start
  // let in-flight replies land (counted, but no new sends)
  await new Promise((r) => setTimeout(r, Math.min(200, timeoutMs)))
  for (const s of sockets) {
    clearInterval((s as dgram.Socket & { sweep?: NodeJS.Timeout }).sweep)
    s.close()
  }
  latencies.sort((a, b) => a - b)
  return {
    kind: opts.kind,
    sent,
    answered,
    errors,
    lost,
    elapsedMs,
    answeredPerSec: answered / (elapsedMs / 1000),
    latencyMedianMs: percentile(latencies, 50),
    latencyP95Ms: percentile(latencies, 95),
  }
}

/** utime + stime of a process, in seconds (from /proc/<pid>/stat). */
export function cpuSeconds(pid: number, ticksPerSec = 100): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state); utime is field 14, stime field 15
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSec
}

