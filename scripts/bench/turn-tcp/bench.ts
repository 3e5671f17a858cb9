// TURN/TCP benchmark (see ./run). Everything on loopback: coturn on 127.0.0.1, the outside peer on 127.0.0.2.
// Baseline measured in the same run: raw TCP from 127.0.0.2 to a local server (same bytes, same process).
// Ends with ONE line of JSON.
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { TurnTcpClient, type TurnAllocation } from '../../../packages/core/src/transport/turn/index.js'
import { tempDir } from '../../../packages/core/test/helpers/natlab/procs.js'
import { COTURN_PASS, COTURN_USER, coturnUnavailableReason, startLoopbackCoturn, throwawayCertificate } from '../../../packages/core/test/helpers/coturn.js'

const args = process.argv.slice(2)
const opt = (name: string, def: number): number => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) || def : def
}
const MIB = opt('--mib', 64)
const RUNS = opt('--runs', 5)
const PEER = '127.0.0.2'
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN

const why = coturnUnavailableReason()
if (why) {
  console.error(`cannot run: ${why}`)
  process.exit(2)
}

/** `bytes` written on `from` in 1 MiB blocks (respecting backpressure), read on `to`; MB/s. */
async function oneWay(from: Socket, to: Socket, bytes: number): Promise<number> {
  const block = Buffer.alloc(1024 * 1024, 0x5a)
  let got = 0
  const done = new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      got += d.length
      if (got >= bytes) {
        to.off('data', onData)
        resolve()
      }
    }
    to.on('data', onData)
    to.once('close', () => reject(new Error(`closed after ${got} bytes`)))
  })
  const started = performance.now()
  for (let sent = 0; sent < bytes; sent += block.length) {
    if (!from.write(block)) await once(from, 'drain')
  }
  await done
  return bytes / 1e6 / ((performance.now() - started) / 1000)
}

/** Both ways at once, `bytes` each, `a` busy (not reading) for its first 300 ms; true when both arrived within 8 s. */
async function bothWays(a: Socket, b: Socket, bytes: number): Promise<boolean> {
  let ga = 0
  let gb = 0
  a.on('data', (d: Buffer) => (ga += d.length))
  b.on('data', (d: Buffer) => (gb += d.length))
  a.pause()
  setTimeout(() => a.resume(), 300)
  a.write(Buffer.alloc(bytes, 1))
  b.write(Buffer.alloc(bytes, 2))
  const start = Date.now()
  while (Date.now() - start < 8000 && (ga < bytes || gb < bytes)) await new Promise((r) => setTimeout(r, 20))
  return ga >= bytes && gb >= bytes
}

async function listenOn(host: string): Promise<Server> {
  const s = createServer()
  s.listen(0, host)
  await once(s, 'listening')
  return s
}

async function inbound(allocation: TurnAllocation): Promise<{ ours: Socket; theirs: Socket; ms: number }> {
  const arrived = once(allocation, 'connection') as Promise<[Socket, unknown]>
  const t0 = performance.now()
  const theirs = connect({ host: allocation.relayedAddress.address, port: allocation.relayedAddress.port, localAddress: PEER })
  theirs.on('error', () => {})
  const [ours] = await arrived
  ours.on('error', () => {})
  return { ours, theirs, ms: performance.now() - t0 }
}

async function outbound(allocation: TurnAllocation): Promise<{ ours: Socket; theirs: Socket; ms: number }> {
  const server = await listenOn(PEER)
  const accepted = once(server, 'connection') as Promise<[Socket]>
  const t0 = performance.now()
  const ours = await allocation.connect({ address: PEER, port: (server.address() as { port: number }).port })
  const ms = performance.now() - t0
  const [theirs] = await accepted
  theirs.on('error', () => {})
  server.close()
  return { ours, theirs, ms }
}

