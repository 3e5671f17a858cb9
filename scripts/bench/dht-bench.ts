/**
 * DHT benchmark (scripts/bench/dht). Same run, same machine:
 *  1. node under load — our `dhtnet-node` (a separate process, the built CLI) vs Debian's `dhtnode` 2.4.12:
 *     requests/s answered (ping, get) and CPU-seconds per 100,000 answered requests (utime+stime of the node's pid
 *     from /proc), from a closed-loop load generator (this process) spread over 127.0.0.2–127.0.0.17; once with
 *     each node's default rate limits and once with limits off (dhtnode -U, dhtnet-node --no-rate-limit);
 *  2. a 32-node local network of our nodes (one process): median/p95 latency of get, and of put→listen notification;
 *     the same put→listen measured on a 32-node network of dhtnode processes as the baseline;
 *  3. under attack: a victim process (DhtNode + SecureDht, RSA-4096, listening at its connection-request keys) serves
 *     legitimate gets from this process; median/p95 get latency quiet, then while a second process on 127.0.0.2
 *     (dht-flood.ts) floods it at the default per-IP request rate with junk-signed puts and junk encrypted values at
 *     its connection-request key. Goal: the median under attack within 2× of the quiet one.
 * DHT_BENCH_ONLY=attack runs only the third part.
 * Bounded: fixed durations, request caps, per-operation timeouts. Loopback only. Ends with one JSON line.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { DhtNode } from '../../packages/core/src/dht/node.js'
import { DhtnodeProcess, dhtnodePath } from '../../packages/core/test/dht-interop-harness.js'
import { cpuSeconds, runLoad, type LoadResult } from './dht-loadgen.js'
import { Victim } from '../../packages/core/test/helpers/dht-victim-process.js'

const ROOT = resolve(import.meta.dirname, '../..')
const CLI = resolve(ROOT, 'tools/node/dist/cli.js')
const LOAD_MS = Number(process.env.DHT_BENCH_LOAD_MS ?? 4000)
const MAX_REQUESTS = 2_000_000
const NET_SIZE = 32
const LAT_OPS = Number(process.env.DHT_BENCH_OPS ?? 40)
/** each half of the "under attack" row: gets every 25 ms for this long */
const ATTACK_MS = Number(process.env.DHT_BENCH_ATTACK_MS ?? 8000)
/** the default per-IP request rate limit (rate-limiter.ts): what one source may send without being cut */
const FLOOD_RATE = Number(process.env.DHT_BENCH_FLOOD_RATE ?? 1024)
const log = (m: string) => process.stderr.write(`[bench dht] ${m}\n`)

interface Target {
  name: string
  pid: number
  port: number
  stop(): Promise<void>
}

async function startOurs(noLimit: boolean): Promise<Target> {
  const args = [CLI, '-p', '0', '--ipv4', '127.0.0.1', '--no-ipv6', '--no-discovery', ...(noLimit ? ['--no-rate-limit'] : [])]
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const line = await new Promise<string>((res, rej) => {
    let out = ''
    const t = setTimeout(() => rej(new Error('dhtnet-node did not start in 20 s')), 20_000)
    child.stdout!.on('data', (d) => {
      out += d
      if (out.includes('\n')) {
        clearTimeout(t)
        res(out)
      }
    })
    child.once('exit', (c) => rej(new Error(`dhtnet-node exited ${c}`)))
  })
  const port = Number(/:(\d+) id=/.exec(line)![1])
  return {
    name: 'dhtnet-node',
    pid: child.pid!,
    port,
    stop: async () => {
      if (child.exitCode !== null) return
      const done = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      const k = setTimeout(() => child.kill('SIGKILL'), 5000)
      await done
      clearTimeout(k)
    },
  }
}

async function startDhtnode(noLimit: boolean): Promise<Target> {
  const p = await DhtnodeProcess.start({ noRateLimit: noLimit })
  return { name: 'dhtnode', pid: p.pid, port: p.port, stop: () => p.stop() }
}

interface Row extends LoadResult {
  node: string
  limits: string
  cpuS: number
  cpuSPer100k: number
  /** CPU of the load generator (this process) over the row, in % of one core: near 100, it is the bottleneck */
  genCpuPct: number
}

