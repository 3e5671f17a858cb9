// dvpn benchmark (scripts/bench/dvpn, root). Two network namespaces joined by a veth pair; in the same run, over the
// same veth: iperf3 TCP throughput and ping latency on the bare veth; through dvpn (a bootstrap and `dvpn -l` in one
// namespace, the client in the other: the built CLIs) as users run it (--transport auto: on this direct path ICE-TCP
// wins the race, so the packets ride the TLS stream), on the datagram path (--transport webrtc: SCTP/DTLS over UDP,
// no TCP inside TCP), and on the datagram path with the client's MTU at 1420 (as wireguard's); and through
// wireguard-go (the Debian package, userspace). Rounds alternate between the paths; the figures are medians. CPU seconds of the tunnel processes during the transfer are read from /proc (per thread for
// dvpn: the JS thread, libdatachannel's RTC workers, libjuice's poll thread), to show where the time goes.
// Every process is stopped by its pid, both namespaces deleted. Reports, never asserts.
// Options (environment): ROUNDS=2 SECONDS=8 PINGS=300.
// Ends with one JSON line: {"bench":"dvpn","dvpn_tcp_Mbps":…,"wireguard_go_tcp_Mbps":…,"veth_tcp_Mbps":…,…}
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(new URL('../..', import.meta.url).pathname)
const DVPN = join(root, 'tools/dvpn/dist/cli.js')
const DHTNODE = join(root, 'tools/node/dist/cli.js')
const ROUNDS = Number(process.env.ROUNDS ?? 2)
const SECONDS = Number(process.env.SECONDS ?? 8)
const PINGS = Number(process.env.PINGS ?? 300)
process.env.DHTNET_FORBID_PUBLIC_BOOTSTRAP = '1'

if (process.getuid?.() !== 0) {
  console.error('scripts/bench/dvpn needs root (network namespaces, TUN devices)')
  process.exit(1)
}
for (const tool of ['iperf3', 'wireguard-go', 'wg', 'ping']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
    console.error(`${tool} is missing: run scripts/setup as root (Debian packages iperf3, wireguard-go, wireguard-tools, iputils-ping)`)
    process.exit(1)
  }
}

const tag = `${process.pid % 100000}`
const A = `dvb${tag}a`
const B = `dvb${tag}b`
const subnet = `10.252.${process.pid % 250}`
const addrA = `${subnet}.1`
const addrB = `${subnet}.2`
const tmp = mkdtempSync(join(tmpdir(), 'dvpn-bench-'))
const children = new Set()

function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 60_000, ...opts })
}
const inNs = (ns, cmd, args, opts) => sh('ip', ['netns', 'exec', ns, cmd, ...args], opts)

function start(name, ns, cmd, args, env = {}) {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let out = ''
  child.stdout.on('data', (b) => (out = (out + b).slice(-200_000)))
  child.stderr.on('data', (b) => (out = (out + b).slice(-200_000)))
  children.add(child)
  child.on('exit', () => children.delete(child))
  return {
    child,
    get output() {
      return out
    },
    waitFor(re, ms) {
      return new Promise((resolvePromise, reject) => {
        const t0 = Date.now()
        const tick = setInterval(() => {
          const m = out.match(re)
          if (m) {
            clearInterval(tick)
            resolvePromise(m)
          } else if (child.exitCode !== null || Date.now() - t0 > ms) {
            clearInterval(tick)
            reject(new Error(`${name}: no ${re} (exit ${child.exitCode})\n${out.slice(-3000)}`))
          }
        }, 50)
      })
    },
    stop() {
      return stopChild(child)
    },
  }
}

function stopChild(c) {
  return new Promise((r) => {
    if (c.exitCode !== null || c.signalCode !== null) return r()
    const t = setTimeout(() => c.kill('SIGKILL'), 5000)
    c.once('exit', () => {
      clearTimeout(t)
      r()
    })
    c.kill('SIGTERM')
  })
}

