#!/usr/bin/env node
// Helper process of scripts/bench/connect (not a user tool). Modes (argv[2]):
//   server      <key> <crt> <ca> <bootstrap>              ConnectionManager serving "echo", "sink:<bytes>", "stats"
//   client      <key> <crt> <ca> <bootstrap> <peer-id>    fresh process → connect → 1 byte echoed; prints timings
//   idle-client <key> <crt> <ca> <bootstrap> <peer-id> <n>  fresh process: n connections without a channel; prints
//                                                          the RSS of both sides before and after
//   tcp-server / tls-server <certPem> <keyPem>              baselines: echo/sink/rss on 127.0.0.1, prints the port
//   tcp-client / tls-client <port>                          fresh process → connect → 1 byte echoed
// The path comes from the environment: BENCH_TRANSPORT (ConnectionManager `transport`: auto|tcp|webrtc) and
// DHTNET_EMULATE_DHTNET=1 (speak as a C++ DHTNet device, as the tools' runtime reads it).
// Channel protocol (no half-close needed: DHTNet's MultiplexedSocket has none): "sink:<n>" answers the decimal count
// once n bytes arrived; "stats" answers one JSON line. Every line on stdout is one JSON object.
const startedAt = performance.timeOrigin
import { readFileSync } from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const mode = process.argv[2]
const sinceStart = () => Date.now() - startedAt

/** Count what arrives; answer the count once `expected` bytes came (and end our side). */
function serveSink(sock, expected, initial = 0) {
  let n = initial
  let answered = false
  const check = () => {
    if (!answered && n >= expected) {
      answered = true
      sock.end(String(n))
    }
  }
  sock.on('data', (d) => {
    n += d.length
    check()
  })
  check()
}

