// NAT lab benchmark (see ./run): connect time and one-way throughput of our connections per path, next to raw TCP
// through the same routers (and, for relayed paths, raw TCP through the same coturn TCP relay) measured in the same
// run. Every case is built fresh (routers, bootstrap node, two devices as the tools run them); medians of --runs.
//
//   path         NAT A ↔ B              configuration (both devices)                          what carries it
//   udp_direct   eim ↔ eim              STUN, WebRTC only                                     WebRTC, srflx/srflx
//   tcp_direct   eim ↔ public host      STUN, ICE-TCP only                                    ICE-TCP, host/host
//   tcp_upnp     eim → sym + miniupnpd  STUN, ICE-TCP only, UPnP on the served side           ICE-TCP, host/srflx (mapped port)
//   turn_udp     sym ↔ sym              STUN + TURN/UDP (ICE server), WebRTC only             WebRTC through coturn (UDP)
//   turn_tcp     blockudp ↔ eim         STUN + the tools' TURN setting (both relays), auto    ICE-TCP through coturn (TCP)
//
// The connecting device (the requester) sends `--mib` MiB to the other's "sink" channel (→), then receives as much
// from its "source" channel (←) on the same connection; raw baselines send as much from the same host to the same
// host: through a DNAT port forward on the receiver's router (the rule miniupnpd would install), to
// the public host directly, and for relayed paths through a TURN/TCP relay (RFC 6062) allocated by the receiver on
// the same coturn. Ends with ONE line of JSON. Needs root (network namespaces).
// Options: --runs N (5), --mib N (32), --paths regex.
import { generateIdentity } from '../../../packages/core/src/identity/generate.js'
import { chainToPem, privateKeyToPem } from '../../../packages/core/src/identity/pem.js'
import type { Identity } from '../../../packages/core/src/identity/types.js'
import { NET, NatLab, labUnavailableReason, run as sh, type CaseNet, type NatMode } from '../../../packages/core/test/helpers/natlab/topology.js'
import {
  type DeviceConfig,
  type LabProcess,
  STUN_URL,
  TURN_PASS,
  TURN_REALM,
  TURN_URL,
  TURN_USER,
  spawnInNs,
  startBootstrap,
  startDevice,
  tempDir,
} from '../../../packages/core/test/helpers/natlab/procs.js'
import { makeUpnpRouter, startCoturnTwoIps, startMiniupnpd, upnpLabUnavailableReason } from '../../../packages/core/test/helpers/natlab/upnp.js'

const args = process.argv.slice(2)
const opt = (name: string, def: string): string => {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] ? args[i + 1]! : def
}
const RUNS = Number(opt('--runs', '5'))
const MIB = Number(opt('--mib', '32'))
const PATHS = new RegExp(opt('--paths', '.'))
const BYTES = MIB * 1024 * 1024
const RAW_PORT = 47000
const PUBLIC_B = '198.51.100.30'
const RAW_PEER = new URL('./raw-peer.ts', import.meta.url).pathname

const why = labUnavailableReason() ?? upnpLabUnavailableReason()
if (why) {
  console.error(`cannot run: ${why}`)
  process.exit(2)
}

interface PathSpec {
  name: string
  natA: NatMode
  natB: NatMode
  /** B is a public host (no router) */
  publicB?: boolean
  /** miniupnpd on the served side's router; the served side maps its port; the other side connects */
  upnp?: boolean
  device: Pick<DeviceConfig, 'iceServers' | 'transport' | 'turn'>
  relay: boolean
  expect: (pair: string, relay: string | undefined) => boolean
}

