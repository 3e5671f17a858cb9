/**
 * Manual NAT lab matrix (scripts/natlab): every case of MATRIX `--runs` times, a table with the selected pairs,
 * connect times and echo throughput per run, and one final JSON line. Needs root (network namespaces).
 *   node --import tsx packages/core/test/helpers/natlab/matrix.ts [--runs N] [--mib M] [--cases regex]
 *        [--fail-timeout-ms MS] [--shared-bootstrap]
 */
import { labUnavailableReason, type NatMode } from './topology.js'
import { NatLabRun, type CaseResult, type CaseSpec } from './harness.js'

interface MatrixCase {
  name: string
  natA: NatMode
  natB: NatMode
  servers: 'stun' | 'turn'
  /** the tools' TURN setting (one server for WebRTC's UDP relay and ICE-TCP's TCP relay) */
  turn?: CaseSpec['turn']
  /** what should happen (netlab.md): 'direct', 'relay' or 'fail' */
  expect: 'direct' | 'relay' | 'any' | 'fail'
}

const MATRIX: MatrixCase[] = [
  { name: 'eim-eim stun', natA: 'eim', natB: 'eim', servers: 'stun', expect: 'direct' },
  { name: 'full-full stun', natA: 'fullcone', natB: 'fullcone', servers: 'stun', expect: 'direct' },
  { name: 'full-sym stun', natA: 'fullcone', natB: 'sym', servers: 'stun', expect: 'direct' },
  { name: 'eim-eim turn', natA: 'eim', natB: 'eim', servers: 'turn', expect: 'any' },
  { name: 'eim-sym turn', natA: 'eim', natB: 'sym', servers: 'turn', expect: 'relay' },
  { name: 'sym-sym turn', natA: 'sym', natB: 'sym', servers: 'turn', expect: 'relay' },
  { name: 'eim-sym stun', natA: 'eim', natB: 'sym', servers: 'stun', expect: 'fail' },
  { name: 'sym-sym stun', natA: 'sym', natB: 'sym', servers: 'stun', expect: 'fail' },
  { name: 'blockudp-eim turn', natA: 'blockudp', natB: 'eim', servers: 'turn', expect: 'fail' },
  { name: 'blockudp-eim stun', natA: 'blockudp', natB: 'eim', servers: 'stun', expect: 'fail' },
  { name: 'blockudp-eim turn-tcp', natA: 'blockudp', natB: 'eim', servers: 'stun', turn: {}, expect: 'relay' },
  { name: 'blockudp-blockudp turn-tcp', natA: 'blockudp', natB: 'blockudp', servers: 'stun', turn: {}, expect: 'relay' },
  { name: 'eim-eim turn-both', natA: 'eim', natB: 'eim', servers: 'stun', turn: {}, expect: 'direct' },
]

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name)
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback
}

const runs = Number(arg('--runs', '3'))
const mib = Number(arg('--mib', '32'))
const filter = new RegExp(arg('--cases', '.'))
const sharedBootstrap = process.argv.includes('--shared-bootstrap')
const failTimeoutMs = Number(arg('--fail-timeout-ms', '20000'))
if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error('--runs must be 1..20')
if (!Number.isFinite(mib) || mib <= 0 || mib > 1024) throw new Error('--mib must be in (0, 1024]')

const reason = labUnavailableReason()
if (reason) {
  process.stderr.write(`natlab: ${reason}\n`)
  process.exit(2)
}

function verdict(c: MatrixCase, r: CaseResult): string {
  const types = [...(r.pairA?.split('/') ?? []), ...(r.pairB?.split('/') ?? [])]
  if (c.expect === 'fail') return r.ok ? 'UNEXPECTED connect' : 'as expected'
  if (!r.ok) return 'UNEXPECTED failure'
  if (c.expect === 'direct' && types.includes('relay')) return 'UNEXPECTED relay'
  if (c.expect === 'relay' && !types.includes('relay')) return 'UNEXPECTED direct'
  return 'as expected'
}

const median = (xs: number[]) => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const lab = await NatLabRun.start({ sharedBootstrap })
const rows: string[][] = [['case', 'expect', 'ok', 'pairs A view | B view (per run)', 'connect ms (per run)', 'echo MB/s (per run)', 'verdict']]
const summary: Record<string, unknown> = { bench: 'natlab', mib_per_case: mib, runs, shared_bootstrap: sharedBootstrap }
let unexpected = 0
try {
  for (const c of MATRIX.filter((m) => filter.test(m.name))) {
    const rs: CaseResult[] = []
    const n = c.expect === 'fail' ? 1 : runs // failures cost the whole timeout: once is enough
    for (let i = 0; i < n; i++) {
      const r = await lab.runCase({ ...c, bytes: Math.round(mib * 1024 * 1024), timeoutMs: c.expect === 'fail' ? failTimeoutMs : 30_000 })
      rs.push(r)
      process.stderr.write(`${c.name} #${i + 1}: ${r.ok ? `ok ${r.pairA} | ${r.pairB} ${r.connectMs} ms ${r.mbPerS} MB/s` : `${r.code} after ${r.elapsedMs} ms: ${r.message}`}\n`)
    }
    const verdicts = rs.map((r) => verdict(c, r))
    unexpected += verdicts.filter((v) => v !== 'as expected').length
    const okRuns = rs.filter((r) => r.ok)
    rows.push([
      c.name,
      c.expect,
      `${okRuns.length}/${rs.length}`,
      rs.map((r) => (r.ok ? `${r.pairA}|${r.pairB}` : `${r.code}@${((r.elapsedMs ?? 0) / 1000).toFixed(1)}s`)).join(', '),
      okRuns.map((r) => String(r.connectMs)).join(', ') || '-',
      okRuns.map((r) => r.mbPerS!.toFixed(1)).join(', ') || '-',
      [...new Set(verdicts)].join(', '),
    ])
    const key = c.name.replace(/[^a-z0-9]+/gi, '_')
    summary[`${key}_ok`] = `${okRuns.length}/${rs.length}`
    const cm = median(okRuns.map((r) => r.connectMs!))
    const mb = median(okRuns.map((r) => r.mbPerS!))
    if (cm !== undefined) summary[`${key}_connect_ms_median`] = cm
    if (mb !== undefined) summary[`${key}_echo_mb_per_s_median`] = mb
  }
} finally {
  await lab.close()
}
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n') + '\n')
summary.unexpected = unexpected
process.stdout.write(JSON.stringify(summary) + '\n')
process.exitCode = unexpected > 0 ? 1 : 0
