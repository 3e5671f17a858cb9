// dnc benchmark (scripts/bench/dnc): fresh `dnc <id>` processes fed by `head -c SIZE /dev/zero`, into a TCP sink
// in this process that timestamps the first byte and the end. Baseline in the same run: the same pipeline into the
// sink over raw TCP (bash's /dev/tcp). Loopback only; every process stopped by its pid. MB = 10^6 bytes.
// Ends with one JSON line: {"bench":"dnc","first_byte_ms_median":…,"mb_per_s_median":…,"tcp_mb_per_s_median":…}
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'

const root = resolve(new URL('../..', import.meta.url).pathname)
const DNC = join(root, 'tools/dnc/dist/cli.js')
const DHTNODE = join(root, 'tools/node/dist/cli.js')
const RUNS = Number(process.env.RUNS ?? 5)
const SIZE = process.env.SIZE ?? '500M'
const RUN_TIMEOUT_MS = 180_000

const tmp = mkdtempSync(join(tmpdir(), 'dnc-bench-'))
const children = new Set()

function start(name, cmd, args, env = process.env) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
  let out = ''
  let err = ''
  child.stdout.on('data', (b) => (out += b))
  child.stderr.on('data', (b) => (err += b))
  children.add(child)
  child.on('exit', () => children.delete(child))
  return {
    child,
    out: () => out,
    err: () => err,
    waitFor(re, ms) {
      return new Promise((resolve, reject) => {
        const t0 = Date.now()
        const tick = setInterval(() => {
          const m = (out + err).match(re)
          if (m) {
            clearInterval(tick)
            resolve(m)
          } else if (child.exitCode !== null || Date.now() - t0 > ms) {
            clearInterval(tick)
            reject(new Error(`${name}: no ${re} (exit ${child.exitCode})\n${err}`))
          }
        }, 20)
      })
    },
  }
}

async function stopAll() {
  const all = [...children]
  for (const c of all) c.kill('SIGTERM')
  await Promise.all(
    all.map(
      (c) =>
        new Promise((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve()
          const t = setTimeout(() => c.kill('SIGKILL'), 3000)
          c.on('exit', () => {
            clearTimeout(t)
            resolve()
          })
        }),
    ),
  )
}

// the sink: one pending measurement at a time
let pending
const sink = createServer({ allowHalfOpen: true }, (s) => {
  let bytes = 0
  let first
  s.on('data', (b) => {
    if (first === undefined) first = performance.now()
    bytes += b.length
  })
  s.on('end', () => {
    const end = performance.now()
    s.end()
    pending?.({ bytes, first, end })
  })
  s.on('error', () => {})
})
await new Promise((r) => sink.listen(0, '127.0.0.1', r))
const sinkPort = sink.address().port

function measure(shellCommand, env) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    let result
    let exited
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`timed out: ${shellCommand}`))
    }, RUN_TIMEOUT_MS)
    const finish = () => {
      if (!result || exited === undefined) return
      clearTimeout(timer)
      pending = undefined
      if (exited !== 0) return reject(new Error(`exit ${exited}: ${shellCommand}\n${stderr}`))
      resolve({ firstByteMs: result.first - t0, mbPerS: result.bytes / 1e6 / ((result.end - result.first) / 1000), bytes: result.bytes, totalMs: result.end - t0 })
    }
    pending = (r) => {
      result = r
      finish()
    }
    let stderr = ''
    const child = spawn('bash', ['-c', shellCommand], { stdio: ['ignore', 'ignore', 'pipe'], env })
    children.add(child)
    child.stderr.on('data', (b) => (stderr += b))
    child.on('exit', (code) => {
      children.delete(child)
      exited = code ?? 1
      finish()
    })
  })
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const userEnv = (home) => {
  mkdirSync(home, { recursive: true })
  return { ...process.env, HOME: home, DHTNET_HOME: join(home, '.dhtnet'), DHTNET_CACHE_DIR: join(home, 'cache') }
}