async function loadPhase(start: (noLimit: boolean) => Promise<Target>, noLimit: boolean): Promise<Row[]> {
  const target = await start(noLimit)
  const rows: Row[] = []
  try {
    await new Promise((r) => setTimeout(r, 300))
    for (const kind of ['ping', 'get'] as const) {
      const c0 = cpuSeconds(target.pid)
      const g0 = process.cpuUsage()
      const r = await runLoad({ host: '127.0.0.1', port: target.port, kind, durationMs: LOAD_MS, maxRequests: MAX_REQUESTS })
      const cpu = cpuSeconds(target.pid) - c0
      const g = process.cpuUsage(g0)
      const genCpuPct = ((g.user + g.system) / 1e3 / r.elapsedMs) * 100
      rows.push({ ...r, node: target.name, limits: noLimit ? 'off' : 'default', cpuS: cpu, cpuSPer100k: r.answered ? (cpu / r.answered) * 1e5 : NaN, genCpuPct })
      log(
        `${target.name} limits=${noLimit ? 'off' : 'default'} ${kind}: ${Math.round(r.answeredPerSec)} req/s, cpu ${cpu.toFixed(2)} s, load generator ${genCpuPct.toFixed(0)}% CPU`,
      )
    }
  } finally {
    await target.stop()
  }
  return rows
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN
}

async function until(fn: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (fn()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return fn()
}

async function ourNetwork(): Promise<{ get: number[]; putListen: number[]; failures: number }> {
  const nodes: DhtNode[] = []
  const get: number[] = []
  const putListen: number[] = []
  let failures = 0
  try {
    for (let i = 0; i < NET_SIZE; i++) {
      const n = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, bootstrap: i ? [`127.0.0.1:${nodes[0]!.port}`] : [] })
      await n.start()
      nodes.push(n)
    }
    await until(() => nodes.every((n) => n.stats().good4 >= 8), 20_000)
    await new Promise((r) => setTimeout(r, 1000))
    for (let i = 0; i < LAT_OPS; i++) {
      const putter = nodes[(i * 7) % NET_SIZE]!
      const getter = nodes[(i * 11 + 5) % NET_SIZE]!
      const listener = nodes[(i * 13 + 3) % NET_SIZE]!
      // get latency: a value put by one node, fetched by another (search to completion)
      const gk = `bench-get-${i}-${Date.now()}`
      await putter.put(gk, { type: 0, data: Buffer.from('v'), userType: 'text/plain' })
      const t0 = performance.now()
      const vals = await getter.get(gk, { signal: AbortSignal.timeout(10_000) }).catch(() => [])
      if (vals.length) get.push(performance.now() - t0)
      else failures++
      // put → listen notification
      const lk = `bench-listen-${i}-${Date.now()}`
      let heardAt = 0
      const h = listener.listen(lk, (v, expired) => {
        if (!expired && v.length && !heardAt) heardAt = performance.now()
      })
      await new Promise((r) => setTimeout(r, 300))
      const t1 = performance.now()
      await putter.put(lk, { type: 0, data: Buffer.from('x'), userType: 'text/plain' })
      if (await until(() => heardAt > 0, 5000)) putListen.push(heardAt - t1)
      else failures++
      h.cancel()
    }
  } finally {
    await Promise.all(nodes.map((n) => n.stop()))
  }
  return { get, putListen, failures }
}

async function dhtnodeNetwork(): Promise<{ putListen: number[]; failures: number }> {
  const procs: DhtnodeProcess[] = []
  const putListen: number[] = []
  let failures = 0
  try {
    procs.push(await DhtnodeProcess.start({}))
    const rest = await Promise.all(Array.from({ length: NET_SIZE - 1 }, () => DhtnodeProcess.start({ bootstrap: `127.0.0.1:${procs[0]!.port}` })))
    procs.push(...rest)
    await new Promise((r) => setTimeout(r, 5000))
    const ops = Math.min(LAT_OPS, 20)
    for (let i = 0; i < ops; i++) {
      const putter = procs[(i * 7) % NET_SIZE]!
      const listener = procs[(i * 13 + 3) % NET_SIZE]!
      const key = `bench-dl-${i}-${Date.now()}`
      const from = listener.send(`l ${key}`)
      await listener.waitFor(/Listening, token/, from, 5000).catch(() => {})
      await new Promise((r) => setTimeout(r, 300))
      const mark = listener.output.length
      const t0 = performance.now()
      putter.send(`p ${key} x${i}`)
      try {
        await listener.waitFor(new RegExp(`Listen: found 1 values[\\s\\S]*"x${i}"`), mark, 5000)
        putListen.push(performance.now() - t0)
      } catch {
        failures++
      }
    }
  } finally {
    await Promise.all(procs.map((p) => p.stop()))
  }
  return { putListen, failures }
}

interface AttackResult {
  quiet: number[]
  attacked: number[]
  failures: number
  flood: { requests: number; values: number; seconds: number; requestsPerSecond: number } | undefined
  victim: { verifyDrops: number; rejectedKeys: number; badSignatures: number; droppedDecryptions: number; decryptions: number; cpuS: number; rateLimitedDrops: number }
}

