// ICE-TCP benchmark: TLS over the ICE-TCP Link (framed / native) vs raw TCP and raw Node TLS, sender and receiver in
// two processes on loopback, same run. Ends with ONE line of JSON.
import { fork, type ChildProcess } from 'node:child_process'
import { connect } from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { IceTcpTransport } from '../../../packages/core/src/transport/ice-tcp/index.js'
import { tlsContext } from '../../../packages/core/src/transport/ice-tcp/tls-link.js'
import { benchIdentity, type ChildMessage, type Mode, type ParentMessage } from './common.js'

const args = process.argv.slice(2)
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) || dflt : dflt
}
const MIB = opt('--mib', 512)
const RUNS = opt('--runs', 3)
const TOTAL = MIB * 1024 * 1024
const server = benchIdentity('server-id')
const client = benchIdentity('client-id')
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN

function nextMessage(child: ChildProcess): Promise<ChildMessage> {
  return new Promise((resolve, reject) => {
    child.once('message', (m: ChildMessage) => ('error' in m ? reject(new Error(m.error)) : resolve(m)))
  })
}

async function blast(stream: Duplex): Promise<void> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a)
  for (let sent = 0; sent < TOTAL; sent += chunk.length) if (!stream.write(chunk)) await once(stream, 'drain')
}

async function run(mode: Mode): Promise<{ MBps: number; connectMs?: number }> {
  const child = fork(fileURLToPath(new URL('./peer.ts', import.meta.url)), { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
  try {
    const send = (m: ParentMessage): void => void child.send(m)
    send({ cmd: 'start', mode, total: TOTAL })
    const ready = await nextMessage(child)
    let stream: Duplex
    let connectMs: number | undefined
    let cleanup = async (): Promise<void> => {}
    if ('port' in ready) {
      const socket = connect({ host: '127.0.0.1', port: ready.port, noDelay: true })
      await once(socket, 'connect')
      if (mode === 'tls') {
        const t = tls.connect({ socket, secureContext: tlsContext(server), rejectUnauthorized: false, checkServerIdentity: () => undefined })
        await once(t, 'secureConnect')
        stream = t
      } else stream = socket
    } else if ('description' in ready) {
      const transport = new IceTcpTransport({ identity: server, bindAddress: '127.0.0.1', includeLoopback: true })
      const signal = AbortSignal.timeout(60_000)
      const started = performance.now()
      const session = await transport.createSession({
        role: 'responder',
        connectionId: 1n,
        peerChain: client.chain,
        remoteDescription: ready.description,
        peerIsNative: mode === 'ice-native',
        signal,
      })
      send({ cmd: 'answer', description: session.localDescription })
      const link = await session.connect({ signal })
      connectMs = performance.now() - started
      stream = link.stream!
      cleanup = async () => {
        link.close()
        await transport.close()
      }
    } else throw new Error('unexpected message')
    const done = nextMessage(child)
    await blast(stream)
    const result = await done
    if (!('done' in result)) throw new Error('unexpected message')
    stream.destroy()
    await cleanup()
    return { MBps: result.bytes / 1e6 / (result.ms / 1000), connectMs }
  } finally {
    child.send({ cmd: 'quit' } satisfies ParentMessage)
    await once(child, 'exit')
  }
}

const modes: Mode[] = ['tcp', 'tls', 'ice-framed', 'ice-native']
const results = new Map<Mode, { MBps: number[]; connectMs: number[] }>()
for (const m of modes) results.set(m, { MBps: [], connectMs: [] })
for (let r = 0; r < RUNS; r++) {
  for (const m of modes) {
    const res = await run(m)
    results.get(m)!.MBps.push(res.MBps)
    if (res.connectMs !== undefined) results.get(m)!.connectMs.push(res.connectMs)
  }
}
const label: Record<Mode, string> = {
  tcp: 'raw TCP (baseline)',
  tls: 'raw Node TLS 1.3, same parameters (baseline)',
  'ice-framed': 'ICE-TCP link, framed TLS (C++ peer mode)',
  'ice-native': 'ICE-TCP link, native TLS (both peers ours)',
}
console.log(`loopback, ${MIB} MiB per run, ${RUNS} runs (medians); sender and receiver in two processes`)
console.log('| path | MB/s | connect (ICE + TLS) |')
console.log('|---|---|---|')
for (const m of modes) {
  const r = results.get(m)!
  console.log(`| ${label[m]} | ${median(r.MBps).toFixed(0)} | ${r.connectMs.length ? `${median(r.connectMs).toFixed(1)} ms` : '—'} |`)
}
const get = (m: Mode) => Math.round(median(results.get(m)!.MBps))
console.log(
  JSON.stringify({
    ice_native_MBps: get('ice-native'),
    ice_framed_MBps: get('ice-framed'),
    baseline_tls_MBps: get('tls'),
    baseline_tcp_MBps: get('tcp'),
    ice_native_connect_ms: Math.round(median(results.get('ice-native')!.connectMs) * 10) / 10,
    ice_framed_connect_ms: Math.round(median(results.get('ice-framed')!.connectMs) * 10) / 10,
    mib: MIB,
    runs: RUNS,
  }),
)
