#!/usr/bin/env node
// scripts/bench/connect: see the shell wrapper. Loopback only; every process started here is stopped by its pid.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import net from 'node:net'
import tls from 'node:tls'

const core = await import(new URL('../../packages/core/dist/index.js', import.meta.url).href)
const { DhtNode, SecureDht, ConnectionManager, TrustStore, generateIdentity, chainToPem, privateKeyToPem } = core

const RUNS = Number(process.env.RUNS ?? 10)
const ONE_MIB = 1024 * 1024
const SINGLE_BYTES = Number(process.env.SINGLE_MIB ?? 512) * ONE_MIB
const MULTI_BYTES_EACH = Number(process.env.MULTI_MIB ?? 64) * ONE_MIB
const THROUGHPUT_RUNS = Number(process.env.THROUGHPUT_RUNS ?? 3)
const IDLE_CONNECTIONS = Number(process.env.IDLE_CONNECTIONS ?? 100)
const peerScript = fileURLToPath(new URL('./connect-peer.mjs', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'dhtnet-bench-connect-'))
const children = new Set()
const log = (m) => process.stderr.write(`[bench] ${m}\n`)
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

function spawnPeer(args, { waitFor = 'ready', timeoutMs = 30_000 } = {}) {
  const t0 = performance.now()
  const child = spawn(process.execPath, ['--expose-gc', peerScript, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const rl = createInterface({ input: child.stdout })
  const result = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop(child)
      reject(new Error(`${args[0]}: no "${waitFor}" within ${timeoutMs} ms: ${stderr}`))
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
      reject(new Error(`${args[0]} exited (${code}) before "${waitFor}": ${stderr}`))
    })
  })
  return { child, result }
}

async function stop(child, graceMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  try {
    process.kill(child.pid, 'SIGTERM')
  } catch {
    return
  }
  const t = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL')
  }, graceMs)
  await exited
  clearTimeout(t)
}

function writeIdentity(id, name) {
  const key = join(dir, `${name}.pem`)
  const crt = join(dir, `${name}.crt`)
  writeFileSync(key, privateKeyToPem(id.privateKey), { mode: 0o600 })
  writeFileSync(crt, chainToPem(id.chain))
  return { key, crt }
}

