// Multiplexer benchmark. Same run, same machine: a raw MessageTransport (baseline) against mux channels on top of
// it, over the in-memory transport pair and, when it can be set up, a loopback node-datachannel connection
// (WebRtcPeer, 127.0.0.1 only). Ends with ONE line of JSON.
import { EventEmitter } from 'node:events'
import type { MessageTransport } from '../../../packages/core/src/transport/transport.js'
import { Multiplexer, type ChannelSocket } from '../../../packages/core/src/mux/index.js'
import { createMemoryTransportPair } from '../../../packages/core/test/helpers/memory-transport.js'

const args = process.argv.slice(2)
const mib = Number(args[args.indexOf('--mib') + 1] ?? 0) || 256
const TOTAL = mib * 1024 * 1024
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN

interface TransportPair {
  a: MessageTransport
  b: MessageTransport
  close(): Promise<void>
}

/** Baseline: 64 KiB messages straight on the transport, respecting send() === false / 'drain'. */
async function rawThroughput(pair: TransportPair): Promise<number> {
  const msg = Buffer.alloc(64 * 1024, 7)
  let got = 0
  const done = new Promise<void>((resolve) => {
    const onMsg = (m: Buffer): void => {
      got += m.length
      if (got >= TOTAL) {
        pair.b.off('message', onMsg)
        resolve()
      }
    }
    pair.b.on('message', onMsg)
  })
  const started = performance.now()
  for (let sent = 0; sent < TOTAL; sent += msg.length) {
    if (!pair.a.send(msg)) await new Promise((r) => pair.a.once('drain', r))
  }
  await done
  return TOTAL / 1e6 / ((performance.now() - started) / 1000)
}

function muxPair(pair: TransportPair): { a: Multiplexer; b: Multiplexer } {
  const a = new Multiplexer({ reliable: pair.a, initiator: true })
  const b = new Multiplexer({ reliable: pair.b, initiator: false })
  b.on('channel', (c: ChannelSocket) => {
    c.on('error', () => {})
    c.on('data', () => {})
    c.on('end', () => c.end())
  })
  return { a, b }
}

/** Bulk over `channels` mux channels at once (1 MiB writes); aggregate MB/s. */
async function muxThroughput(mux: { a: Multiplexer; b: Multiplexer }, channels: number): Promise<number> {
  const per = Math.floor(TOTAL / channels / (1024 * 1024)) * 1024 * 1024
  const block = Buffer.alloc(1024 * 1024, 9)
  const socks = await Promise.all(Array.from({ length: channels }, (_, i) => mux.a.openChannel(`bulk-${i}`)))
  const started = performance.now()
  await Promise.all(
    socks.map(async (s) => {
      s.on('error', () => {})
      s.resume()
      const closed = new Promise((r) => s.once('close', r))
      for (let sent = 0; sent < per; sent += block.length) if (!s.write(block)) await new Promise((r) => s.once('drain', r))
      s.end()
      await closed // the peer read everything and ended
    }),
  )
  return (per * channels) / 1e6 / ((performance.now() - started) / 1000)
}

/** Small-message latency on one channel while another moves bulk data. */
async function fairness(mux: { a: Multiplexer; b: Multiplexer }, samples = 30): Promise<number[]> {
  const bulk = await mux.a.openChannel('fair-bulk')
  const echo = new Promise<ChannelSocket>((r) => mux.b.once('channel', r))
  const small = await mux.a.openChannel('fair-small')
  const smallRemote = await echo
  bulk.on('error', () => {})
  let stop = false as boolean // set when the measurement is done
  const block = Buffer.alloc(1024 * 1024, 1)
  const pump = (async () => {
    const deadline = Date.now() + 30_000
    while (!stop && Date.now() < deadline) if (!bulk.write(block)) await new Promise((r) => bulk.once('drain', r))
  })()
  await sleep(200)
  const lat: number[] = []
  for (let i = 0; i < samples; i++) {
    const arrived = new Promise((r) => smallRemote.once('data', r))
    const t = performance.now()
    small.write('x')
    await arrived
    lat.push(performance.now() - t)
    await sleep(10)
  }
  stop = true
  await pump
  bulk.destroy()
  small.destroy()
  return lat
}