try {
  const boot = start('dhtnet-node', process.execPath, [DHTNODE, '-p', '0', '--ipv4', '127.0.0.1', '--no-ipv6', '--no-discovery'])
  const bootstrap = `127.0.0.1:${(await boot.waitFor(/listening on 127\.0\.0\.1:(\d+)/, 20_000))[1]}`
  const serverHome = join(tmp, 'server')
  mkdirSync(serverHome, { recursive: true })
  writeFileSync(join(serverHome, 'dnc.yaml'), `bootstrap: "${bootstrap}"\nanonymous: true\nauthorized_services:\n  - ip: "127.0.0.1"\n    port: ${sinkPort}\n`)
  const server = start('dnc -l', process.execPath, [DNC, '-l', '-q', '-d', join(serverHome, 'dnc.yaml'), '--bind', '127.0.0.1'], userEnv(serverHome))
  const id = (await server.waitFor(/^id ([0-9a-f]{40})$/m, 60_000))[1]
  const clientEnv = userEnv(join(tmp, 'client'))
  const dnc = `${process.execPath} ${DNC} -q -b ${bootstrap} --bind 127.0.0.1 -P ${sinkPort} ${id}`
  process.stderr.write(`[bench] bootstrap ${bootstrap}, server ${id}, sink 127.0.0.1:${sinkPort}, ${RUNS} runs of ${SIZE}\n`)

  // warm-up, not counted: creates the client's identity (RSA-4096) and fills the page cache
  await measure(`head -c 1M /dev/zero | ${dnc}`, clientEnv)

  const rows = []
  for (let i = 0; i < RUNS; i++) {
    const d = await measure(`head -c ${SIZE} /dev/zero | ${dnc}`, clientEnv)
    const t = await measure(`head -c ${SIZE} /dev/zero > /dev/tcp/127.0.0.1/${sinkPort}`, clientEnv)
    rows.push({ run: i + 1, dncFirstByteMs: d.firstByteMs, dncMbPerS: d.mbPerS, dncTotalMs: d.totalMs, tcpFirstByteMs: t.firstByteMs, tcpMbPerS: t.mbPerS, bytes: d.bytes })
    process.stderr.write(`[bench] run ${i + 1}/${RUNS} done\n`)
  }

  const f = (x, w = 10, p = 1) => x.toFixed(p).padStart(w)
  console.log(`dnc vs raw TCP on loopback: ${rows[0].bytes} bytes per run (${SIZE}), ${RUNS} runs, MB = 10^6 bytes`)
  console.log('run  dnc first byte ms  dnc MB/s  dnc total ms  tcp first byte ms  tcp MB/s')
  for (const r of rows) {
    console.log(`${String(r.run).padStart(3)}  ${f(r.dncFirstByteMs, 17)}  ${f(r.dncMbPerS, 8)}  ${f(r.dncTotalMs, 12, 0)}  ${f(r.tcpFirstByteMs, 17)}  ${f(r.tcpMbPerS, 8)}`)
  }
  const med = {
    first: median(rows.map((r) => r.dncFirstByteMs)),
    mb: median(rows.map((r) => r.dncMbPerS)),
    total: median(rows.map((r) => r.dncTotalMs)),
    tcpFirst: median(rows.map((r) => r.tcpFirstByteMs)),
    tcp: median(rows.map((r) => r.tcpMbPerS)),
  }
  console.log(`med  ${f(med.first, 17)}  ${f(med.mb, 8)}  ${f(med.total, 12, 0)}  ${f(med.tcpFirst, 17)}  ${f(med.tcp, 8)}`)
  console.log(`goal: first byte < 300 ms, > 250 MB/s (DHTNet's C++ dnc measured here: 600-1000 ms, 114-141 MB/s)`)
  console.log(
    JSON.stringify({
      bench: 'dnc',
      first_byte_ms_median: Math.round(med.first),
      mb_per_s_median: Math.round(med.mb * 10) / 10,
      tcp_mb_per_s_median: Math.round(med.tcp * 10) / 10,
      total_ms_median: Math.round(med.total),
      bytes_per_run: rows[0].bytes,
      runs: RUNS,
    }),
  )
} finally {
  await stopAll()
  sink.close()
  rmSync(tmp, { recursive: true, force: true })
}
