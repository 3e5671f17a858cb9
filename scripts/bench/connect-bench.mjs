#!/usr/bin/env node
// scripts/bench/connect: the ConnectionManager per path (ICE-TCP, WebRTC, auto, and the DHTNet path: both sides
// speaking as C++ DHTNet devices) next to raw TCP and Node TLS 1.3 measured in the same run, on loopback with a local
// bootstrap node. Figures: connectDevice → first byte in a warm process (median, p95) and a new channel on a live
// connection; a fresh process → first byte; 1-channel and 8-channel throughput; RSS per idle connection (both sides).
// One server process per path (its own identity), clients in this process (warm) or in fresh processes; runs are
// interleaved over the paths so that the load of this shared machine falls on each alike. Loopback only; every
// process started here is stopped by its pid. Ends with one JSON line.
// Knobs: WARM_RUNS (20), FRESH_RUNS (5), THROUGHPUT_RUNS (3), SINGLE_MIB (256), MULTI_MIB (32 per channel),
// IDLE_CONNECTIONS (64; paced under the responder's limits: 0.3 s apart after 12, 0.55 s after 6 on the DHTNet path), BENCH_PATHS (tcp,webrtc,auto,dhtnet).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import net from 'node:net'
import tls from 'node:tls'
import { selectedPaths, pathEnv, GOALS, median, percentile, withSpread, fixed, jsonNumber, printTable, stopChild } from './transport-paths.mjs'

const core = await import(new URL('../../packages/core/dist/index.js', import.meta.url).href)
const { DhtNode, SecureDht, ConnectionManager, TrustStore, generateIdentity, chainToPem, privateKeyToPem } = core

const WARM_RUNS = Number(process.env.WARM_RUNS ?? 20)
const FRESH_RUNS = Number(process.env.FRESH_RUNS ?? process.env.RUNS ?? 5)
const THROUGHPUT_RUNS = Number(process.env.THROUGHPUT_RUNS ?? 3)
const ONE_MIB = 1024 * 1024
const SINGLE_BYTES = Number(process.env.SINGLE_MIB ?? 256) * ONE_MIB
const MULTI_BYTES_EACH = Number(process.env.MULTI_MIB ?? 32) * ONE_MIB
const IDLE_CONNECTIONS = Number(process.env.IDLE_CONNECTIONS ?? 64)
const PATHS = selectedPaths()
const peerScript = fileURLToPath(new URL('./connect-peer.mjs', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'dhtnet-bench-connect-'))
const children = new Set()
const log = (m) => process.stderr.write(`[bench] ${m}\n`)

