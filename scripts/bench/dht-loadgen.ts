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

/**
 * The query `{a:{id[, h]}, q, t, y:"q"[, n]}` is the same for every request of a socket but for `t`: its bytes before
 * and after `t`'s value are packed once, and each request only writes `t` (smallest uint encoding, as msgpack-c).
 * The generator must cost less than the nodes it measures, or it is what gets measured.
 */
function queryTemplate(kind: 'ping' | 'get', id: Buffer, key: Buffer, network: number): (t: number) => Buffer {
  const w = new MsgpackWriter(96)
  w.map(network ? 5 : 4)
  w.str('a')
  if (kind === 'ping') w.map(1).str('id').bin(id)
  else w.map(2).str('id').bin(id).str('h').bin(key)
  w.str('q').str(kind)
  w.str('t')
  const head = w.finish()
  const tw = new MsgpackWriter(16)
  tw.str('y').str('q')
  if (network) tw.str('n').uint(network)
  const tail = tw.finish()
  return (t: number) => {
    const out = Buffer.allocUnsafe(head.length + 5 + tail.length)
    out.set(head, 0)
    let p = head.length
    if (t < 0x80) out[p++] = t
    else if (t < 0x100) {
      out[p++] = 0xcc
      out[p++] = t
    } else if (t < 0x10000) {
      out[p++] = 0xcd
      out.writeUInt16BE(t, p)
      p += 2
    } else {
      out[p++] = 0xce
      out.writeUInt32BE(t, p)
      p += 4
    }
    out.set(tail, p)
    return out.subarray(0, p + tail.length)
  }
}

/** Bytes taken by the msgpack object at `pos` (its header and everything inside it); -1 when malformed. */
function skipObject(b: Buffer, pos: number): number {
  let left = 1
  while (left > 0) {
    if (pos >= b.length) return -1
    const h = b[pos++]!
    left--
    if (h <= 0x7f || h >= 0xe0 || h === 0xc0 || h === 0xc2 || h === 0xc3) continue
    if (h <= 0x8f) {
      left += (h & 0x0f) * 2
      continue
    }
    if (h <= 0x9f) {
      left += h & 0x0f
      continue
    }
    if (h <= 0xbf) {
      pos += h & 0x1f
      continue
    }
    switch (h) {
      case 0xc4:
      case 0xd9:
        pos += 1 + (b[pos] ?? 0)
        break
      case 0xc5:
      case 0xda:
        pos += 2 + (pos + 2 <= b.length ? b.readUInt16BE(pos) : 0)
        break
      case 0xc6:
      case 0xdb:
        pos += 4 + (pos + 4 <= b.length ? b.readUInt32BE(pos) : 0)
        break
      case 0xcc:
      case 0xd0:
        pos += 1
        break
      case 0xcd:
      case 0xd1:
        pos += 2
        break
      case 0xca:
      case 0xce:
      case 0xd2:
        pos += 4
        break
      case 0xcb:
      case 0xcf:
      case 0xd3:
        pos += 8
        break
      case 0xdc:
        if (pos + 2 > b.length) return -1
        left += b.readUInt16BE(pos)
        pos += 2
        break
      case 0xde:
        if (pos + 2 > b.length) return -1
        left += b.readUInt16BE(pos) * 2
        pos += 2
        break
      default:
        return -1 // ext types and 32-bit containers: not in these replies
    }
  }
  return pos <= b.length ? pos : -1
}

/** `t` and `y` of a reply read in place (no decoding of the rest); undefined when it does not look as expected. */
function replyHeader(b: Buffer): { t: number; y: string } | undefined {
  const h = b[0]
  if (h === undefined || (h & 0xf0) !== 0x80) return undefined
  let pos = 1
  let t = -1,
    y = ''
  for (let i = 0; i < (h & 0x0f); i++) {
    const k = b[pos]
    if (k === 0xa1 && (b[pos + 1] === 0x74 || b[pos + 1] === 0x79)) {
      const isT = b[pos + 1] === 0x74
      pos += 2
      const v = b[pos]
      if (v === undefined) return undefined
      if (isT) {
        if (v <= 0x7f) t = v
        else if (v === 0xcc) t = b[pos + 1]!
        else if (v === 0xcd) t = b.readUInt16BE(pos + 1)
        else if (v === 0xce) t = b.readUInt32BE(pos + 1)
        else return undefined
      } else if (v === 0xa1) y = String.fromCharCode(b[pos + 1]!)
      else return undefined
      pos = skipObject(b, pos)
    } else {
      pos = skipObject(b, pos) // key
      if (pos < 0) return undefined
      pos = skipObject(b, pos) // value
    }
    if (pos < 0) return undefined
  }
  return t >= 0 && y ? { t, y } : undefined
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
  let sent = 0,
    answered = 0,
    errors = 0,
    lost = 0
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
      const query = queryTemplate(opts.kind, id, key, opts.network ?? 0)
      const sendOne = () => {
        if (stopping || sent >= opts.maxRequests) return
        t = (t + 1) >>> 0
        pending.set(t, performance.now())
        sent++
        sock.send(query(t), opts.port, opts.host)
      }
      sock.on('message', (msg) => {
        let m: { t?: unknown; y?: unknown; q?: unknown } | undefined = replyHeader(msg)
        if (!m) {
          try {
            m = msgpackDecode(msg) as typeof m
          } catch {
            return
          }
        }
        if (!m) return
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