/** Send `bytes` on each socket (backpressure respected), resolve when every peer acknowledged its count. */
async function pushBytes(sockets, bytes, prefix) {
  const chunk = Buffer.alloc(64 * 1024, 0x5a)
  const t0 = performance.now()
  await Promise.all(
    sockets.map(async (s) => {
      const reply = []
      s.on('data', (d) => reply.push(d))
      const ended = once(s, 'end')
      if (prefix) s.write(prefix)
      let sent = 0
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent)
        sent += n
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await once(s, 'drain')
      }
      s.end()
      await ended
      const got = Number(Buffer.concat(reply).toString())
      if (got !== bytes + (prefix ? prefix.length - 1 : 0)) throw new Error(`peer acknowledged ${got} of ${bytes} bytes`)
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

const results = {}
let bootstrap
let client
try {
  // ---------------------------------------------------------------------------------------------- set-up
  log('generating identities (RSA-4096: CA, server, client)')
  const ca = await generateIdentity({ name: 'bench-ca' })
  const [serverId, clientId] = await Promise.all([
    generateIdentity({ name: 'bench-server', issuer: ca }),
    generateIdentity({ name: 'bench-client', issuer: ca }),
  ])
  const caFiles = writeIdentity(ca, 'ca')
  const serverFiles = writeIdentity(serverId, 'server')
  const clientFiles = writeIdentity(clientId, 'client')
  bootstrap = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false })
  await bootstrap.start()
  const boot = `127.0.0.1:${bootstrap.port}`
  log(`bootstrap node on ${boot}`)
  const server = spawnPeer(['server', serverFiles.key, serverFiles.crt, caFiles.crt, boot])
  const { msg: ready } = await server.result
  const tcpServer = spawnPeer(['tcp-server'])
  const tlsServer = spawnPeer(['tls-server', serverFiles.crt, serverFiles.key])
  const tcpPort = (await tcpServer.result).msg.port
  const tlsPort = (await tlsServer.result).msg.port

  // ---------------------------------------------------------------------------------------------- connect time
  const connect = { ours: [], tcp: [], tls: [], oursInProcess: [], pairs: new Set() }
  for (let i = 0; i < RUNS; i++) {
    const ours = spawnPeer(['client', clientFiles.key, clientFiles.crt, caFiles.crt, boot, ready.id], { waitFor: 'first-byte' })
    const r = await ours.result
    connect.ours.push(r.parentMs)
    connect.oursInProcess.push(r.msg.connectMs)
    connect.pairs.add(r.msg.pair)
    await once(ours.child, 'exit')
    for (const [kind, port] of [['tcp', tcpPort], ['tls', tlsPort]]) {
      const b = spawnPeer([`${kind}-client`, String(port)], { waitFor: 'first-byte' })
      connect[kind].push((await b.result).parentMs)
      await once(b.child, 'exit')
    }
    log(`connect run ${i + 1}/${RUNS}: ours ${r.parentMs.toFixed(0)} ms (connectDevice→first byte ${r.msg.connectMs} ms, DHT ready at ${r.msg.dhtReadyMs} ms), tcp ${connect.tcp.at(-1).toFixed(0)} ms, tls ${connect.tls.at(-1).toFixed(0)} ms`)
  }

  // ---------------------------------------------------------------------------------------------- throughput
  const node = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap: [boot] })
  await node.start()
  await Promise.race([once(node, 'connected'), new Promise((r) => setTimeout(r, 5000))])
  const dht = new SecureDht(node, clientId)
  const trust = new TrustStore()
  trust.addTrustedCa(ca.certificate)
  client = { cm: new ConnectionManager({ identity: clientId, dht, trust, bindAddress: '127.0.0.1' }), dht, node }
  const cm = client.cm
  const tput = { single: [], multi: [], tcpSingle: [], tcpMulti: [], tlsSingle: [], tlsMulti: [] }
  for (let i = 0; i < THROUGHPUT_RUNS; i++) {
    tput.single.push(await pushBytes([await cm.connectDevice(ready.id, 'sink')], SINGLE_BYTES))
    const eight = await Promise.all(Array.from({ length: 8 }, () => cm.connectDevice(ready.id, 'sink')))
    tput.multi.push(await pushBytes(eight, MULTI_BYTES_EACH))
    for (const [kind, port, secure] of [['tcp', tcpPort, false], ['tls', tlsPort, true]]) {
      tput[`${kind}Single`].push(await pushBytes([await tcpConnect(port, secure)], SINGLE_BYTES, 's'))
      const socks = await Promise.all(Array.from({ length: 8 }, () => tcpConnect(port, secure)))
      tput[`${kind}Multi`].push(await pushBytes(socks, MULTI_BYTES_EACH, 's'))
    }
    log(`throughput run ${i + 1}/${THROUGHPUT_RUNS}: ours 1 ch ${tput.single.at(-1).toFixed(0)} MB/s, 8 ch ${tput.multi.at(-1).toFixed(0)} MB/s; tcp ${tput.tcpSingle.at(-1).toFixed(0)}/${tput.tcpMulti.at(-1).toFixed(0)}; tls ${tput.tlsSingle.at(-1).toFixed(0)}/${tput.tlsMulti.at(-1).toFixed(0)}`)
  }

  // ---------------------------------------------------------------------------------------------- idle RSS
  await cm.close()
  client.cm = new ConnectionManager({ identity: clientId, dht, trust, bindAddress: '127.0.0.1' })
  const cm2 = client.cm
  await new Promise((r) => setTimeout(r, 500))
  const statsVia = async () => {
    const s = await cm2.connectDevice(ready.id, 'stats')
    const parts = []
    s.on('data', (d) => parts.push(d))
    await once(s, 'end')
    s.destroy()
    return JSON.parse(Buffer.concat(parts).toString())
  }
  const before = await statsVia()
  global.gc?.()
  const clientBefore = process.memoryUsage().rss
  const idle = []
  for (let i = 0; i < IDLE_CONNECTIONS - 1; i += 10) {
    const batch = Math.min(10, IDLE_CONNECTIONS - 1 - i)
    idle.push(...(await Promise.all(Array.from({ length: batch }, () => cm2.connectDevice(ready.id, 'idle-none', { forceNewSocket: true }).catch((e) => e)))))
  }
  await new Promise((r) => setTimeout(r, 1000))
  const afterStats = await statsVia()
  global.gc?.()
  const clientAfter = process.memoryUsage().rss
  const n = cm2.activeConnections()
  const perConnServer = (afterStats.rss - before.rss) / Math.max(1, afterStats.connections - before.connections)
  const perConnClient = (clientAfter - clientBefore) / Math.max(1, n - 1)
  // baselines: the same with 100 idle TCP / TLS connections
  const idleBase = {}
  for (const [kind, port, secure] of [['tcp', tcpPort, false], ['tls', tlsPort, true]]) {
    const r0 = await rssOf(port, secure)
    const socks = []
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const s = await tcpConnect(port, secure)
      s.write('i')
      socks.push(s)
    }
    await new Promise((r) => setTimeout(r, 300))
    const r1 = await rssOf(port, secure)
    idleBase[kind] = (r1 - r0) / IDLE_CONNECTIONS
    for (const s of socks) s.destroy()
  }

  results.connect = connect
  results.tput = tput
  results.idle = { perConnServer, perConnClient, connections: afterStats.connections, clientConnections: n, declinedOpens: idle.filter((x) => x instanceof Error).length, idleBase }
  await cm2.close()
  await stop(server.child)
  await stop(tcpServer.child)
  await stop(tlsServer.child)
} finally {
  for (const c of [...children]) await stop(c)
  if (client) {
    await client.cm.close()
    client.dht.close()
    await client.node.stop()
  }
  await bootstrap?.stop()
  rmSync(dir, { recursive: true, force: true })
}