function spawnPeer(args, { waitFor = 'ready', timeoutMs = 60_000, env = process.env } = {}) {
  const t0 = performance.now()
  const child = spawn(process.execPath, ['--expose-gc', peerScript, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
  children.add(child)
  child.on('exit', () => children.delete(child))
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const rl = createInterface({ input: child.stdout })
  const result = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stopChild(child)
      reject(new Error(`${args[0]}: no "${waitFor}" within ${timeoutMs} ms: ${stderr.slice(-2000)}`))
    }, timeoutMs)
    rl.on('line', (line) => {
      let msg
      try {
        msg = JSON.parse(line)
      } catch {
        return
      }
      if (msg.event === waitFor) {
        clearTimeout(timer)
        resolve({ msg, parentMs: performance.now() - t0 })
      } else if (msg.event === 'error') {
        clearTimeout(timer)
        reject(new Error(msg.message))
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${args[0]} exited (${code}) before "${waitFor}": ${stderr.slice(-2000)}`))
    })
  })
  result.catch(() => {}) // a caller that gave up on it does not make it unhandled
  return { child, result }
}
const peerEnv = (path) => ({ ...pathEnv(path), BENCH_TRANSPORT: path.policy })

function writeIdentity(id, name) {
  const key = join(dir, `${name}.pem`)
  const crt = join(dir, `${name}.crt`)
  writeFileSync(key, privateKeyToPem(id.privateKey), { mode: 0o600 })
  writeFileSync(crt, chainToPem(id.chain))
  return { key, crt }
}

/** Resolve with the first data on `s` (bounded). */
function firstData(s, ms = 30_000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no data within 30 s')), ms)
    s.once('data', (d) => {
      clearTimeout(t)
      resolve(d)
    })
    s.once('error', (e) => {
      clearTimeout(t)
      reject(e)
    })
  })
}

/**
 * Send `bytes` on each socket (backpressure respected), resolve with MB/s once every peer answered its count (the
 * sink answers when it has them all: no half-close needed). `header` is written first (raw TCP/TLS baselines).
 */
async function pushBytes(sockets, bytes, header) {
  const chunk = Buffer.alloc(64 * 1024, 0x5a)
  const t0 = performance.now()
  await Promise.all(
    sockets.map(async (s) => {
      let reply = ''
      const answered = new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no count from the sink within 120 s')), 120_000)
        s.on('data', (d) => {
          reply += d
          if (Number(reply) >= bytes) {
            clearTimeout(t)
            resolve()
          }
        })
        s.once('error', (e) => {
          clearTimeout(t)
          reject(e)
        })
      })
      if (header) s.write(header)
      let sent = 0
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent)
        sent += n
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await once(s, 'drain')
      }
      await answered
      if (Number(reply) !== bytes) throw new Error(`the sink counted ${reply} of ${bytes} bytes`)
      s.destroy()
    }),
  )
  const s = (performance.now() - t0) / 1000
  return (bytes * sockets.length) / 1e6 / s
}

function tcpConnect(port, secure) {
  return new Promise((resolve, reject) => {
    const s = secure
      ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => resolve(s))
      : net.connect(port, '127.0.0.1', () => resolve(s))
    s.once('error', reject)
  })
}

async function rssOf(port, secure) {
  const s = await tcpConnect(port, secure)
  s.write('r')
  const parts = []
  s.on('data', (d) => parts.push(d))
  await once(s, 'end')
  s.destroy()
  return JSON.parse(Buffer.concat(parts).toString()).rss
}

const tally = (map, key) => map.set(key, (map.get(key) ?? 0) + 1)
const results = Object.fromEntries(
  [...PATHS.map((p) => p.key), 'rawTcp', 'tls'].map((k) => [
    k,
    { warm: [], channel: [], fresh: [], freshInProcess: [], single: [], multi: [], idle: undefined, carried: new Map(), errors: [], steps: new Map() },
  ]),
)
const clients = []
const nodes = []
let bootstrap
try {
  // ---------------------------------------------------------------------------------------------- set-up
  // A client identity per phase: answers stay on the DHT at the requester's key for their lifetime (10 min) and a new
  // listener there decrypts each old one within SecureDht's budget (8/s per source IP; here every value comes from
  // 127.0.0.1), so the 64 idle connections of one identity would slow its next fresh process by seconds.
  const ROLES = ['server', 'warm', 'idle', 'fresh']
  log(`generating identities (RSA-4096: a CA, then ${ROLES.join(', ')} per path: ${PATHS.map((p) => p.key).join(', ')})`)
  const ca = await generateIdentity({ name: 'bench-ca' })
  const ids = await Promise.all(PATHS.flatMap((p) => ROLES.map((role) => generateIdentity({ name: `bench-${role}-${p.key}`, issuer: ca }))))
  const caFiles = writeIdentity(ca, 'ca')
  bootstrap = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false })
  await bootstrap.start()
  const boot = `127.0.0.1:${bootstrap.port}`
  log(`bootstrap node on ${boot}`)
  const servers = {}
  PATHS.forEach((p, i) => {
    const [serverId, warmId, idleId, freshId] = ids.slice(ROLES.length * i, ROLES.length * (i + 1))
    const sf = writeIdentity(serverId, `server-${p.key}`)
    const idleFiles = writeIdentity(idleId, `idle-${p.key}`)
    const freshFiles = writeIdentity(freshId, `fresh-${p.key}`)
    servers[p.key] = { path: p, files: sf, idleFiles, freshFiles, warmId, proc: spawnPeer(['server', sf.key, sf.crt, caFiles.crt, boot], { env: peerEnv(p) }) }
  })
  for (const s of Object.values(servers)) s.id = (await s.proc.result).msg.id
  const tcpServer = spawnPeer(['tcp-server'])
  const tlsServer = spawnPeer(['tls-server', servers[PATHS[0].key].files.crt, servers[PATHS[0].key].files.key])
  const tcpPort = (await tcpServer.result).msg.port
  const tlsPort = (await tlsServer.result).msg.port

  // ---------------------------------------------------------------------------------------------- idle RSS (fresh servers)
  for (const p of PATHS) {
    const s = servers[p.key]
    try {
      const { msg } = await spawnPeer(['idle-client', s.idleFiles.key, s.idleFiles.crt, caFiles.crt, boot, s.id, String(IDLE_CONNECTIONS)], {
        waitFor: 'idle',
        timeoutMs: 300_000,
        env: peerEnv(p),
      }).result
      results[p.key].idle = msg
      for (const [k, n] of Object.entries(msg.byTransport)) results[p.key].carried.set(k, (results[p.key].carried.get(k) ?? 0) + n)
      log(
        `idle ${p.label}: ${msg.clientConnections} connections (${msg.failed} failed ${JSON.stringify(msg.errors)}; ${JSON.stringify(msg.byTransport)}), server ${(msg.serverPerConnBytes / 1024).toFixed(0)} KiB, client ${(msg.clientPerConnBytes / 1024).toFixed(0)} KiB per connection`,
      )
    } catch (err) {
      results[p.key].errors.push(`idle: ${err.message.split('\n')[0]}`)
      log(`idle ${p.label}: FAILED ${err.message.slice(0, 500)}`)
    }
  }
  for (const [kind, port, secure] of [
    ['rawTcp', tcpPort, false],
    ['tls', tlsPort, true],
  ]) {
    const r0 = await rssOf(port, secure)
    global.gc?.()
    const c0 = process.memoryUsage().rss
    const socks = []
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const s = await tcpConnect(port, secure)
      s.write('i')
      socks.push(s)
    }
    await new Promise((r) => setTimeout(r, 300))
    const r1 = await rssOf(port, secure)
    global.gc?.()
    const c1 = process.memoryUsage().rss
    results[kind].idle = { serverPerConnBytes: (r1 - r0) / IDLE_CONNECTIONS, clientPerConnBytes: (c1 - c0) / IDLE_CONNECTIONS, clientConnections: IDLE_CONNECTIONS }
    for (const s of socks) s.destroy()
  }

  // ---------------------------------------------------------------------------------------------- fresh process → first byte
  for (let i = 0; i < FRESH_RUNS; i++) {
    const line = []
    for (const p of PATHS) {
      const s = servers[p.key]
      try {
        const { msg, parentMs } = await spawnPeer(['client', s.freshFiles.key, s.freshFiles.crt, caFiles.crt, boot, s.id], { waitFor: 'first-byte', env: peerEnv(p) }).result
        results[p.key].fresh.push(parentMs)
        results[p.key].freshInProcess.push(msg.connectMs)
        tally(results[p.key].carried, `${msg.transport}/${msg.mux}`)
        line.push(`${p.key} ${parentMs.toFixed(0)} ms (connectDevice ${msg.connectMs} ms, ${msg.transport})`)
      } catch (err) {
        results[p.key].errors.push(`fresh: ${err.message.split('\n')[0]}`)
        line.push(`${p.key} FAILED`)
      }
    }
    for (const [kind, port] of [
      ['rawTcp', tcpPort],
      ['tls', tlsPort],
    ]) {
      const { parentMs } = await spawnPeer([`${kind === 'rawTcp' ? 'tcp' : 'tls'}-client`, String(port)], { waitFor: 'first-byte' }).result
      results[kind].fresh.push(parentMs)
      line.push(`${kind} ${parentMs.toFixed(0)} ms`)
    }
    log(`fresh process run ${i + 1}/${FRESH_RUNS}: ${line.join(', ')}`)
  }

  // ---------------------------------------------------------------------------------------------- warm process
  for (const p of PATHS) {
    const s = servers[p.key]
    const node = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap: [boot] })
    nodes.push(node)
    await node.start()
    await Promise.race([once(node, 'connected'), new Promise((r) => setTimeout(r, 5000))])
    const dht = new SecureDht(node, s.warmId)
    const trust = new TrustStore()
    trust.addTrustedCa(ca.certificate)
    // the manager's progress lines ("…: +13 ms: gathering candidates") give where a warm connect spends its time
    const client = { path: p, dht, peer: s.id, capture: undefined }
    const logger = (_level, message) => {
      const m = client.capture && message.match(/: \+(\d+) ms: (.+)$/)
      if (m) client.capture.push({ at: Number(m[1]), step: m[2].replace(/ \(no answer yet.*\)$/, '') })
    }
    client.cm = new ConnectionManager({ identity: s.warmId, dht, trust, bindAddress: '127.0.0.1', transport: p.policy, emulateDhtnet: p.emulate, logger })
    await client.cm.start({ clientOnly: true }) // as a tool's client: our certificate published, transports prepared
    clients.push(client)
  }
  // warm-up, not counted: a connection per path (certificate lookup, JIT)
  for (const c of clients) {
    try {
      const ch = await c.cm.connectDevice(c.peer, 'echo')
      ch.write('w')
      await firstData(ch)
      ch.destroy()
    } catch (err) {
      results[c.path.key].errors.push(`warm-up: ${err.message.split('\n')[0]}`)
      log(`warm-up ${c.path.label}: FAILED ${err.message.slice(0, 300)}`)
    }
    c.cm.closeConnectionsWith(c.peer)
  }
  for (let i = 0; i < WARM_RUNS; i++) {
    for (const c of clients) {
      const r = results[c.path.key]
      try {
        let t0 = performance.now()
        c.capture = []
        const ch = await c.cm.connectDevice(c.peer, 'echo', { forceNewSocket: true })
        ch.write('x')
        await firstData(ch)
        const total = performance.now() - t0
        r.warm.push(total)
        const steps = c.capture
        c.capture = undefined
        steps.forEach((x, k) => {
          const until = k + 1 < steps.length ? steps[k + 1].at : total
          if (!r.steps.has(x.step)) r.steps.set(x.step, [])
          r.steps.get(x.step).push(until - x.at)
        })
        const info = c.cm.connections(c.peer)
        for (const x of info) tally(r.carried, `${x.transport}/${x.mux}`)
        // a second channel on the live connection: one round trip
        t0 = performance.now()
        const ch2 = await c.cm.connectDevice(c.peer, 'echo')
        ch2.write('y')
        await firstData(ch2)
        r.channel.push(performance.now() - t0)
        ch.destroy()
        ch2.destroy()
      } catch (err) {
        r.errors.push(`warm: ${err.message.split('\n')[0]}`)
      }
      c.cm.closeConnectionsWith(c.peer)
      await new Promise((res) => setTimeout(res, 20))
    }
    for (const [kind, port, secure] of [
      ['rawTcp', tcpPort, false],
      ['tls', tlsPort, true],
    ]) {
      const t0 = performance.now()
      const s = await tcpConnect(port, secure)
      s.write('ex')
      await firstData(s)
      results[kind].warm.push(performance.now() - t0)
      s.destroy()
    }
  }
  log(`warm connect: ${[...PATHS.map((p) => p.key), 'rawTcp', 'tls'].map((k) => `${k} ${fixed(median(results[k].warm), 1)} ms`).join(', ')}`)

  // ---------------------------------------------------------------------------------------------- throughput
  for (let i = 0; i < THROUGHPUT_RUNS; i++) {
    const line = []
    for (const c of clients) {
      const r = results[c.path.key]
      try {
        r.single.push(await pushBytes([await c.cm.connectDevice(c.peer, `sink:${SINGLE_BYTES}`)], SINGLE_BYTES))
        const eight = await Promise.all(Array.from({ length: 8 }, () => c.cm.connectDevice(c.peer, `sink:${MULTI_BYTES_EACH}`)))
        r.multi.push(await pushBytes(eight, MULTI_BYTES_EACH))
        for (const x of c.cm.connections(c.peer)) tally(r.carried, `${x.transport}/${x.mux}`)
        line.push(`${c.path.key} ${r.single.at(-1).toFixed(0)}/${r.multi.at(-1).toFixed(0)}`)
      } catch (err) {
        r.errors.push(`throughput: ${err.message.split('\n')[0]}`)
        line.push(`${c.path.key} FAILED (${err.message.split('\n')[0]})`)
      }
      c.cm.closeConnectionsWith(c.peer)
    }
    for (const [kind, port, secure] of [
      ['rawTcp', tcpPort, false],
      ['tls', tlsPort, true],
    ]) {
      results[kind].single.push(await pushBytes([await tcpConnect(port, secure)], SINGLE_BYTES, `s${SINGLE_BYTES}\n`))
      const socks = await Promise.all(Array.from({ length: 8 }, () => tcpConnect(port, secure)))
      results[kind].multi.push(await pushBytes(socks, MULTI_BYTES_EACH, `s${MULTI_BYTES_EACH}\n`))
      line.push(`${kind} ${results[kind].single.at(-1).toFixed(0)}/${results[kind].multi.at(-1).toFixed(0)}`)
    }
    log(`throughput run ${i + 1}/${THROUGHPUT_RUNS} (MB/s, 1 channel/8 channels): ${line.join(', ')}`)
  }
} finally {
  for (const c of clients) {
    await c.cm.close()
    c.dht.close()
  }
  for (const n of nodes) await n.stop()
  for (const c of [...children]) await stopChild(c)
  await bootstrap?.stop()
  rmSync(dir, { recursive: true, force: true })
}

// ------------------------------------------------------------------------------------------------ report
const cols = [
  ...PATHS.map((p) => ({ key: p.key, label: p.label, json: p.json })),
  { key: 'rawTcp', label: 'raw TCP', json: 'raw_tcp' },
  { key: 'tls', label: 'TLS 1.3', json: 'tls13' },
]
const kib = (b) => (b === undefined ? '' : (b / 1024).toFixed(0))
const row = (label, f, goal = '') => [label, ...cols.map((c) => f(results[c.key], c.key)), goal]
console.log(
  `ConnectionManager per path on loopback (local bootstrap); median (min–max) unless said; warm ${WARM_RUNS} runs, fresh ${FRESH_RUNS}, throughput ${THROUGHPUT_RUNS} × ${SINGLE_BYTES / ONE_MIB} MiB (1 channel) and 8 × ${MULTI_BYTES_EACH / ONE_MIB} MiB; MB = 10^6 bytes`,
)
printTable([
  ['metric', ...cols.map((c) => c.label), 'goal'],
  row('warm: connectDevice → first byte, median ms', (r) => fixed(median(r.warm), 1), GOALS.warmConnectMs),
  row('warm: connectDevice → first byte, p95 ms', (r) => fixed(percentile(r.warm, 95), 1)),
  row('warm: new channel on a live connection → first byte, median ms', (r) => fixed(median(r.channel), 1)),
  row('fresh process → first byte, ms', (r) => withSpread(r.fresh)),
  row('  of which connectDevice → first byte, median ms', (r) => fixed(median(r.freshInProcess))),
  row('1 channel (connection), MB/s', (r) => withSpread(r.single)),
  row('8 channels (connections), MB/s aggregate', (r) => withSpread(r.multi)),
  row(`RSS per idle connection (${IDLE_CONNECTIONS}), server, KiB`, (r) => kib(r.idle?.serverPerConnBytes)),
  row('RSS per idle connection, client, KiB', (r) => kib(r.idle?.clientPerConnBytes)),
])
// where a warm connect spends its time: the manager's steps, median ms (a step absent in a run counts nothing)
const stepNames = [...new Set(PATHS.flatMap((p) => [...results[p.key].steps.keys()]))]
if (stepNames.length) {
  console.log('\nwarm connectDevice → first byte, by step of the connection manager (median ms over the runs that had the step):')
  printTable([['step', ...PATHS.map((p) => p.label)], ...stepNames.map((st) => [st, ...PATHS.map((p) => fixed(median(results[p.key].steps.get(st) ?? []), 1))])])
}
for (const p of PATHS) {
  const r = results[p.key]
  const carried = [...r.carried].map(([k, n]) => `${k} ${n}`).join(', ')
  console.log(
    `${p.label}: connections carried by ${carried || 'none'}${r.errors.length ? `; ${r.errors.length} failure(s): ${[...new Set(r.errors)].slice(0, 3).join(' | ')}` : ''}`,
  )
}
const json = { bench: 'connect', warm_runs: WARM_RUNS, fresh_runs: FRESH_RUNS, throughput_runs: THROUGHPUT_RUNS, idle_connections: IDLE_CONNECTIONS }
for (const c of cols) {
  const r = results[c.key]
  Object.assign(json, {
    [`${c.json}_warm_connect_first_byte_ms_median`]: jsonNumber(median(r.warm), 1),
    [`${c.json}_warm_connect_first_byte_ms_p95`]: jsonNumber(percentile(r.warm, 95), 1),
    [`${c.json}_fresh_process_first_byte_ms_median`]: jsonNumber(median(r.fresh)),
    [`${c.json}_one_channel_MBps_median`]: jsonNumber(median(r.single)),
    [`${c.json}_eight_channels_MBps_median`]: jsonNumber(median(r.multi)),
    [`${c.json}_idle_connection_rss_KiB_server`]: r.idle ? jsonNumber(r.idle.serverPerConnBytes / 1024) : null,
    [`${c.json}_idle_connection_rss_KiB_client`]: r.idle ? jsonNumber(r.idle.clientPerConnBytes / 1024) : null,
  })
  if (PATHS.some((p) => p.key === c.key)) {
    json[`${c.json}_warm_new_channel_first_byte_ms_median`] = jsonNumber(median(r.channel), 1)
    if (r.errors.length) json[`${c.json}_failures`] = r.errors.length
  }
}
const auto = results.auto
if (auto) {
  json.auto_ice_tcp_connections = [...auto.carried].filter(([k]) => k.startsWith('ice-tcp')).reduce((a, [, n]) => a + n, 0)
  json.auto_webrtc_connections = [...auto.carried].filter(([k]) => k.startsWith('webrtc')).reduce((a, [, n]) => a + n, 0)
}
console.log(JSON.stringify(json))