function cleanup() {
  for (const c of children) c.kill('SIGKILL')
  for (const ns of [A, B]) spawnSync('ip', ['netns', 'del', ns])
  rmSync(tmp, { recursive: true, force: true })
}
process.on('exit', cleanup)
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130))

// --- namespaces -------------------------------------------------------------------------------------------------
for (const ns of [A, B]) {
  sh('ip', ['netns', 'add', ns])
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
}
sh('ip', ['link', 'add', `va${tag}`, 'netns', A, 'type', 'veth', 'peer', 'name', `vb${tag}`, 'netns', B])
sh('ip', ['-n', A, 'addr', 'add', `${addrA}/24`, 'dev', `va${tag}`])
sh('ip', ['-n', B, 'addr', 'add', `${addrB}/24`, 'dev', `vb${tag}`])
sh('ip', ['-n', A, 'link', 'set', `va${tag}`, 'up'])
sh('ip', ['-n', B, 'link', 'set', `vb${tag}`, 'up'])

// --- measurements ---------------------------------------------------------------------------------------------
async function iperf(serverAddr) {
  const srv = start('iperf3 -s', A, 'iperf3', ['-s', '-1', '--forceflush', '-B', serverAddr])
  await srv.waitFor(/Server listening/, 10_000)
  const out = inNs(B, 'iperf3', ['-c', serverAddr, '-t', String(SECONDS), '-J'], { timeout: (SECONDS + 30) * 1000 })
  await srv.stop()
  const j = JSON.parse(out)
  return { mbps: j.end.sum_received.bits_per_second / 1e6, bytes: j.end.sum_received.bytes, retransmits: j.end.sum_sent.retransmits ?? 0 }
}

function ping(addr) {
  const out = inNs(B, 'ping', ['-q', '-c', String(PINGS), '-i', '0.005', '-W', '2', addr], { timeout: 120_000 })
  const m = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(out)
  const lost = /(\d+)% packet loss/.exec(out)
  return { avg: Number(m?.[2] ?? NaN), loss: Number(lost?.[1] ?? NaN) }
}

/** CPU seconds of each thread of the given pids (name → seconds), from /proc. */
function threadCpu(pids, node = true) {
  const out = {}
  for (const pid of pids) {
    let tasks
    try {
      tasks = readdirSync(`/proc/${pid}/task`)
    } catch {
      continue
    }
    for (const t of tasks) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8')
        const name = readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim()
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        const kind = !node ? 'process' : name === 'RTC worker' ? 'rtc' : name === 'juice poll' ? 'juice' : Number(t) === pid ? 'js' : 'other'
        out[kind] = (out[kind] ?? 0) + (Number(f[11]) + Number(f[12])) / 100
      } catch {
        // the thread ended
      }
    }
  }
  return out
}

function diff(a, b) {
  const out = {}
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) out[k] = (b[k] ?? 0) - (a[k] ?? 0)
  return out
}

async function measure(label, serverAddr, pids, node = true) {
  const before = threadCpu(pids, node)
  const t = await iperf(serverAddr)
  const cpu = diff(before, threadCpu(pids, node))
  const p = ping(serverAddr)
  return { label, ...t, rtt: p.avg, loss: p.loss, cpu }
}

