// TUN benchmark (as root): packets/s through @dhtnet/tun against the same loop in C (tun-baseline.c), in a network
// namespace made for the run (dhtnet-tun-bench-<pid>, deleted at the end).
//
//  forward: UDP packets written into TUN tbA are routed by the kernel (ip_forward) out of TUN tbB and read there;
//           at most --window packets in flight (below the 500-packet TUN queue), reads in batches of --batch per
//           wake-up. Both writes and reads go through the device under test; median of --runs runs, per size.
//  ping -f: a flood ping through TUN tbC answered by our reader (echo replies written back) or by the C program.
//
// Options: --count N (packets per forward run, default 200000) --runs N (3) --window N (256) --batch N (64)
//          --pings N (20000). Ends with one JSON line.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, '../../..')
const argv = process.argv.slice(2)
const opt = (name: string, dflt: number): number => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? Number(argv[i + 1]) : dflt
}
const COUNT = opt('count', 200_000)
const RUNS = opt('runs', 3)
const WINDOW = opt('window', 256)
const BATCH = opt('batch', 64)
const PINGS = opt('pings', 20_000)
const SIZES = [84, 1400] // a ping-sized packet, and a full one under a typical VPN MTU

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN
const log = (msg: string): void => {
  process.stderr.write(`[bench] ${msg}\n`)
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error}`)
  return r.stdout
}

if (process.getuid?.() !== 0) {
  console.error('the TUN benchmark needs root (network namespaces, TUN devices)')
  process.exit(1)
}

const ns = `dhtnet-tun-bench-${process.pid}`
const work = mkdtempSync(join(tmpdir(), 'dhtnet-tun-bench-'))
const baseline = join(work, 'tun-baseline')
const ip = (...args: string[]): string => sh('ip', ['-n', ns, ...args])

/** A process inside the namespace that prints {"ready":true}, waits for "go", prints one JSON result line. */
class Runner {
  readonly proc: ChildProcess
  readonly #lines: string[] = []
  #wake: (() => void) | undefined

  constructor(cmd: string, args: string[]) {
    this.proc = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] })
    let buf = ''
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.#lines.push(buf.slice(0, nl))
        buf = buf.slice(nl + 1)
        this.#wake?.()
      }
    })
    this.proc.on('close', () => this.#wake?.())
  }

  async line(timeoutMs = 120_000): Promise<Record<string, number>> {
    const deadline = Date.now() + timeoutMs
    while (this.#lines.length === 0) {
      if (this.proc.exitCode !== null || Date.now() > deadline) throw new Error(`runner ${this.proc.spawnargs.join(' ')} gave no result`)
      await new Promise<void>((r) => {
        this.#wake = r
        setTimeout(r, 500)
      })
    }
    return JSON.parse(this.#lines.shift()!) as Record<string, number>
  }

  say(line: string): void {
    this.proc.stdin!.write(line + '\n')
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    const exited = new Promise((r) => this.proc.once('close', r))
    this.proc.stdin!.end()
    const timer = setTimeout(() => this.proc.pid !== undefined && process.kill(this.proc.pid, 'SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
}

const node = (...args: string[]): [string, string[]] => [process.execPath, ['--import', 'tsx', join(here, 'worker.ts'), ...args]]
const c = (...args: string[]): [string, string[]] => [baseline, args]

async function forwardRun([cmd, args]: [string, string[]]): Promise<Record<string, number>> {
  const r = new Runner(cmd, args)
  try {
    await r.line(60_000) // ready: tbA and tbB exist
    ip('addr', 'add', '10.1.0.1', 'peer', '10.1.0.2/32', 'dev', 'tbA')
    ip('addr', 'add', '10.2.0.1', 'peer', '10.2.0.2/32', 'dev', 'tbB')
    ip('link', 'set', 'tbA', 'up')
    ip('link', 'set', 'tbB', 'up')
    r.say('go')
    return await r.line()
  } finally {
    await r.stop()
  }
}

async function pingFlood([cmd, args]: [string, string[]]): Promise<{ perSecond: number; rttAvgUs: number; received: number; replies: number }> {
  const r = new Runner(cmd, args)
  try {
    await r.line(60_000)
    ip('addr', 'add', '10.3.0.1', 'peer', '10.3.0.2/32', 'dev', 'tbC')
    ip('link', 'set', 'tbC', 'up')
    r.say('go')
    const out = spawnSync('ip', ['netns', 'exec', ns, 'ping', '-f', '-q', '-n', '-c', String(PINGS), '-w', '120', '10.3.0.2'], { encoding: 'utf8' }).stdout
    r.say('stop')
    const stats = await r.line()
    const m = out.match(/(\d+) packets transmitted, (\d+) received.*time (\d+)ms/)
    const rtt = out.match(/rtt min\/avg\/max\/mdev = [\d.]+\/([\d.]+)\//)
    const received = Number(m?.[2] ?? 0)
    return { perSecond: Math.round(received / (Number(m?.[3] ?? NaN) / 1000)), rttAvgUs: Math.round(Number(rtt?.[1] ?? NaN) * 1000), received, replies: stats.replies ?? 0 }
  } finally {
    await r.stop()
  }
}

async function main(): Promise<void> {
  sh('cc', ['-O2', '-o', baseline, join(here, 'tun-baseline.c')])
  sh('ip', ['netns', 'add', ns])
  sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0'])
  ip('link', 'set', 'lo', 'up')

  const rows: { name: string; ours: number; base: number; unit: string; note: string }[] = []
  const result: Record<string, number> = {}
  for (const size of SIZES) {
    const ours: Record<string, number>[] = []
    const base: Record<string, number>[] = []
    for (let i = 0; i < RUNS; i++) {
      // alternate, so a load change on this shared machine hits both sides alike
      base.push(await forwardRun(c('forward', String(COUNT), String(size), String(WINDOW), String(BATCH))))
      ours.push(await forwardRun(node('forward', String(COUNT), String(size), String(WINDOW), String(BATCH))))
      log(`forward ${size} B run ${i + 1}: node ${ours.at(-1)!.pps} pps, C ${base.at(-1)!.pps} pps`)
    }
    const pps = median(ours.map((r) => r.pps!))
    const basePps = median(base.map((r) => r.pps!))
    const lost = ours.reduce((s, r) => s + (r.lost ?? 0), 0)
    rows.push({
      name: `forward ${size} B (write tbA → kernel → read tbB)`,
      ours: pps,
      base: basePps,
      unit: 'packets/s',
      note: `avg batch ${median(ours.map((r) => r.avgBatch!))} (C ${median(base.map((r) => r.avgBatch!))}), lost ${lost}`,
    })
    result[`forward_${size}B_pps`] = pps
    result[`forward_${size}B_c_pps`] = basePps
    result[`forward_${size}B_MBps`] = Math.round((pps * size) / 1e6)
    result[`forward_${size}B_avg_batch_packets`] = median(ours.map((r) => r.avgBatch!))
  }
  const pingC = await pingFlood(c('echo', '120'))
  const pingOurs = await pingFlood(node('echo', '120'))
  rows.push({
    name: `ping -f ×${PINGS} through tbC (echo replies)`,
    ours: pingOurs.perSecond,
    base: pingC.perSecond,
    unit: 'pings/s',
    note: `rtt avg ${pingOurs.rttAvgUs} µs (C ${pingC.rttAvgUs} µs), received ${pingOurs.received}/${PINGS} (C ${pingC.received})`,
  })
  result.ping_flood_per_s = pingOurs.perSecond
  result.ping_flood_c_per_s = pingC.perSecond
  result.ping_rtt_avg_us = pingOurs.rttAvgUs
  result.ping_rtt_c_avg_us = pingC.rttAvgUs

  console.log(`\nTUN benchmark, ${COUNT} packets per forward run, window ${WINDOW}, batch ${BATCH}, median of ${RUNS} (node ${process.version})\n`)
  console.log('| test | @dhtnet/tun | C baseline | ratio | notes |')
  console.log('|---|---:|---:|---:|---|')
  for (const r of rows) console.log(`| ${r.name} | ${r.ours} ${r.unit} | ${r.base} ${r.unit} | ${(r.ours / r.base).toFixed(2)} | ${r.note} |`)
  console.log(JSON.stringify(result))
}

try {
  await main()
} finally {
  spawnSync('ip', ['netns', 'del', ns])
  rmSync(work, { recursive: true, force: true })
}
