// The coturn TCP-relay stall (transport/turn/README.md) and the multiplexer window that avoids it, measured on
// loopback: two ICE-TCP transports whose only path is the responder's TURN/TCP relay on a throwaway coturn, native
// TLS, our Multiplexer on each end (as the connection layer builds it), one channel. Per window setting:
//   - stalls: both sides write `--mib-both` MiB at once while one side (the requester in even runs, the responder in
//     odd ones) does not read for its first 300 ms; a run that has not delivered everything both ways within 10 s
//     is a stall (coturn stops relaying one direction);
//   - throughput: `--mib` MiB one way (median of `--runs`).
// Baseline in the same run: one-way throughput through the same relay with the default window.
// Ends with ONE line of JSON. Options: --runs N (5), --mib N (64), --mib-both N (4), --stall-runs N (10),
// --windows "16384,1024;120,120;16384,1024/120,120" (connection,channel KiB of both sides, or of the requester/the
// responder; default as shown).
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import { IceTcpTransport } from '../../../packages/core/src/transport/ice-tcp/index.js'
import type { Link } from '../../../packages/core/src/transport/transport.js'
import { Multiplexer } from '../../../packages/core/src/mux/native/multiplexer.js'
import { StreamMessageTransport } from '../../../packages/core/src/mux/native/stream-transport.js'
import type { ChannelSocket } from '../../../packages/core/src/mux/native/channel-socket.js'
import { identityFromPem } from '../../../packages/core/src/identity/load.js'
import { identityPem } from '../../../packages/core/test/helpers/dhtnet-captures.js'
import { COTURN_PASS, COTURN_USER, coturnUnavailableReason, startLoopbackCoturn } from '../../../packages/core/test/helpers/coturn.js'

const args = process.argv.slice(2)
const opt = (name: string, def: string): string => {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] ? args[i + 1]! : def
}
const RUNS = Number(opt('--runs', '5'))
const MIB = Number(opt('--mib', '64'))
const MIB_BOTH = Number(opt('--mib-both', '4'))
const STALL_RUNS = Number(opt('--stall-runs', '10'))
type Windows = { a: [number, number]; b: [number, number]; label: string }
const WINDOWS: Windows[] = opt('--windows', '16384,1024;120,120;16384,1024/120,120')
  .split(';')
  .map((spec) => {
    const [a, b = a] = spec.split('/').map((w) => w.split(',').map((x) => Number(x) * 1024) as [number, number])
    return { a: a!, b: b!, label: spec }
  })
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN

const why = coturnUnavailableReason()
if (why) {
  console.error(`cannot run: ${why}`)
  process.exit(2)
}

const load = (n: 'server-id' | 'client-id') => identityFromPem(identityPem(n).key, identityPem(n).chain)
const server = load('server-id')
const client = load('client-id')
const coturn = await startLoopbackCoturn()
const quiet = (): void => {}

function onlyRelay(description: string): string {
  const lines = description.split('\n')
  return [lines[0], lines[1], ...lines.slice(2).filter((l) => l.includes(' typ relay ') || l.endsWith('tcptype active'))].join('\n') + '\n'
}

/** A relay-only link pair, a multiplexer on each side with these windows, one channel. */
async function relayedChannel(w: Windows) {
  const req = new IceTcpTransport({ identity: client, bindAddress: '127.0.0.1', includeLoopback: true, logger: quiet })
  const res = new IceTcpTransport({
    identity: server,
    bindAddress: '127.0.0.1',
    includeLoopback: true,
    logger: quiet,
    relay: { server: `127.0.0.1:${coturn.port}`, username: COTURN_USER, password: COTURN_PASS },
  })
  const signal = AbortSignal.timeout(30_000)
  const rs = await req.createSession({ role: 'requester', connectionId: 1n, peerChain: server.chain, signal })
  const ss = await res.createSession({
    role: 'responder',
    connectionId: 1n,
    peerChain: client.chain,
    remoteDescription: onlyRelay(rs.localDescription),
    peerIsNative: true,
    signal,
  })
  const [a, b] = await Promise.all([rs.connect({ remoteDescription: onlyRelay(ss.localDescription), peerIsNative: true, signal }), ss.connect({ signal })])
  if (a.path.relay !== 'tcp' || b.path.relay !== 'tcp') throw new Error(`not relayed: ${a.path.candidatePair} / ${b.path.candidatePair}`)
  const mux = (link: Link, initiator: boolean, [connectionWindowBytes, channelWindowBytes]: [number, number]) =>
    new Multiplexer({
      reliable: new StreamMessageTransport({ stream: link.stream! }),
      initiator,
      connectionWindowBytes,
      channelWindowBytes,
      sendHighWaterBytes: 1024 * 1024,
      logger: quiet,
    })
  const ma = mux(a, true, w.a)
  const mb = mux(b, false, w.b)
  const incoming = once(mb, 'channel') as Promise<[ChannelSocket]>
  const ca = await ma.openChannel('bench')
  const [cb] = await incoming
  return {
    ca,
    cb,
    async close() {
      ma.close()
      mb.close()
      a.close()
      b.close()
      await req.close()
      await res.close()
    },
  }
}