// ------------------------------------------------------------------------------------------------ report
const { connect, tput, idle } = results
const f = (x, d = 0) => x.toFixed(d)
const rows = [
  ['metric', 'ours (WebRTC + mux)', 'raw TCP', 'TLS 1.3', 'goal'],
  ['connect, fresh process → first byte, median ms', f(median(connect.ours)), f(median(connect.tcp)), f(median(connect.tls)), '< 150'],
  ['  of which connectDevice → first byte, median ms', f(median(connect.oursInProcess)), '', '', ''],
  ['1 channel / connection, MB/s (median)', f(median(tput.single)), f(median(tput.tcpSingle)), f(median(tput.tlsSingle)), '>= 100'],
  ['8 channels / connections, MB/s aggregate (median)', f(median(tput.multi)), f(median(tput.tcpMulti)), f(median(tput.tlsMulti)), ''],
  [`RSS per idle connection (${idle.connections} conns), KiB, server side`, f(idle.perConnServer / 1024), f(idle.idleBase.tcp / 1024), f(idle.idleBase.tls / 1024), '< 1024'],
  ['RSS per idle connection, KiB, client side', f(idle.perConnClient / 1024), '', '', ''],
]
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '))
console.log(`candidate pairs seen: ${[...connect.pairs].join(', ')}; connect runs (ms): ${connect.ours.map((x) => f(x)).join(' ')}`)
console.log(
  JSON.stringify({
    bench: 'connect',
    connect_first_byte_ms_median: Math.round(median(connect.ours)),
    connect_device_to_first_byte_ms_median: Math.round(median(connect.oursInProcess)),
    tcp_connect_first_byte_ms_median: Math.round(median(connect.tcp)),
    tls_connect_first_byte_ms_median: Math.round(median(connect.tls)),
    one_channel_mb_per_s_median: Math.round(median(tput.single)),
    eight_channels_mb_per_s_median: Math.round(median(tput.multi)),
    tcp_one_connection_mb_per_s_median: Math.round(median(tput.tcpSingle)),
    tcp_eight_connections_mb_per_s_median: Math.round(median(tput.tcpMulti)),
    tls_one_connection_mb_per_s_median: Math.round(median(tput.tlsSingle)),
    tls_eight_connections_mb_per_s_median: Math.round(median(tput.tlsMulti)),
    idle_connection_rss_kib: Math.round(idle.perConnServer / 1024),
    idle_connection_rss_kib_client: Math.round(idle.perConnClient / 1024),
    tcp_idle_connection_rss_kib: Math.round(idle.idleBase.tcp / 1024),
    tls_idle_connection_rss_kib: Math.round(idle.idleBase.tls / 1024),
    idle_connections: idle.connections,
  }),
)
