// Multiplexers over TLS, in two processes on loopback (the receiver is a child process, so each side has its own
// thread, as two peers do). Same run, same machine, one direction at a time:
//   raw     bytes written straight to the TLS socket (the baseline)
//   native  one channel of our Multiplexer over StreamMessageTransport (length-prefixed messages) over TLS
//   dhtnet  one channel of DhtnetMux (DHTNet's MultiplexedSocket framing) over TLS
//   native8 / dhtnet8  the same bytes over 8 channels at once
// The receiver answers one byte once it has every byte; the sender times from its first write to that answer.
// Ends with ONE line of JSON.
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import { DhtnetMux } from '../../../packages/core/src/mux/dhtnet/index.js'
import { Multiplexer } from '../../../packages/core/src/mux/index.js'
import { StreamMessageTransport } from '../../../packages/core/src/mux/native/stream-transport.js'
import { throwawayCredentials } from '../../../packages/core/test/helpers/tls-pair.js'

type Mode = 'raw' | 'native' | 'dhtnet'
const args = process.argv.slice(2)
const arg = (name: string, fallback: number): number => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) || fallback : fallback
}

// ---- receiver (child process) ------------------------------------------------------------------------------------

if (process.env.MUX_STREAM_BENCH_RECEIVER) {
  const { key, cert } = throwawayCredentials()
  const server = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, (socket) => {
    socket.once('data', (first: Buffer) => {
      // first bytes: mode (1 byte) + total bytes (u64) + channels (u8); the rest is the run itself
      const mode = (['raw', 'native', 'dhtnet'] as const)[first[0]!]!
      const total = Number(first.readBigUInt64BE(1))
      const channels = first[9]!
      const rest = first.subarray(10)
      receive(socket, mode, total, channels, rest)
    })
  })
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as { port: number }).port }))
  process.on('disconnect', () => process.exit(0))
} else {
  await main()
}

function receive(socket: tls.TLSSocket, mode: Mode, total: number, channels: number, rest: Buffer): void {
  let got = 0
  const cpuStart = process.cpuUsage()
  const done = (reply: (b: Buffer) => void): void => {
    const cpu = process.cpuUsage(cpuStart)
    process.send!({ cpuMs: (cpu.user + cpu.system) / 1000 })
    reply(Buffer.from('k'))
  }
  if (mode === 'raw') {
    const onData = (c: Buffer): void => {
      got += c.length
      if (got === total) done((b) => socket.write(b))
    }
    onData(rest)
    socket.on('data', onData)
    return
  }
  if (rest.length > 0) socket.unshift(rest)
  let finished = 0
  const perChannel = total / channels
  const onChannel = (ch: Duplex): void => {
    let mine = 0
    ch.on('data', (c: Buffer) => {
      mine += c.length
      if (mine === perChannel && ++finished === channels) done((b) => ch.write(b))
    })
    ch.on('error', () => {})
  }
  if (mode === 'native') {
    const mux = new Multiplexer({ reliable: new StreamMessageTransport(socket), initiator: false })
    mux.on('channel', onChannel)
  } else {
    const mux = new DhtnetMux({ stream: socket, initiator: false, keepaliveIntervalMs: 0 })
    mux.on('channel', onChannel)
  }
}

// ---- sender (this process) ---------------------------------------------------------------------------------------

interface Sample {
  MBps: number
  /** CPU ms per MB, sender and receiver */
  senderCpu: number
  receiverCpu: number
}