const turnSetting = { host: NET.turn, user: TURN_USER, pass: TURN_PASS, realm: TURN_REALM }
const SPECS: PathSpec[] = [
  {
    name: 'udp_direct',
    natA: 'eim',
    natB: 'eim',
    device: { iceServers: [STUN_URL], transport: 'webrtc' },
    relay: false,
    expect: (p: string, r: string | undefined) => !r && !p.includes('relay'),
  },
  {
    name: 'tcp_direct',
    natA: 'eim',
    natB: 'eim',
    publicB: true,
    device: { iceServers: [STUN_URL], transport: 'tcp' },
    relay: false,
    expect: (p: string, r: string | undefined) => !r && p === 'host/host',
  },
  {
    name: 'tcp_upnp',
    natA: 'sym',
    natB: 'eim',
    upnp: true,
    device: { iceServers: [STUN_URL], transport: 'tcp' },
    relay: false,
    expect: (p: string, r: string | undefined) => !r && p === 'host/srflx',
  },
  {
    name: 'turn_udp',
    natA: 'sym',
    natB: 'sym',
    device: { iceServers: [STUN_URL, TURN_URL], transport: 'webrtc' },
    relay: true,
    expect: (_p: string, r: string | undefined) => r === 'udp',
  },
  {
    name: 'turn_tcp',
    natA: 'blockudp',
    natB: 'eim',
    device: { iceServers: [STUN_URL], turn: turnSetting },
    relay: true,
    expect: (_p: string, r: string | undefined) => r === 'tcp',
  },
].filter((s) => PATHS.test(s.name)) as PathSpec[]

const median = (xs: number[]): number | undefined => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const dir = tempDir()
const lab = NatLab.create()
const live = new Set<LabProcess>()
const started = (p: LabProcess): LabProcess => {
  live.add(p)
  return p
}
async function stopAll(procs: LabProcess[]): Promise<void> {
  for (const p of procs.reverse()) {
    await p.stop()
    live.delete(p)
  }
}

let ca: Identity
async function identity(name: string): Promise<{ key: string; cert: string; id: string }> {
  const id = await generateIdentity({ name, issuer: ca, keySize: 2048 })
  return { key: dir.write(`${name}.pem`, privateKeyToPem(id.privateKey), 0o600), cert: dir.write(`${name}.crt`, chainToPem(id.chain)), id: id.id }
}

/** A DNAT port forward on a router built by topology.ts (table ip nlfw): WAN port → host:port. */
function forwardPort(router: string, host: string, port: number): void {
  sh(
    'ip',
    ['netns', 'exec', router, 'nft', '-f', '-'],
    `add chain ip nlfw benchpre { type nat hook prerouting priority -100; policy accept; }
add rule ip nlfw benchpre iifname "wan0" tcp dport ${port} dnat to ${host}:${port}
insert rule ip nlfw forward ct status dnat accept
`,
  )
}

/** The same forward in a miniupnpd router (table inet nlfw, miniupnpd's chains), as miniupnpd installs it. */
function forwardPortUpnp(router: string, host: string, port: number): void {
  sh(
    'ip',
    ['netns', 'exec', router, 'nft', '-f', '-'],
    `add rule inet nlfw prerouting_miniupnpd iifname "wan0" tcp dport ${port} dnat ip to ${host}:${port}
add rule inet nlfw miniupnpd ip daddr ${host} tcp dport ${port} accept
`,
  )
}

function raw(netns: string, name: string, config: Record<string, unknown>): LabProcess {
  return started(spawnInNs(netns, name, process.execPath, ['--import', 'tsx', RAW_PEER], { NATLAB_RAW: JSON.stringify(config) }))
}

async function rawSend(from: string, host: string, port: number): Promise<{ mbPerS: number; connectMs: number } | undefined> {
  const sender = raw(from, 'raw-send', { mode: 'send', host, port, bytes: BYTES })
  const line = await sender.waitFor('raw result', (_l, j) => j?.event === 'result', 120_000).catch(() => undefined)
  await sender.stop()
  live.delete(sender)
  const r = line ? (JSON.parse(line) as { ok: boolean; mbPerS: number; connectMs: number }) : undefined
  if (!r?.ok) process.stderr.write(`raw TCP to ${host}:${port} failed:\n${sender.output.slice(-10).join('\n')}\n`)
  return r?.ok ? r : undefined
}

interface Sample {
  connectMs?: number
  mbPerS?: number
  mbPerSReverse?: number
  pair?: string
  relay?: string
  failed?: string
  rawMbPerS?: number
  rawConnectMs?: number
  rawRelayMbPerS?: number
}