async function underAttack(): Promise<AttackResult> {
  const victim = await Victim.start()
  const client = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, bootstrap: [`127.0.0.1:${victim.port}`] })
  let flood: ChildProcess | undefined
  let failures = 0
  try {
    await client.start()
    await until(() => client.stats().good4 >= 1, 15_000)
    await new Promise((r) => setTimeout(r, 500))
    const measure = async (tag: string): Promise<number[]> => {
      const out: number[] = []
      const end = performance.now() + ATTACK_MS
      for (let i = 0; performance.now() < end; i++) {
        await new Promise((r) => setTimeout(r, 25))
        const key = `bench-attack-${tag}-${i}-${Date.now()}`
        await victim.request({ op: 'put', key, text: `${tag}${i}` })
        const t0 = performance.now()
        const vals = await client.get(key, { signal: AbortSignal.timeout(10_000) }).catch(() => [])
        if (vals.some((v) => v.data?.toString() === `${tag}${i}`)) out.push(performance.now() - t0)
        else failures++
      }
      return out
    }
    const quiet = await measure('quiet')
    const s0 = await victim.stats()
    flood = spawn(
      process.execPath,
      ['--import', 'tsx', resolve(ROOT, 'scripts/bench/dht-flood.ts'), String(victim.port), victim.peerKeys[0]!.toString('hex'), String(FLOOD_RATE), '600000'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let floodOut = ''
    flood.stdout!.on('data', (d) => {
      floodOut += d
    })
    await until(() => floodOut.includes('ready'), 30_000)
    await new Promise((r) => setTimeout(r, 1000)) // the flood is under way
    const attacked = await measure('attack')
    const exited = new Promise((r) => flood!.once('exit', r))
    flood.kill('SIGTERM')
    await exited
    const line = floodOut.split('\n').find((l) => l.startsWith('{'))
    const s1 = await victim.stats()
    const n = (k: string) => (s1.node[k] ?? 0) - (s0.node[k] ?? 0)
    const sec = (k: string) => (s1.secure[k] ?? 0) - (s0.secure[k] ?? 0)
    return {
      quiet,
      attacked,
      failures,
      flood: line ? (JSON.parse(line) as AttackResult['flood']) : undefined,
      victim: {
        verifyDrops: n('verifyDrops'),
        rejectedKeys: n('rejectedKeys'),
        badSignatures: n('badSignatures'),
        rateLimitedDrops: n('rateLimitedDrops'),
        droppedDecryptions: sec('droppedDecryptions'),
        decryptions: sec('decryptions'),
        cpuS: s1.cpuS - s0.cpuS,
      },
    }
  } finally {
    if (flood && flood.exitCode === null) flood.kill('SIGKILL')
    await client.stop()
    await victim.stop()
  }
}

function printAttack(a: AttackResult, json: Record<string, unknown>): void {
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-')
  console.log('\nlegitimate get from a victim (RSA-4096 SecureDht listening) median ms   p95 ms   samples')
  console.log(
    `quiet                                                         ${f(pct(a.quiet, 50)).padStart(9)}  ${f(pct(a.quiet, 95)).padStart(7)}  ${String(a.quiet.length).padStart(7)}`,
  )
  console.log(
    `under attack (127.0.0.2 flooding at ${FLOOD_RATE} req/s)                  ${f(pct(a.attacked, 50)).padStart(9)}  ${f(pct(a.attacked, 95)).padStart(7)}  ${String(a.attacked.length).padStart(7)}`,
  )
  const fl = a.flood
  console.log(
    `flood: ${fl ? `${fl.requests} requests (${fl.values} junk values) in ${fl.seconds} s = ${fl.requestsPerSecond} req/s` : 'no report'}; ` +
      `victim: ${a.victim.badSignatures} verified (bad), ${a.victim.verifyDrops} verifications dropped, ${a.victim.decryptions} decryptions, ` +
      `${a.victim.droppedDecryptions} decryptions dropped, ${a.victim.rateLimitedDrops} requests rate-limited, ${f(a.victim.cpuS, 2)} CPU s; failed gets ${a.failures}`,
  )
  json.quiet_get_ms_median = Number(f(pct(a.quiet, 50)))
  json.quiet_get_ms_p95 = Number(f(pct(a.quiet, 95)))
  json.under_attack_get_ms_median = a.attacked.length ? Number(f(pct(a.attacked, 50))) : null
  json.under_attack_get_ms_p95 = a.attacked.length ? Number(f(pct(a.attacked, 95))) : null
  json.under_attack_failed_gets = a.failures
  json.flood_req_per_s = fl?.requestsPerSecond ?? null
  json.under_attack_victim_cpu_s = Number(f(a.victim.cpuS, 2))
}

async function main() {
  if (process.env.DHT_BENCH_ONLY === 'attack') {
    log(`under attack: gets every 25 ms for ${ATTACK_MS / 1000} s quiet, then as long while flooded`)
    const json: Record<string, unknown> = { bench: 'dht' }
    printAttack(await underAttack(), json)
    console.log(JSON.stringify(json))
    return
  }
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (pnpm exec turbo run build)`)
  const haveDhtnode = dhtnodePath() !== null
  if (!haveDhtnode) log('dhtnode is not installed: the baseline columns will be empty (apt-get install dhtnode)')
  const rows: Row[] = []
  for (const noLimit of [false, true]) {
    rows.push(...(await loadPhase(startOurs, noLimit)))
    if (haveDhtnode) rows.push(...(await loadPhase(startDhtnode, noLimit)))
  }
  log(`32-node network of dhtnet nodes: ${LAT_OPS} gets and ${LAT_OPS} put→listen`)
  const net = await ourNetwork()
  const dnet = haveDhtnode ? await dhtnodeNetwork() : { putListen: [], failures: 0 }

  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-')
  console.log('\nDHT node under load (loopback, 16 source addresses, closed loop, ' + `${LOAD_MS / 1000} s per row)`)
  console.log('node         limits   query  answered/s  lost    p50 ms  p95 ms  CPU s  CPU s/100k req  generator CPU %')
  for (const r of rows) {
    console.log(
      `${r.node.padEnd(12)} ${r.limits.padEnd(8)} ${r.kind.padEnd(6)} ${f(r.answeredPerSec).padStart(10)}  ${String(r.lost).padStart(6)}  ${f(r.latencyMedianMs, 2).padStart(6)}  ${f(r.latencyP95Ms, 2).padStart(6)}  ${f(r.cpuS, 2).padStart(5)}  ${f(r.cpuSPer100k, 3).padStart(14)}  ${f(r.genCpuPct).padStart(15)}`,
    )
  }
  console.log(`\n${NET_SIZE}-node local network           median ms   p95 ms   samples  failures`)
  console.log(
    `dhtnet get (search to completion)  ${f(pct(net.get, 50), 1).padStart(9)}  ${f(pct(net.get, 95), 1).padStart(7)}  ${String(net.get.length).padStart(7)}  ${net.failures}`,
  )
  console.log(
    `dhtnet put → listen notification   ${f(pct(net.putListen, 50), 1).padStart(9)}  ${f(pct(net.putListen, 95), 1).padStart(7)}  ${String(net.putListen.length).padStart(7)}`,
  )
  console.log(
    `dhtnode put → listen (baseline)    ${f(pct(dnet.putListen, 50), 1).padStart(9)}  ${f(pct(dnet.putListen, 95), 1).padStart(7)}  ${String(dnet.putListen.length).padStart(7)}  ${dnet.failures}`,
  )

  const pick = (node: string, limits: string, kind: string) => rows.find((r) => r.node === node && r.limits === limits && r.kind === kind)
  const json: Record<string, unknown> = { bench: 'dht' }
  for (const [node, tag] of [
    ['dhtnet-node', 'ours'],
    ['dhtnode', 'dhtnode'],
  ] as const) {
    for (const limits of ['default', 'off']) {
      for (const kind of ['ping', 'get']) {
        const r = pick(node, limits, kind)
        const sfx = limits === 'off' ? '_nolimit' : ''
        json[`${tag}_${kind}${sfx}_req_per_s`] = r ? Math.round(r.answeredPerSec) : null
        json[`${tag}_${kind}${sfx}_cpu_s_per_100k`] = r ? Number(r.cpuSPer100k.toFixed(3)) : null
      }
    }
  }
  json.get_latency_ms_median = Number(pct(net.get, 50).toFixed(1))
  json.get_latency_ms_p95 = Number(pct(net.get, 95).toFixed(1))
  json.put_listen_ms_median = Number(pct(net.putListen, 50).toFixed(1))
  json.put_listen_ms_p95 = Number(pct(net.putListen, 95).toFixed(1))
  json.dhtnode_put_listen_ms_median = dnet.putListen.length ? Number(pct(dnet.putListen, 50).toFixed(1)) : null
  json.dhtnode_put_listen_ms_p95 = dnet.putListen.length ? Number(pct(dnet.putListen, 95).toFixed(1)) : null
  json.network_nodes = NET_SIZE
  log(`under attack: gets every 25 ms for ${ATTACK_MS / 1000} s quiet, then as long while flooded`)
  printAttack(await underAttack(), json)
  console.log(JSON.stringify(json))
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`[bench dht] failed: ${(err as Error).stack ?? err}`)
    process.exit(1)
  },
)
