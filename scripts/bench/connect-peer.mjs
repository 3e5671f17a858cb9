#!/usr/bin/env node
// Helper process of scripts/bench/connect (not a user tool). Modes (argv[2]):
//   server  <key> <crt> <ca> <bootstrap>              ConnectionManager serving "echo", "sink", "stats"
//   client  <key> <crt> <ca> <bootstrap> <peer-id>    fresh process → connect → 1 byte echoed; prints timings
//   tcp-server / tls-server <certPem> <keyPem>        baselines: echo/sink on 127.0.0.1, prints the port
//   tcp-client / tls-client <port>                    fresh process → connect → 1 byte echoed
// Every line on stdout is one JSON object.
const startedAt = performance.timeOrigin
import { readFileSync } from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const mode = process.argv[2]
const sinceStart = () => Date.now() - startedAt

function serveSink(sock, onDone) {
  let n = 0
  sock.on('data', (d) => (n += d.length))
  sock.on('end', () => {
    sock.end(String(n))
    onDone?.(n)
  })
}

if (mode === 'tcp-server' || mode === 'tls-server') {
  const handler = (sock) => {
    sock.once('data', (first) => {
      const kind = first.subarray(0, 1).toString()
      const rest = first.subarray(1)
      if (kind === 'e') {
        sock.write(rest)
        sock.pipe(sock)
      } else if (kind === 's') {
        let n = rest.length
        sock.on('data', (d) => (n += d.length))
        sock.on('end', () => sock.end(String(n)))
      } else if (kind === 'r') {
        global.gc?.()
        sock.end(JSON.stringify({ rss: process.memoryUsage().rss }))
      }
      // 'i': idle, keep it open
    })
    sock.on('error', () => {})
  }
  const server =
    mode === 'tcp-server'
      ? net.createServer(handler)
      : tls.createServer({ cert: readFileSync(process.argv[3]), key: readFileSync(process.argv[4]), minVersion: 'TLSv1.3' }, handler)
  server.listen(0, '127.0.0.1', () => out({ event: 'ready', port: server.address().port }))
  process.on('SIGTERM', () => process.exit(0))
} else if (mode === 'tcp-client' || mode === 'tls-client') {
  const port = Number(process.argv[3])
  const sock =
    mode === 'tcp-client'
      ? net.connect(port, '127.0.0.1')
      : tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1.3' })
  sock.once(mode === 'tcp-client' ? 'connect' : 'secureConnect', () => sock.write('ex'))
  sock.once('data', () => {
    out({ event: 'first-byte', ms: sinceStart() })
    sock.destroy()
  })
} else {
  // Only the modules a connecting tool needs (the package index also loads node-forge, ~50 ms of start-up).
  const dist = (p) => import(new URL(`../../packages/core/dist/${p}`, import.meta.url).href)
  const [{ DhtNode }, { SecureDht }, { ConnectionManager }, { TrustStore }, { makeIdentity }, { parseCertificateChain, parsePrivateKey }, native] = await Promise.all([
    dist('dht/node.js'),
    dist('dht/secure-dht.js'),
    dist('connection/connection-manager.js'),
    dist('identity/truststore.js'),
    dist('identity/identity.js'),
    dist('identity/pem.js'),
    dist('transport/native.js'),
  ])
  const [key, crt, ca, bootstrap, peerId] = process.argv.slice(3)
  const identity = makeIdentity(parsePrivateKey(readFileSync(key)), parseCertificateChain(readFileSync(crt)))
  const trust = new TrustStore()
  const caChain = parseCertificateChain(readFileSync(ca))
  trust.addTrustedCa(caChain[caChain.length - 1])
  const tImported = sinceStart()
  // A short-lived client announces itself as a DHT client, so that nodes keep it out of their routing tables and
  // do not wait for it once it is gone (each run of the connect benchmark is a fresh process with a fresh node).
  const node = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap: [bootstrap], isClient: mode === 'client' })
  await node.start()
  // as the tools' runtime does: the WebRTC library loads while we wait for the bootstrap node (older builds load it
  // with the connection manager module)
  native.preloadNative?.()
  await new Promise((resolve) => {
    const t = setTimeout(resolve, 5000)
    node.once('connected', () => {
      clearTimeout(t)
      resolve()
    })
  })
  const tDht = sinceStart()
  const dht = new SecureDht(node, identity)
  const sinks = { total: 0 }
  const cm = new ConnectionManager({
    identity,
    dht,
    trust,
    bindAddress: '127.0.0.1',
    logger: process.env.BENCH_VERBOSE ? (l, m) => process.stderr.write(`${((performance.timeOrigin + performance.now()) % 100000).toFixed(1)} [${mode}] ${l} ${m}\n`) : undefined,
    onChannelRequest: (_c, name) => ['echo', 'sink', 'stats', 'idle'].includes(name),
    onConnectionReady: (_p, name, s) => {
      if (s.initiator || !('pipe' in s)) return
      s.on('error', () => {})
      if (name === 'echo') s.pipe(s)
      else if (name === 'sink') serveSink(s, (n) => (sinks.total += n))
      else if (name === 'stats') {
        global.gc?.()
        s.end(JSON.stringify({ rss: process.memoryUsage().rss, connections: cm.activeConnections() }))
      }
    },
  })
  const stop = async () => {
    await cm.close()
    dht.close()
    await node.stop()
  }
  process.on('SIGTERM', () => void stop())
  if (mode === 'server') {
    await cm.start()
    out({ event: 'ready', id: identity.id, longId: identity.longId, rss: process.memoryUsage().rss })
  } else if (mode === 'client') {
    const t0 = sinceStart()
    const s = await cm.connectDevice(peerId, 'echo')
    const tChannel = sinceStart()
    s.write('x')
    s.once('data', async () => {
      const tFirst = sinceStart()
      const c = cm.connections()[0]
      out({ event: 'first-byte', ms: tFirst, importedMs: tImported, dhtReadyMs: tDht, connectMs: tFirst - t0, channelMs: tChannel - t0, pair: c?.candidatePair })
      s.destroy()
      await stop()
    })
  } else {
    out({ event: 'error', message: `unknown mode ${mode}` })
    process.exitCode = 2
  }
}