const dir = tempDir()
const cert = throwawayCertificate(dir)
const coturn = await startLoopbackCoturn({ tls: { cert: cert.cert, key: cert.key } })
const results = {
  allocTcp: [] as number[],
  allocTls: [] as number[],
  inbound: [] as number[],
  outbound: [] as number[],
  relayIn: [] as number[],
  relayOut: [] as number[],
  raw: [] as number[],
}
let stalls = 0
let bidirectionalRuns = 0
try {
  for (let run = 0; run < RUNS; run++) {
    let t0 = performance.now()
    const tcp = await TurnTcpClient.allocate({ server: `127.0.0.1:${coturn.port}`, username: COTURN_USER, password: COTURN_PASS })
    results.allocTcp.push(performance.now() - t0)
    t0 = performance.now()
    const tls = await TurnTcpClient.allocate({ server: `turns:127.0.0.1:${coturn.tlsPort}`, username: COTURN_USER, password: COTURN_PASS, tls: { ca: cert.certPem } })
    results.allocTls.push(performance.now() - t0)
    await tls.close()
    await tcp.permit([PEER])

    const a = await inbound(tcp)
    results.inbound.push(a.ms)
    results.relayIn.push(await oneWay(a.theirs, a.ours, MIB * 1024 * 1024))
    a.ours.destroy()
    a.theirs.destroy()

    const b = await outbound(tcp)
    results.outbound.push(b.ms)
    results.relayOut.push(await oneWay(b.ours, b.theirs, MIB * 1024 * 1024))
    b.ours.destroy()
    b.theirs.destroy()

    // baseline: raw loopback TCP from the same peer address, same bytes
    const server = await listenOn('127.0.0.1')
    const accepted = once(server, 'connection') as Promise<[Socket]>
    const c = connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, localAddress: PEER })
    const [s] = await accepted
    results.raw.push(await oneWay(c, s, MIB * 1024 * 1024))
    c.destroy()
    s.destroy()
    server.close()

    // coturn's flow-control defect: bulk both ways at once (4 MiB each) on both kinds of relayed connection
    for (const open of [inbound, outbound]) {
      const x = await open(tcp)
      bidirectionalRuns++
      if (!(await bothWays(x.ours, x.theirs, 4 * 1024 * 1024))) stalls++
      x.ours.destroy()
      x.theirs.destroy()
    }
    await tcp.close()
  }
} finally {
  await coturn.stop()
  dir.remove()
}

const row = (name: string, value: number, unit: string): string => `${name.padEnd(52)} ${value.toFixed(1).padStart(9)} ${unit}`
console.log(`TURN/TCP on loopback (coturn 4.6.x, ${RUNS} runs, medians; ${MIB} MiB per throughput run)`)
console.log(row('allocate over TCP (resolve, connect, 401, Allocate)', median(results.allocTcp), 'ms'))
console.log(row('allocate over TLS', median(results.allocTls), 'ms'))
console.log(row('inbound relayed connection (peer connect → stream)', median(results.inbound), 'ms'))
console.log(row('outbound relayed connection (CONNECT + bind)', median(results.outbound), 'ms'))
console.log(row('raw loopback TCP (baseline)', median(results.raw), 'MB/s'))
console.log(row('peer → us through the relay', median(results.relayIn), 'MB/s'))
console.log(row('us → peer through the relay', median(results.relayOut), 'MB/s'))
console.log(`bulk both ways at once (4 MiB each, one side busy 300 ms): ${stalls} of ${bidirectionalRuns} runs stalled (coturn defect, see transport/turn/README.md)`)
console.log(
  JSON.stringify({
    allocate_tcp_ms: +median(results.allocTcp).toFixed(1),
    allocate_tls_ms: +median(results.allocTls).toFixed(1),
    inbound_connection_ms: +median(results.inbound).toFixed(1),
    outbound_connection_ms: +median(results.outbound).toFixed(1),
    relay_in_MBps: +median(results.relayIn).toFixed(1),
    relay_out_MBps: +median(results.relayOut).toFixed(1),
    baseline_tcp_MBps: +median(results.raw).toFixed(1),
    bidirectional_stalls: stalls,
    bidirectional_runs: bidirectionalRuns,
  }),
)