// --- the paths ------------------------------------------------------------------------------------------------
async function withDvpn(transport, mtu, fn) {
  const boot = start('dhtnet-node', A, process.execPath, [DHTNODE, '-p', '0', '--ipv4', addrA, '--no-ipv6', '--no-discovery'])
  const port = (await boot.waitFor(/listening on [\d.]+:(\d+)/, 20_000))[1]
  const home = (n) => {
    const h = join(tmp, `${n}-${transport}-${mtu}`)
    mkdirSync(h, { recursive: true })
    return { HOME: h, DHTNET_HOME: join(h, '.dhtnet'), DHTNET_CACHE_DIR: join(h, '.cache') }
  }
  const server = start('dvpn -l', A, process.execPath, [DVPN, '-l', '-a', '-b', `${addrA}:${port}`, '--no-upnp', '--transport', transport, '--verbose'], home('server'))
  const id = (await server.waitFor(/^id ([0-9a-f]{40})$/m, 60_000))[1]
  const client = start(
    'dvpn',
    B,
    process.execPath,
    [DVPN, '-b', `${addrA}:${port}`, '--no-upnp', '--transport', transport, '--verbose', ...(mtu ? ['--mtu', String(mtu)] : []), id],
    home('client'),
  )
  const m = await client.waitFor(/connected: \S+ (\S+) ↔ (\S+), \S+ ↔ \S+; MTU (\d+)/, 60_000)
  const path = (client.output.match(/path: (.*)/) ?? [])[1]
  try {
    return await fn(m[2], [server.child.pid, client.child.pid], { mtu: Number(m[3]), path })
  } finally {
    await client.stop()
    await server.stop()
    await boot.stop()
  }
}