/** `bytes` from `from` to `to`; MB/s. */
async function oneWay(from: ChannelSocket, to: ChannelSocket, bytes: number): Promise<number> {
  const block = randomBytes(256 * 1024)
  let got = 0
  const done = new Promise<void>((resolve) => {
    const onData = (d: Buffer): void => {
      got += d.length
      if (got >= bytes) {
        to.off('data', onData)
        resolve()
      }
    }
    to.on('data', onData)
  })
  const t0 = performance.now()
  for (let sent = 0; sent < bytes; sent += block.length) if (!from.write(block)) await once(from, 'drain')
  await done
  return bytes / 1e6 / ((performance.now() - t0) / 1000)
}

/** Both ways at once, `a` not reading for 300 ms; true when everything arrived (sha256 equal) within 10 s. */
async function bothWays(a: ChannelSocket, b: ChannelSocket, bytes: number): Promise<boolean> {
  const pa = randomBytes(bytes)
  const pb = randomBytes(bytes)
  const recv = (s: ChannelSocket, expect: Buffer) =>
    new Promise<boolean>((resolve) => {
      const h = createHash('sha256')
      let got = 0
      const timer = setTimeout(() => resolve(false), 10_000)
      s.on('data', (d: Buffer) => {
        h.update(d)
        got += d.length
        if (got >= expect.length) {
          clearTimeout(timer)
          resolve(h.digest('hex') === createHash('sha256').update(expect).digest('hex'))
        }
      })
    })
  a.pause()
  const ra = recv(a, pb)
  a.pause()
  setTimeout(() => a.resume(), 300)
  const rb = recv(b, pa)
  a.write(pa)
  b.write(pb)
  const [x, y] = await Promise.all([ra, rb])
  return x && y
}

const rows: string[][] = [
  ['receive windows conn,chan KiB (requester/responder)', 'requester→responder MB/s', 'responder→requester MB/s', `stalls (${MIB_BOTH} MiB both ways, one side 300 ms late)`],
]
const summary: Record<string, unknown> = { bench: 'relay-window', mib: MIB, runs: RUNS, stall_runs: STALL_RUNS }
try {
  for (const w of WINDOWS) {
    const up: number[] = []
    const down: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const c = await relayedChannel(w)
      try {
        up.push(await oneWay(c.ca, c.cb, MIB * 1024 * 1024))
        down.push(await oneWay(c.cb, c.ca, MIB * 1024 * 1024))
      } finally {
        await c.close()
      }
    }
    let stalls = 0
    for (let i = 0; i < STALL_RUNS; i++) {
      const c = await relayedChannel(w)
      try {
        const ok = i % 2 === 0 ? await bothWays(c.ca, c.cb, MIB_BOTH * 1024 * 1024) : await bothWays(c.cb, c.ca, MIB_BOTH * 1024 * 1024)
        if (!ok) stalls++
      } finally {
        await c.close()
      }
    }
    const key = `w_${w.label.replace(/[^0-9]+/g, '_')}`
    rows.push([w.label, median(up).toFixed(0), median(down).toFixed(0), `${stalls}/${STALL_RUNS}`])
    summary[`${key}_up_MBps`] = Math.round(median(up))
    summary[`${key}_down_MBps`] = Math.round(median(down))
    summary[`${key}_stalls`] = `${stalls}/${STALL_RUNS}`
    process.stderr.write(`${w.label}: up ${up.map((s) => s.toFixed(0)).join(', ')} MB/s, down ${down.map((s) => s.toFixed(0)).join(', ')} MB/s; stalls ${stalls}/${STALL_RUNS}\n`)
  }
} finally {
  await coturn.stop()
}
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n') + '\n')
process.stdout.write(JSON.stringify(summary) + '\n')
