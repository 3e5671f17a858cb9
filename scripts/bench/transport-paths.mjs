// Shared by scripts/bench/connect and scripts/bench/dnc: the connection paths they compare side by side, the goals
// of issue 8, statistics, a table printer, stopping processes by pid, and a network namespace for the C++ DHTNet row.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'

/**
 * The paths between two of our peers. `policy` is the ConnectionManager `transport` option (tools: --transport);
 * `emulate` sets DHTNET_EMULATE_DHTNET=1 on both sides (C++ DHTNet's framing: TLS records in RFC 4571 frames and
 * DHTNet's MultiplexedSocket), whose policy is ICE-TCP by construction.
 */
export const PATHS = [
  { key: 'tcp', json: 'ice_tcp', label: 'ICE-TCP', policy: 'tcp', emulate: false },
  { key: 'webrtc', json: 'webrtc', label: 'WebRTC', policy: 'webrtc', emulate: false },
  { key: 'auto', json: 'auto', label: 'auto', policy: 'auto', emulate: false },
  { key: 'dhtnet', json: 'dhtnet_emulated', label: 'DHTNet emul.', policy: 'auto', emulate: true },
]

/** Select paths with BENCH_PATHS=tcp,webrtc,auto,dhtnet (default all). */
export function selectedPaths(env = process.env) {
  if (!env.BENCH_PATHS) return PATHS
  const wanted = env.BENCH_PATHS.split(',').map((s) => s.trim())
  const unknown = wanted.filter((w) => !PATHS.some((p) => p.key === w))
  if (unknown.length) throw new Error(`BENCH_PATHS: unknown path(s) ${unknown.join(', ')} (known: ${PATHS.map((p) => p.key).join(', ')})`)
  return PATHS.filter((p) => wanted.includes(p.key))
}

/** The environment of a tool process on that path. */
export function pathEnv(path, base = process.env) {
  const env = { ...base }
  delete env.DHTNET_EMULATE_DHTNET
  if (path.emulate) env.DHTNET_EMULATE_DHTNET = '1'
  return env
}

/** Issue 8's goals, printed next to the figures (never asserted). */
export const GOALS = {
  dncTcpMBps: '>= 600 (aim 1,000)',
  warmConnectMs: '< 50',
  freshDncMs: '< 200',
}

// ------------------------------------------------------------------------------------------------ statistics
export function median(xs) {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
/** Nearest-rank percentile. */
export function percentile(xs, p) {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}
export const min = (xs) => (xs.length ? Math.min(...xs) : NaN)
export const max = (xs) => (xs.length ? Math.max(...xs) : NaN)
/** "median (min–max)" with `d` decimals; '' for no data. */
export function withSpread(xs, d = 0) {
  if (!xs.length) return ''
  if (xs.length === 1) return xs[0].toFixed(d)
  return `${median(xs).toFixed(d)} (${min(xs).toFixed(d)}–${max(xs).toFixed(d)})`
}
export const fixed = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '')
/** A number for the JSON line (null when not measured). */
export const jsonNumber = (x, d = 0) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null)
/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes of this machine. */
export const wallMs = () => performance.timeOrigin + performance.now()

/** Print rows (arrays of strings) as aligned columns, the first column left-aligned. */
export function printTable(rows, out = console.log) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)))
  for (const r of rows) out(r.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  '))
}

// ------------------------------------------------------------------------------------------------ processes
/** SIGTERM by pid, SIGKILL after `graceMs`; resolves once the child exited. */
export async function stopChild(child, graceMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  try {
    process.kill(child.pid, 'SIGTERM')
  } catch {
    return
  }
  const t = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {
        // exited between the check and the kill
      }
    }
  }, graceMs)
  await exited
  clearTimeout(t)
}

// ------------------------------------------------------------------------------------------------ C++ DHTNet
/** The C++ DHTNet build (dnc and dhtnode), or undefined: DHTNET_CPP_BIN, default /work/cpp/install/bin. */
export function cppBuild(env = process.env) {
  const dir = env.DHTNET_CPP_BIN ?? '/work/cpp/install/bin'
  return existsSync(join(dir, 'dnc')) && existsSync(join(dir, 'dhtnode')) ? dir : undefined
}

/**
 * A network namespace of our own (pjnath offers no loopback candidates): lo up and a veth pair, both ends inside,
 * `address` on veth0 (traffic to it stays on lo inside the namespace). The name carries our pid. Returns
 * { name, address, exec(argv) → argv prefixed with `ip netns exec`, remove() }, or throws when we cannot (no root).
 */
export function createNetns(tag, address = '10.254.0.1') {
  const name = `${tag}${process.pid}`
  const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  ip('netns', 'add', name)
  try {
    ip('-n', name, 'link', 'set', 'lo', 'up')
    ip('-n', name, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1')
    ip('-n', name, 'addr', 'add', `${address}/24`, 'dev', 'veth0')
    ip('-n', name, 'link', 'set', 'veth0', 'up')
    ip('-n', name, 'link', 'set', 'veth1', 'up')
  } catch (err) {
    ip('netns', 'delete', name)
    throw err
  }
  return {
    name,
    address,
    exec: (argv) => ['ip', ['netns', 'exec', name, ...argv]],
    remove: () => {
      try {
        ip('netns', 'delete', name)
      } catch {
        // already gone
      }
    },
  }
}