async function runOnce(child: ChildProcess, port: number, mode: Mode, total: number, channels: number): Promise<Sample> {
  const receiverCpu = once(child, 'message') as Promise<[{ cpuMs: number }]>
  const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' })
  await once(socket, 'secureConnect')
  const head = Buffer.alloc(10)
  head[0] = ['raw', 'native', 'dhtnet'].indexOf(mode)
  head.writeBigUInt64BE(BigInt(total), 1)
  head[9] = channels
  socket.write(head)
  await new Promise((r) => setTimeout(r, 20)) // the header arrives alone
  const block = Buffer.alloc(1024 * 1024, 0x5a)
  const write = async (sink: Duplex, bytes: number): Promise<void> => {
    for (let sent = 0; sent < bytes; sent += block.length) {
      if (!sink.write(sent + block.length <= bytes ? block : block.subarray(0, bytes - sent))) await once(sink, 'drain')
    }
  }
  const cpuStart = process.cpuUsage()
  let started: number
  let answered: Promise<unknown>
  let close: () => void
  if (mode === 'raw') {
    answered = once(socket, 'data')
    started = performance.now()
    await write(socket, total)
    close = () => socket.destroy()
  } else {
    const mux =
      mode === 'native'
        ? new Multiplexer({ reliable: new StreamMessageTransport(socket), initiator: true })
        : new DhtnetMux({ stream: socket, initiator: true, keepaliveIntervalMs: 0 })
    const chs = await Promise.all(Array.from({ length: channels }, (_, i) => mux.openChannel(`bench-${i}`)))
    for (const ch of chs) ch.on('error', () => {})
    answered = Promise.race(chs.map((ch) => once(ch, 'data')))
    started = performance.now()
    await Promise.all(chs.map((ch) => write(ch, total / channels)))
    close = () => {
      mux.close()
      socket.destroy()
    }
  }
  await answered
  const seconds = (performance.now() - started) / 1000
  const cpu = process.cpuUsage(cpuStart)
  close()
  const MB = total / 1e6
  const [{ cpuMs }] = await receiverCpu
  return { MBps: MB / seconds, senderCpu: (cpu.user + cpu.system) / 1000 / MB, receiverCpu: cpuMs / MB }
}

async function main(): Promise<void> {
  const mib = arg('--mib', 512)
  const runs = arg('--runs', 3)
  const total = mib * 1024 * 1024
  const child: ChildProcess = fork(new URL(import.meta.url).pathname, [], {
    env: { ...process.env, MUX_STREAM_BENCH_RECEIVER: '1' },
    execArgv: ['--import', 'tsx'],
  })
  const [{ port }] = (await once(child, 'message')) as [{ port: number }]
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
  const cases: Array<[string, Mode, number]> = [
    ['raw TLS', 'raw', 1],
    ['native mux, 1 channel', 'native', 1],
    ['DHTNet mux, 1 channel', 'dhtnet', 1],
    ['native mux, 8 channels', 'native', 8],
    ['DHTNet mux, 8 channels', 'dhtnet', 8],
  ]
  const results = new Map<string, number>()
  console.log(`multiplexers over loopback TLS 1.3, two processes, ${mib} MiB per run, median of ${runs} (interleaved)`)
  const samples = new Map<string, Sample[]>(cases.map(([name]) => [name, []]))
  for (let r = 0; r < runs; r++) {
    for (const [name, mode, channels] of cases) samples.get(name)!.push(await runOnce(child, port, mode, total, channels))
  }
  for (const [name] of cases) results.set(name, median(samples.get(name)!.map((x) => x.MBps)))
  const raw = results.get('raw TLS')!
  console.log('path                     | MB/s  | vs raw TLS | CPU ms/MB sender / receiver | runs MB/s')
  for (const [name] of cases) {
    const v = results.get(name)!
    const rel = name === 'raw TLS' ? 'baseline' : `${(((v - raw) / raw) * 100).toFixed(0)}%`
    const all = samples.get(name)!
    const cpu = `${median(all.map((x) => x.senderCpu)).toFixed(2)} / ${median(all.map((x) => x.receiverCpu)).toFixed(2)}`
    console.log(`${name.padEnd(24)} | ${v.toFixed(0).padStart(5)} | ${rel.padStart(10)} | ${cpu.padStart(27)} | ${all.map((x) => x.MBps.toFixed(0)).join(' ')}`)
  }
  child.disconnect()
  child.kill()
  console.log(
    JSON.stringify({
      raw_tls_MBps: Math.round(raw),
      native_mux_stream_1ch_MBps: Math.round(results.get('native mux, 1 channel')!),
      dhtnet_mux_1ch_MBps: Math.round(results.get('DHTNet mux, 1 channel')!),
      native_mux_stream_8ch_MBps: Math.round(results.get('native mux, 8 channels')!),
      dhtnet_mux_8ch_MBps: Math.round(results.get('DHTNet mux, 8 channels')!),
      mib_per_run: mib,
    }),
  )
}