async function withWireguard(fn) {
  const keys = [sh('wg', ['genkey']).trim(), sh('wg', ['genkey']).trim()]
  const pubs = keys.map((k) => sh('wg', ['pubkey'], { input: `${k}\n` }).trim())
  const names = [`wga${tag}`, `wgb${tag}`]
  const env = { WG_PROCESS_FOREGROUND: '1', WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' }
  const wgs = [start('wireguard-go A', A, 'wireguard-go', [names[0]], env), start('wireguard-go B', B, 'wireguard-go', [names[1]], env)]
  try {
    for (let i = 0; i < 50 && !readdirSync('/var/run/wireguard').some((f) => f === `${names[1]}.sock`); i++) await new Promise((r) => setTimeout(r, 100))
    const side = [
      { ns: A, name: names[0], key: keys[0], peer: pubs[1], allowed: '10.253.0.2/32', endpoint: `${addrB}:51820`, addr: '10.253.0.1/24' },
      { ns: B, name: names[1], key: keys[1], peer: pubs[0], allowed: '10.253.0.1/32', endpoint: `${addrA}:51820`, addr: '10.253.0.2/24' },
    ]
    for (const s of side) {
      const keyFile = join(tmp, `${s.name}.key`)
      writeFileSync(keyFile, `${s.key}\n`, { mode: 0o600 })
      inNs(s.ns, 'wg', ['set', s.name, 'private-key', keyFile, 'listen-port', '51820', 'peer', s.peer, 'allowed-ips', s.allowed, 'endpoint', s.endpoint])
      sh('ip', ['-n', s.ns, 'addr', 'add', s.addr, 'dev', s.name])
      sh('ip', ['-n', s.ns, 'link', 'set', s.name, 'up'])
    }
    const mtu = Number(/mtu (\d+)/.exec(sh('ip', ['-n', A, 'link', 'show', names[0]]))?.[1])
    inNs(B, 'ping', ['-c', '2', '-i', '0.2', '10.253.0.1'])
    return await fn(
      '10.253.0.1',
      wgs.map((w) => w.child.pid),
      { mtu },
    )
  } finally {
    for (const w of wgs) await w.stop()
  }
}

// --- run ------------------------------------------------------------------------------------------------------
const PATHS = [
  { key: 'auto', label: 'dvpn (--transport auto)', run: (f) => withDvpn('auto', 0, f) },
  { key: 'webrtc', label: 'dvpn --transport webrtc', run: (f) => withDvpn('webrtc', 0, f) },
  { key: 'wg', label: 'wireguard-go', run: (f) => withWireguard(f), node: false },
  { key: 'webrtc1420', label: 'dvpn --transport webrtc --mtu 1420', run: (f) => withDvpn('webrtc', 1420, f) },
]
const results = { veth: [] }
const meta = {}
for (let round = 1; round <= ROUNDS; round++) {
  console.error(`[bench] round ${round}/${ROUNDS}`)
  results.veth.push(await measure('veth', addrA, []))
  for (const p of PATHS) {
    ;(results[p.key] ??= []).push(
      await p.run(async (addr, pids, info) => {
        meta[p.key] = info
        return measure(p.label, addr, pids, p.node !== false)
      }),
    )
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const summary = (rs) => {
  const cpu = {}
  for (const r of rs) for (const [k, v] of Object.entries(r.cpu)) cpu[k] = (cpu[k] ?? 0) + v
  const bytes = rs.reduce((n, r) => n + r.bytes, 0)
  const cpuTotal = Object.values(cpu).reduce((a, b) => a + b, 0)
  return {
    mbps: median(rs.map((r) => r.mbps)),
    all: rs.map((r) => Math.round(r.mbps)),
    rtt: median(rs.map((r) => r.rtt)),
    retransmits: median(rs.map((r) => r.retransmits)),
    cpuPerGB: bytes ? (cpuTotal / bytes) * 1e9 : 0,
    cpuShare: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, cpuTotal ? v / cpuTotal : 0])),
  }
}
const s = Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, summary(rs)]))
const rows = [
  ['path', 'MTU', 'TCP Mbit/s (median)', 'runs', 'retransmits', 'ping avg ms', 'added ms', 'CPU-s/GB (both ends)', 'where the CPU goes'],
  ['veth (bare)', '1500', s.veth.mbps.toFixed(0), s.veth.all.join(' '), String(s.veth.retransmits), s.veth.rtt.toFixed(3), '-', '-', '-'],
  ...PATHS.map((p) => {
    const x = s[p.key]
    return [
      p.label,
      String(meta[p.key]?.mtu),
      x.mbps.toFixed(0),
      x.all.join(' '),
      String(x.retransmits),
      x.rtt.toFixed(3),
      (x.rtt - s.veth.rtt).toFixed(3),
      x.cpuPerGB.toFixed(1),
      Object.entries(x.cpuShare)
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${Math.round(v * 100)}%`)
        .join(', '),
    ]
  }),
]
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
console.log(rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ')).join('\n'))
console.log(`paths: auto = ${meta.auto?.path ?? '?'}; webrtc = ${meta.webrtc?.path ?? '?'}`)
console.log(
  `${ROUNDS} rounds of ${SECONDS} s, ${PINGS} pings at 5 ms. CPU: js = the Node thread (our code, node-datachannel's send, TLS on the ICE-TCP path, and the kernel's work for what we write into the TUN), rtc = libdatachannel's RTC workers (SCTP, DTLS), juice = libjuice's UDP poll thread, other = libuv/V8 helpers`,
)
const r = (x) => Math.round(x)
const ms = (x) => +x.toFixed(3)
console.log(
  JSON.stringify({
    bench: 'dvpn',
    dvpn_tcp_Mbps: r(s.auto.mbps),
    dvpn_webrtc_tcp_Mbps: r(s.webrtc.mbps),
    dvpn_webrtc_mtu1420_tcp_Mbps: r(s.webrtc1420.mbps),
    wireguard_go_tcp_Mbps: r(s.wg.mbps),
    veth_tcp_Mbps: r(s.veth.mbps),
    dvpn_added_latency_ms: ms(s.auto.rtt - s.veth.rtt),
    dvpn_webrtc_added_latency_ms: ms(s.webrtc.rtt - s.veth.rtt),
    wireguard_go_added_latency_ms: ms(s.wg.rtt - s.veth.rtt),
    veth_rtt_ms: ms(s.veth.rtt),
    dvpn_cpu_s_per_GB: +s.auto.cpuPerGB.toFixed(1),
    dvpn_webrtc_cpu_s_per_GB: +s.webrtc.cpuPerGB.toFixed(1),
    wireguard_go_cpu_s_per_GB: +s.wg.cpuPerGB.toFixed(1),
    dvpn_auto_path: (meta.auto?.path ?? '').split(' ')[0],
    dvpn_mtu_bytes: meta.auto?.mtu,
    rounds: ROUNDS,
  }),
)
process.exit(0)