async function runOnce(spec: PathSpec, n: number): Promise<Sample> {
  const tag = `${spec.name}-${n}`
  const [a, b] = await Promise.all([identity(`${tag}-a`), identity(`${tag}-b`)])
  const net: CaseNet = lab.addCase(spec.natA, spec.natB)
  const procs: LabProcess[] = []
  const sample: Sample = {}
  try {
    if (spec.upnp) {
      makeUpnpRouter(net.routerA, 'sym')
      procs.push(started(await startMiniupnpd(net.routerA, dir)))
    }
    procs.push(started(await startBootstrap(lab.boot)))
    // the served side and the connecting side
    const servedNs = spec.publicB ? `${lab.prefix}-pb` : spec.upnp ? net.hostA : net.hostB
    const connectingNs = spec.upnp ? net.hostB : net.hostA
    const servedHost = spec.publicB ? PUBLIC_B : spec.upnp ? NET.host.A : NET.host.B
    const served = started(
      startDevice(
        servedNs,
        `${tag}:served`,
        { mode: 'serve', key: b.key, cert: b.cert, ...spec.device, ...(spec.upnp ? { upnp: true } : {}) },
        spec.upnp ? { DHTNET_FORBID_PUBLIC_BOOTSTRAP: '0' } : {},
      ),
    )
    procs.push(served)
    await served.waitFor('served device ready', (_l, j) => j?.event === 'ready' || j?.event === 'result', 30_000)
    if (spec.upnp) await served.waitFor('its TCP mapping', (l) => l.includes('ice-tcp: TCP port'), 10_000).catch(() => undefined)
    const client = started(
      startDevice(connectingNs, `${tag}:connecting`, { mode: 'connect', key: a.key, cert: a.cert, ...spec.device, peer: b.id, bytes: BYTES, timeoutMs: 30_000, sink: true }),
    )
    procs.push(client)
    const exited = await Promise.race([client.exited, new Promise<null>((r) => setTimeout(() => r(null), 150_000).unref())])
    if (exited === null) await client.stop()
    const res = client.jsonLines.find((j) => j.event === 'result') ?? {}
    if (res.ok === true) {
      Object.assign(sample, {
        connectMs: res.connectMs as number,
        mbPerS: res.mbPerS as number,
        mbPerSReverse: res.mbPerSReverse as number,
        pair: res.pair as string,
        relay: res.relay as string | undefined,
      })
      if (!spec.expect(String(res.pair), res.relay as string | undefined)) sample.failed = `unexpected path ${String(res.pair)} relay ${String(res.relay)}`
    } else {
      sample.failed = `${String(res.code)} ${String(res.message)}`.slice(0, 200)
    }
    await stopAll([client, served])

    // raw TCP along the same routers: into the receiver (a port forward on its router, or the public host itself)
    const sink = raw(servedNs, 'raw-sink', { mode: 'sink', port: RAW_PORT })
    procs.push(sink)
    await sink.waitFor('raw sink', (_l, j) => j?.event === 'listening', 20_000)
    let target = PUBLIC_B
    if (!spec.publicB) {
      const router = spec.upnp ? net.routerA : net.routerB
      if (spec.upnp) forwardPortUpnp(router, servedHost, RAW_PORT)
      else forwardPort(router, servedHost, RAW_PORT)
      target = spec.upnp ? NET.routerWan.A : NET.routerWan.B
    }
    const r = await rawSend(connectingNs, target, RAW_PORT)
    if (r) Object.assign(sample, { rawMbPerS: r.mbPerS, rawConnectMs: r.connectMs })

    if (spec.relay) {
      // raw TCP through a TURN/TCP relay the receiver holds on the same coturn (the connecting side's public address
      // permitted)
      const relayed = raw(servedNs, 'raw-relay-sink', { mode: 'relay-sink', server: `${NET.turn}:3478`, user: TURN_USER, pass: TURN_PASS, peer: NET.routerWan.A })
      procs.push(relayed)
      const line = await relayed.waitFor('relayed address', (_l, j) => j?.event === 'relayed', 20_000)
      const at = JSON.parse(line) as { address: string; port: number }
      const rr = await rawSend(connectingNs, at.address, at.port)
      if (rr) sample.rawRelayMbPerS = rr.mbPerS
      else process.stderr.write(`the relay's side:\n${relayed.output.slice(-20).join('\n')}\ncoturn:\n${coturn?.output.slice(-30).join('\n')}\n`)
    }
  } finally {
    await stopAll(procs)
    lab.removeCase(net)
  }
  return sample
}