async function openRtt(mux: { a: Multiplexer; b: Multiplexer }, n = 200): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    const c = await mux.a.openChannel(`rtt-${i}`)
    out.push(performance.now() - t)
    c.on('error', () => {})
    c.destroy()
  }
  return out
}

function memoryPair(): Promise<TransportPair> {
  const [a, b] = createMemoryTransportPair()
  return Promise.resolve({
    a,
    b,
    close: async () => {
      a.close()
      await new Promise((r) => b.once('close', r))
    },
  })
}

async function webrtcPair(): Promise<TransportPair & { peers: EventEmitter[] }> {
  const { WebRtcPeer } = await import('../../../packages/core/src/transport/webrtc/webrtc.js')
  const offerer = new WebRtcPeer({ role: 'offerer', bindAddress: '127.0.0.1' })
  const answerer = new WebRtcPeer({ role: 'answerer', bindAddress: '127.0.0.1' })
  const offer = await offerer.createOffer()
  const answer = await answerer.createAnswer(offer)
  offerer.acceptAnswer(answer)
  answerer.startChecks()
  await Promise.all([offerer.waitConnected({ timeoutMs: 10_000 }), answerer.waitConnected({ timeoutMs: 10_000 })])
  return {
    a: offerer.reliable,
    b: answerer.reliable,
    peers: [offerer, answerer],
    close: async () => {
      offerer.close()
      answerer.close()
      await sleep(50)
    },
  }
}

interface Row {
  path: string
  raw: number
  one: number
  eight: number
  fairMedian: number
  fairP95: number
  openMedian: number
}

async function measure(path: string, make: () => Promise<TransportPair>): Promise<Row> {
  const raw = await make()
  const rawMbps = await rawThroughput(raw)
  await raw.close()
  const t = await make()
  const mux = muxPair(t)
  const one = await muxThroughput(mux, 1)
  const eight = await muxThroughput(mux, 8)
  const fair = await fairness(mux)
  const rtt = await openRtt(mux)
  mux.a.close()
  mux.b.close()
  await t.close()
  return { path, raw: rawMbps, one, eight, fairMedian: median(fair), fairP95: pct(fair, 0.95), openMedian: median(rtt) }
}

const rows: Row[] = []
rows.push(await measure('memory', memoryPair))
let webrtcNote = ''
try {
  rows.push(await measure('webrtc', webrtcPair))
} catch (err) {
  webrtcNote = `webrtc: not measured (${(err as Error).message})`
}

const f = (n: number, d = 0): string => (Number.isFinite(n) ? n.toFixed(d) : '-')
console.log(`mux benchmark, ${mib} MiB per throughput run`)
console.log('path    | raw MB/s | mux 1ch MB/s | overhead | mux 8ch MB/s | small msg during bulk: median / p95 ms | open median ms')
for (const r of rows) {
  console.log(
    `${r.path.padEnd(7)} | ${f(r.raw).padStart(8)} | ${f(r.one).padStart(12)} | ${f((1 - r.one / r.raw) * 100, 1).padStart(7)}% | ${f(r.eight).padStart(12)} | ${f(r.fairMedian, 2).padStart(18)} / ${f(r.fairP95, 2).padEnd(18)} | ${f(r.openMedian, 3)}`,
  )
}
if (webrtcNote) console.log(webrtcNote)
const json: Record<string, unknown> = { bench: 'mux' }
for (const r of rows) {
  json[`${r.path}_raw_mb_per_s`] = Math.round(r.raw)
  json[`${r.path}_mux_1ch_mb_per_s`] = Math.round(r.one)
  json[`${r.path}_mux_8ch_mb_per_s`] = Math.round(r.eight)
  json[`${r.path}_mux_overhead_pct`] = Math.round((1 - r.one / r.raw) * 1000) / 10
  json[`${r.path}_small_msg_latency_ms_median`] = Math.round(r.fairMedian * 100) / 100
  json[`${r.path}_small_msg_latency_ms_p95`] = Math.round(r.fairP95 * 100) / 100
  json[`${r.path}_open_ms_median`] = Math.round(r.openMedian * 1000) / 1000
}
console.log(JSON.stringify(json))
process.exit(0)