if (mode === 'tcp-server' || mode === 'tls-server') {
  const handler = (sock) => {
    sock.on('error', () => {})
    let head = Buffer.alloc(0)
    const onHead = (chunk) => {
      head = Buffer.concat([head, chunk])
      const kind = head.subarray(0, 1).toString()
      if (kind === 's') {
        // "s<bytes>\n" then the bytes
        const nl = head.indexOf(10)
        if (nl < 0) return
        sock.off('data', onHead)
        serveSink(sock, Number(head.subarray(1, nl).toString()), head.length - nl - 1)
        return
      }
      sock.off('data', onHead)
      if (kind === 'e') {
        sock.write(head.subarray(1))
        sock.pipe(sock)
      } else if (kind === 'r') {
        global.gc?.()
        sock.end(JSON.stringify({ rss: process.memoryUsage().rss }) + '\n')
      }
      // 'i': idle, keep it open
    }
    sock.on('data', onHead)
  }
  const server =
    mode === 'tcp-server'
      ? net.createServer(handler)
      : tls.createServer({ cert: readFileSync(process.argv[3]), key: readFileSync(process.argv[4]), minVersion: 'TLSv1.3' }, handler)
  server.listen(0, '127.0.0.1', () => out({ event: 'ready', port: server.address().port }))
  process.on('SIGTERM', () => process.exit(0))
} else if (mode === 'tcp-client' || mode === 'tls-client') {
  const port = Number(process.argv[3])
  const sock = mode === 'tcp-client' ? net.connect(port, '127.0.0.1') : tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1.3' })
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
    dist('transport/webrtc/native.js'),
  ])
  const [key, crt, ca, bootstrap, peerId, count] = process.argv.slice(3)
  const identity = makeIdentity(parsePrivateKey(readFileSync(key)), parseCertificateChain(readFileSync(crt)))
  const trust = new TrustStore()
  const caChain = parseCertificateChain(readFileSync(ca))
  trust.addTrustedCa(caChain[caChain.length - 1])
  const tImported = sinceStart()
  // A short-lived client announces itself as a DHT client, so that nodes keep it out of their routing tables and
  // do not wait for it once it is gone (each run of the connect benchmark is a fresh process with a fresh node).
  const node = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap: [bootstrap], isClient: mode !== 'server' })
  await node.start()
  // as the tools' runtime does: the WebRTC library loads while we wait for the bootstrap node
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
  const policy = process.env.BENCH_TRANSPORT ?? 'auto'
  const cm = new ConnectionManager({
    identity,
    dht,
    trust,
    bindAddress: '127.0.0.1',
    transport: policy,
    emulateDhtnet: process.env.DHTNET_EMULATE_DHTNET === '1',
    logger: process.env.BENCH_VERBOSE ? (l, m) => process.stderr.write(`${((performance.timeOrigin + performance.now()) % 100000).toFixed(1)} [${mode}] ${l} ${m}\n`) : undefined,
    onChannelRequest: (_c, name) => ['echo', 'stats'].includes(name) || /^sink:\d+$/.test(name),
    onConnectionReady: (_p, name, s) => {
      if (s.initiator || !('pipe' in s)) return
      s.on('error', () => {})
      if (name === 'echo') s.pipe(s)
      else if (name.startsWith('sink:')) serveSink(s, Number(name.slice(5)))
      else if (name === 'stats') {
        global.gc?.()
        const byTransport = {}
        for (const c of cm.connections()) byTransport[`${c.transport}/${c.mux}`] = (byTransport[`${c.transport}/${c.mux}`] ?? 0) + 1
        s.end(JSON.stringify({ rss: process.memoryUsage().rss, connections: cm.activeConnections(), byTransport }) + '\n')
      }
    },
  })
  const stop = async () => {
    await cm.close()
    dht.close()
    await node.stop()
  }
  process.on('SIGTERM', () => void stop())
  /** One JSON line from a "stats" channel. */
  const stats = async () => {
    const s = await cm.connectDevice(peerId, 'stats')
    let text = ''
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no stats within 10 s')), 10_000)
      s.on('data', (d) => {
        text += d
        if (text.includes('\n')) {
          clearTimeout(t)
          resolve()
        }
      })
      s.on('error', reject)
    })
    s.destroy()
    return JSON.parse(text.slice(0, text.indexOf('\n')))
  }
  try {
    if (mode === 'server') {
      await cm.start()
      out({ event: 'ready', id: identity.id, longId: identity.longId, rss: process.memoryUsage().rss })
    } else if (mode === 'client') {
      // as the tools' runtime does for a client: publish our certificate in the background (a C++ DHTNet peer, or
      // one emulating it, looks it up: its requests carry none), answer nobody, prepare the transports
      await cm.start({ clientOnly: true })
      const t0 = sinceStart()
      const s = await cm.connectDevice(peerId, 'echo')
      const tChannel = sinceStart()
      s.write('x')
      s.once('data', async () => {
        const tFirst = sinceStart()
        const c = cm.connections()[0]
        out({
          event: 'first-byte',
          ms: tFirst,
          importedMs: tImported,
          dhtReadyMs: tDht,
          connectMs: tFirst - t0,
          channelMs: tChannel - t0,
          transport: c?.transport,
          mux: c?.mux,
          path: c?.path,
        })
        s.destroy()
        await stop()
      })
    } else if (mode === 'idle-client') {
      await cm.start({ clientOnly: true })
      const n = Number(count)
      const before = await stats() // opens the first connection
      global.gc?.()
      const clientBefore = process.memoryUsage().rss
      let failed = 0
      const errors = new Map()
      // paced below the responder's limits, whose excess is dropped unread and times out: per signer a burst of 16
      // requests then 4/s; a request without our certificate in it (DHTNet's, emulated) also costs a certificate
      // lookup, 8 then 2/s for all signers together
      const [burst, intervalMs] = process.env.DHTNET_EMULATE_DHTNET === '1' ? [6, 550] : [12, 300]
      const pending = []
      const t0 = performance.now()
      for (let i = 0; i < n - 1; i++) {
        const due = t0 + Math.max(0, i - burst) * intervalMs
        const wait = due - performance.now()
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        pending.push(cm.connect(peerId, { forceNewSocket: true }))
      }
      for (const x of await Promise.allSettled(pending)) {
        if (x.status === 'fulfilled') continue
        failed++
        const why = x.reason.code ?? x.reason.message
        errors.set(why, (errors.get(why) ?? 0) + 1)
      }
      await new Promise((r) => setTimeout(r, 1000))
      global.gc?.()
      const clientAfter = process.memoryUsage().rss
      const after = await stats()
      const byTransport = {}
      for (const c of cm.connections()) byTransport[`${c.transport}/${c.mux}`] = (byTransport[`${c.transport}/${c.mux}`] ?? 0) + 1
      const clientConnections = cm.activeConnections()
      out({
        event: 'idle',
        serverPerConnBytes: (after.rss - before.rss) / Math.max(1, after.connections - before.connections),
        clientPerConnBytes: (clientAfter - clientBefore) / Math.max(1, clientConnections - 1),
        serverConnections: after.connections,
        clientConnections,
        failed,
        errors: Object.fromEntries(errors),
        byTransport,
      })
      await stop()
    } else {
      out({ event: 'error', message: `unknown mode ${mode}` })
      process.exitCode = 2
      await stop()
    }
  } catch (err) {
    out({ event: 'error', message: `${err.code ?? ''} ${err.message}` })
    process.exitCode = 1
    await stop()
  }
}
