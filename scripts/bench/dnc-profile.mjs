#!/usr/bin/env node
// Summary of a V8 CPU profile (`node --cpu-prof`): where the busy time goes, by function (self time) and by
// inclusive time, plus a roll-up by area (our packages, node:internal streams/tls/net, GC, native code).
// Used by dnc-bench.mjs (PROFILE=dir); also standalone: node scripts/bench/dnc-profile.mjs <file.cpuprofile> [top]
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const shortUrl = (url) => {
  if (!url) return ''
  const m = url.match(/(packages\/[^/]+\/(?:dist|src)\/.*|tools\/[^/]+\/(?:dist|src)\/.*|node_modules\/(?:\.pnpm\/)?[^/]+.*|node:.*)$/)
  return m ? m[1].replace(/node_modules\/\.pnpm\/[^/]+\/node_modules\//, 'node_modules/') : url.replace(/^file:\/\//, '')
}
const frameName = (cf) => `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`
/** The area a frame belongs to, for the roll-up. */
function area(cf) {
  const n = cf.functionName
  if (n === '(garbage collector)') return 'GC'
  if (n === '(program)' || n === '(idle)' || n === '(root)') return n
  const u = cf.url ?? ''
  if (!u) return 'native (C++ bindings: crypto, TLS, sockets)'
  if (u.includes('/packages/core/')) return `core ${u.match(/packages\/core\/(?:dist|src)\/([^/]+)/)?.[1] ?? ''}`
  if (u.includes('/tools/') || u.includes('/packages/cli-kit/')) return 'tool'
  if (u.includes('node_modules')) return `npm ${u.match(/node_modules\/(?:\.pnpm\/)?((?:@[^/]+\/)?[^/@]+)/)?.[1] ?? ''}`
  const m = u.match(/^node:internal\/(?:streams\/)?([^/]+)/) ?? u.match(/^node:([^/]+)/)
  if (m) return u.includes('/streams/') ? 'node streams' : `node ${m[1]}`
  return 'other'
}

/** Lines of text: total sampled time, busy share, the top `top` functions by self and by inclusive time, areas. */
export function summarizeCpuProfile(profile, top = 15) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map() // node id → µs
  const deltas = profile.timeDeltas ?? []
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]
    const dt = deltas[i + 1] ?? deltas[i] ?? 0 // time until the next sample belongs to this one
    self.set(id, (self.get(id) ?? 0) + Math.max(0, dt))
  }
  let total = 0
  let idle = 0
  const selfByFn = new Map()
  const inclByFn = new Map()
  const byArea = new Map()
  for (const [id, us] of self) {
    const n = byId.get(id)
    total += us
    if (n.callFrame.functionName === '(idle)') {
      idle += us
      continue
    }
    const name = frameName(n.callFrame)
    selfByFn.set(name, (selfByFn.get(name) ?? 0) + us)
    const a = area(n.callFrame)
    byArea.set(a, (byArea.get(a) ?? 0) + us)
    // inclusive: count each distinct function once per stack
    const seen = new Set()
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const f = frameName(byId.get(cur).callFrame)
      if (seen.has(f)) continue
      seen.add(f)
      inclByFn.set(f, (inclByFn.get(f) ?? 0) + us)
    }
  }
  const busy = total - idle
  const pct = (us) => `${((100 * us) / Math.max(1, busy)).toFixed(1).padStart(5)}%`
  const ms = (us) => `${(us / 1000).toFixed(0).padStart(6)} ms`
  const out = [`sampled ${(total / 1000).toFixed(0)} ms, busy ${(busy / 1000).toFixed(0)} ms (percentages below are of busy time)`]
  out.push('top by self time:')
  for (const [f, us] of [...selfByFn].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(us)} ${ms(us)}  ${f}`)
  out.push('top by inclusive time (excluding the roots):')
  for (const [f, us] of [...inclByFn]
    .filter(([f]) => !/^\((root|program)\)/.test(f))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top))
    out.push(`  ${pct(us)} ${ms(us)}  ${f}`)
  out.push('self time by area:')
  for (const [a, us] of [...byArea].sort((x, y) => y[1] - x[1]).slice(0, 12)) out.push(`  ${pct(us)} ${ms(us)}  ${a}`)
  return out
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, top] = process.argv.slice(2)
  if (!file) {
    process.stderr.write('usage: node scripts/bench/dnc-profile.mjs <file.cpuprofile> [top]\n')
    process.exit(2)
  }
  console.log(summarizeCpuProfile(JSON.parse(readFileSync(file, 'utf8')), Number(top ?? 15)).join('\n'))
}