const summary: Record<string, unknown> = { bench: 'nat', mib: MIB, runs: RUNS }
const rows: string[][] = [['path', 'pair / relay (per run)', 'connect ms', 'ours MB/s → / ←', 'raw TCP MB/s (routers)', 'raw TCP via relay MB/s', 'ours vs raw path → / ←']]
let coturn: LabProcess | undefined
try {
  coturn = started(await startCoturnTwoIps(lab.pub, dir.path))
  lab.addPublicNamespace('pb', PUBLIC_B)
  ca = await generateIdentity({ name: 'nat-bench-ca', keySize: 2048 })
  for (const spec of SPECS) {
    const samples: Sample[] = []
    for (let i = 1; i <= RUNS; i++) {
      const s = await runOnce(spec, i)
      samples.push(s)
      process.stderr.write(
        `${spec.name} #${i}: ${s.failed ? `FAILED ${s.failed}` : `${s.pair}${s.relay ? ` relay ${s.relay}` : ''} ${s.connectMs} ms ${s.mbPerS} / ${s.mbPerSReverse} MB/s`}; raw ${s.rawMbPerS ?? '-'} MB/s${spec.relay ? `, raw via relay ${s.rawRelayMbPerS ?? '-'} MB/s` : ''}\n`,
      )
    }
    const ok = samples.filter((s) => !s.failed)
    const connect = median(ok.map((s) => s.connectMs!))
    const ours = median(ok.map((s) => s.mbPerS!))
    const oursReverse = median(ok.flatMap((s) => (s.mbPerSReverse !== undefined ? [s.mbPerSReverse] : [])))
    const rawRouters = median(samples.flatMap((s) => (s.rawMbPerS !== undefined ? [s.rawMbPerS] : [])))
    const rawRelay = median(samples.flatMap((s) => (s.rawRelayMbPerS !== undefined ? [s.rawRelayMbPerS] : [])))
    const rawPath = spec.relay ? rawRelay : rawRouters
    const overheadOf = (x: number | undefined): number | undefined => (x !== undefined && rawPath ? Math.round((1 - x / rawPath) * 1000) / 10 : undefined)
    const overhead = overheadOf(ours)
    const overheadReverse = overheadOf(oursReverse)
    const pct = (o: number | undefined): string => (o === undefined ? '-' : `${o > 0 ? '-' : '+'}${Math.abs(o)}%`)
    rows.push([
      spec.name,
      samples.map((s) => (s.failed ? 'failed' : `${s.pair}${s.relay ? `(${s.relay})` : ''}`)).join(' '),
      connect !== undefined ? String(Math.round(connect)) : '-',
      ours !== undefined ? `${ours.toFixed(1)} / ${oursReverse?.toFixed(1) ?? '-'}` : '-',
      rawRouters !== undefined ? rawRouters.toFixed(1) : '-',
      rawRelay !== undefined ? rawRelay.toFixed(1) : '-',
      `${pct(overhead)} / ${pct(overheadReverse)}`,
    ])
    summary[`${spec.name}_ok`] = `${ok.length}/${samples.length}`
    if (connect !== undefined) summary[`${spec.name}_connect_ms`] = Math.round(connect)
    if (ours !== undefined) summary[`${spec.name}_MBps`] = ours
    if (oursReverse !== undefined) summary[`${spec.name}_reverse_MBps`] = oursReverse
    if (rawRouters !== undefined) summary[`${spec.name}_raw_tcp_MBps`] = rawRouters
    if (rawRelay !== undefined) summary[`${spec.name}_raw_tcp_relay_MBps`] = rawRelay
    if (overhead !== undefined) summary[`${spec.name}_overhead_vs_raw_pct`] = overhead
    if (overheadReverse !== undefined) summary[`${spec.name}_reverse_overhead_vs_raw_pct`] = overheadReverse
  }
} finally {
  await stopAll([...live])
  lab.destroy()
  dir.remove()
}
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n') + '\n')
process.stdout.write(JSON.stringify(summary) + '\n')
