/**
 * A real peer process for the connection tests and the benchmark: a DhtNode on 127.0.0.1 bootstrapped from
 * PEER_BOOTSTRAP, a ConnectionManager with the identity in PEER_KEY/PEER_CERT, trusting the CA in PEER_CA.
 * Prints JSON lines on stdout: {"event":"ready","id":...,"longId":...}, and per channel events.
 *
 * Channels it serves (by name): "echo" (bytes back), "sink" (counts and hashes, reports at EOF, then ends),
 * "source:<bytes>" (sends that many bytes of a fixed pattern, then ends). PEER_CONNECT=<id> makes it connect out
 * instead: it opens PEER_CHANNELS (default 1) channels named "sink" to the id and streams PEER_BYTES to each.
 * Stops cleanly on SIGTERM/SIGINT (exit 0).
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { DhtNode } from '../../src/dht/node.js'
import { SecureDht } from '../../src/dht/secure-dht.js'
import { identityFromPem } from '../../src/identity/load.js'
import { parseCertificateChain } from '../../src/identity/pem.js'
import { TrustStore } from '../../src/identity/truststore.js'
import { ConnectionManager } from '../../src/connection/connection-manager.js'
import type { ChannelSocket } from '../../src/mux/native/channel-socket.js'

const env = process.env
const out = (msg: Record<string, unknown>) => process.stdout.write(JSON.stringify(msg) + '\n')
const identity = identityFromPem(readFileSync(env.PEER_KEY!), readFileSync(env.PEER_CERT!))
const trust = new TrustStore()
const caChain = parseCertificateChain(readFileSync(env.PEER_CA!))
trust.addTrustedCa(caChain[caChain.length - 1]!)
const node = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap: [env.PEER_BOOTSTRAP!] })
await node.start()
await new Promise<void>((resolve) => {
  const t = setTimeout(resolve, 5000)
  node.once('connected', () => {
    clearTimeout(t)
    resolve()
  })
})
const dht = new SecureDht(node, identity)
const cm = new ConnectionManager({
  identity,
  dht,
  trust,
  bindAddress: '127.0.0.1',
  keepaliveIntervalMs: env.PEER_KEEPALIVE_MS ? Number(env.PEER_KEEPALIVE_MS) : undefined,
  deadPeerTimeoutMs: env.PEER_DEAD_MS ? Number(env.PEER_DEAD_MS) : undefined,
  logger: env.DHTNET_TEST_VERBOSE ? (l, m) => process.stderr.write(`${l} ${m}\n`) : undefined,
  onChannelRequest: (_cert, name) => name === 'echo' || name === 'sink' || name.startsWith('source:') || name.startsWith('c'),
  onConnectionReady: (_peer, name, socket) => {
    if (!('pipe' in socket)) return
    serve(name, socket as ChannelSocket)
  },
})

function serve(name: string, socket: ChannelSocket): void {
  if (socket.initiator) return
  socket.on('error', (err) => out({ event: 'channel-error', name, code: (err as { code?: string }).code, message: err.message }))
  if (name === 'echo' || name.startsWith('c')) {
    socket.pipe(socket)
  } else if (name === 'sink') {
    const h = createHash('sha256')
    let n = 0
    socket.on('data', (d: Buffer) => {
      h.update(d)
      n += d.length
    })
    socket.on('end', () => {
      const digest = h.digest('hex')
      out({ event: 'sink', bytes: n, sha256: digest })
      socket.end(`${n} ${digest}`)
    })
  } else if (name.startsWith('source:')) {
    const total = Number(name.slice(7))
    const chunk = Buffer.alloc(64 * 1024)
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff
    let sent = 0
    const pump = () => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent)
        sent += n
        if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return socket.once('drain', pump)
      }
      socket.end()
    }
    socket.resume()
    pump()
  }
}

await cm.start()
out({ event: 'ready', id: identity.id, longId: identity.longId, pid: process.pid, rss: process.memoryUsage().rss })

let stopping = false
async function stop(): Promise<void> {
  if (stopping) return
  stopping = true
  await cm.close()
  dht.close()
  await node.stop()
  out({ event: 'stopped' })
  process.exitCode = 0
}
process.on('SIGTERM', () => void stop())
process.on('SIGINT', () => void stop())
