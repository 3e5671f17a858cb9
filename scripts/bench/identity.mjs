#!/usr/bin/env node
// Benchmark: time to generate a CA + device identity (RSA-4096: keys, certificates, both files written),
// median of RUNS (default 5), next to a baseline measured in the same run: `openssl genpkey` making two
// RSA-4096 keys (sequentially, and two processes in parallel). Ends with one JSON line. Goal: under 2 s.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const core = await import(new URL('../../packages/core/dist/index.js', import.meta.url).href)
const { generateCaAndDevice, generateIdentity, saveIdentity } = core
const run = promisify(execFile)
const RUNS = Number(process.env.RUNS ?? 5)
const BITS = 4096
const dir = mkdtempSync(join(tmpdir(), 'dhtnet-bench-identity-'))

async function timed(fn) {
  const t = performance.now()
  await fn()
  return performance.now() - t
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const opensslKey = (i) => run('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${BITS}`, '-out', join(dir, `openssl-${i}.pem`)])

const cases = {
  'ours: CA + device (keys in parallel), files written': async (i) => {
    const { ca, device } = await generateCaAndDevice({ keySize: BITS })
    await saveIdentity(ca, join(dir, `p${i}`), 'ca')
    await saveIdentity(device, join(dir, `p${i}`), 'device')
  },
  'ours: CA then device (sequential), files written': async (i) => {
    const ca = await generateIdentity({ name: 'ca', keySize: BITS })
    const device = await generateIdentity({ name: 'device', issuer: ca, keySize: BITS })
    await saveIdentity(ca, join(dir, `s${i}`), 'ca')
    await saveIdentity(device, join(dir, `s${i}`), 'device')
  },
  'baseline: openssl genpkey x2 (sequential)': async (i) => {
    await opensslKey(`${i}a`)
    await opensslKey(`${i}b`)
  },
  'baseline: openssl genpkey x2 (parallel)': async (i) => {
    await Promise.all([opensslKey(`${i}c`), opensslKey(`${i}d`)])
  },
}

const results = {}
try {
  // interleave the cases so that machine load affects them alike
  for (const name of Object.keys(cases)) results[name] = []
  for (let i = 0; i < RUNS; i++) {
    for (const [name, fn] of Object.entries(cases)) results[name].push(await timed(() => fn(i)))
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}

const rows = Object.entries(results).map(([name, xs]) => [name, median(xs), Math.min(...xs), Math.max(...xs)])
const w = Math.max(...rows.map((r) => r[0].length))
console.log(`RSA-${BITS}, ${RUNS} runs each (ms)`)
console.log(`${'case'.padEnd(w)}  ${'median'.padStart(8)}  ${'min'.padStart(8)}  ${'max'.padStart(8)}`)
for (const [name, med, min, max] of rows) {
  console.log(`${name.padEnd(w)}  ${med.toFixed(0).padStart(8)}  ${min.toFixed(0).padStart(8)}  ${max.toFixed(0).padStart(8)}`)
}
const m = (k) => Math.round(median(results[k]))
const ours = m('ours: CA + device (keys in parallel), files written')
console.log(`goal: CA + device under 2000 ms: ${ours < 2000 ? 'met' : 'NOT met'}`)
console.log(
  JSON.stringify({
    bench: 'identity',
    key_bits: BITS,
    runs: RUNS,
    ca_plus_device_ms_median: ours,
    ca_plus_device_sequential_ms_median: m('ours: CA then device (sequential), files written'),
    openssl_two_keys_ms_median: m('baseline: openssl genpkey x2 (sequential)'),
    openssl_two_keys_parallel_ms_median: m('baseline: openssl genpkey x2 (parallel)'),
  }),
)
