/**
 * A NAT lab device: the shared tool runtime (identity files, DhtNode bound to every interface, SecureDht,
 * TrustStore with our CA, ConnectionManager with the lab's STUN/TURN servers) inside a host namespace.
 * Configuration: JSON in $NATLAB_DEVICE (see DeviceConfig in procs.ts). Output: JSON lines on stdout
 * ({"event":"ready"|"connection"|"result"|"stopped", ...}); logs on stderr.
 *
 *  - serve:   accepts the channel "echo" and sends every byte back (half-close: it ends after our EOF).
 *  - connect: connectDevice(peer, "echo"), streams `bytes` pseudo-random bytes, reads the echo to EOF, compares
 *             SHA-256 and length, prints {"event":"result", ok, connectMs, pair, ...} and exits (0 = ok, 1 = not).
 *             With `sink`: one way instead, on the channel "sink": the server counts and hashes to EOF and answers
 *             {bytes, sha256}; mbPerS is then the one-way rate (benchmarks). Then the other way on "source": we ask
 *             for `bytes`, the server sends them and their SHA-256; mbPerSReverse.
 * Stops cleanly on SIGTERM/SIGINT. NATLAB_TRACE=1 logs the duration of each DHT step of a connect on stderr.
 */
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createWriteStream } from 'node:fs'
import { isDhtnetError } from '../../../src/errors.js'
import { startToolRuntime, type ToolRuntime } from '../../../src/runtime/start.js'
import type { ChannelSocket } from '../../../src/mux/native/channel-socket.js'
import type { DeviceConfig } from './procs.js'

/** What startDevice (procs.ts) sends, plus the bootstrap address it adds. */
type Config = DeviceConfig & { bootstrap: string }

const config = JSON.parse(process.env.NATLAB_DEVICE ?? '{}') as Config
const out = (msg: Record<string, unknown>) => process.stdout.write(JSON.stringify(msg) + '\n')
const verbose = !!process.env.DHTNET_TEST_VERBOSE
const t0 = performance.now()
const since = () => Math.round(performance.now() - t0)
// every log line, all levels, when the test wants to read them all (e.g. to look for a secret)
const logFile = config.logFile ? createWriteStream(config.logFile, { flags: 'a' }) : undefined

let runtime: ToolRuntime | undefined
let stopping: Promise<void> | undefined
function stop(code: number): Promise<void> {
  stopping ??= (async () => {
    // Bounded: a stuck close must not keep the process alive (the harness would SIGKILL it anyway).
    const guard = setTimeout(() => process.exit(code), 5000)
    guard.unref()
    await runtime?.stop().catch(() => {})
    out({ event: 'stopped', atMs: since() })
    if (logFile) await new Promise<void>((resolve) => logFile.end(() => resolve()))
    process.exitCode = code
  })()
  return stopping
}
process.on('SIGTERM', () => void stop(0))
process.on('SIGINT', () => void stop(0))

function serveSink(socket: ChannelSocket): void {
  const hash = createHash('sha256')
  let bytes = 0
  socket.on('error', (err) => out({ event: 'channel-error', code: (err as { code?: string }).code, message: err.message }))
  socket.on('data', (d: Buffer) => {
    hash.update(d)
    bytes += d.length
  })
  socket.on('end', () => socket.end(JSON.stringify({ bytes, sha256: hash.digest('hex') }) + '\n'))
}

/** "source": read the 8-byte count asked for, send that many bytes, then their SHA-256 (64 hex), then EOF. */
function serveSource(socket: ChannelSocket): void {
  socket.on('error', (err) => out({ event: 'channel-error', code: (err as { code?: string }).code, message: err.message }))
  let asked = Buffer.alloc(0)
  const onData = (d: Buffer): void => {
    asked = Buffer.concat([asked, d])
    if (asked.length < 8) return
    socket.off('data', onData)
    void (async () => {
      const total = Number(asked.readBigUInt64BE(0))
      const hash = createHash('sha256')
      const block = randomBytes(256 * 1024)
      for (let sent = 0, n = 0; sent < total; n++) {
        const chunk = Buffer.from(block.subarray(0, Math.min(block.length, total - sent)))
        chunk.writeUInt32LE(n, 0)
        hash.update(chunk)
        sent += chunk.length
        if (!socket.write(chunk)) await once(socket, 'drain')
      }
      socket.end(hash.digest('hex'))
    })().catch(() => socket.destroy())
  }
  socket.on('data', onData)
}

/** The other way: ask "source" for `total` bytes; their rate and whether their SHA-256 matched. */
async function receiveFromSource(socket: ChannelSocket, total: number): Promise<{ ok: boolean; ms: number }> {
  const hash = createHash('sha256')
  let got = 0
  let trailer = ''
  const ended = new Promise<void>((resolve, reject) => {
    socket.once('end', () => resolve())
    socket.once('error', reject)
    socket.once('close', () => resolve())
  })
  socket.on('data', (d: Buffer) => {
    const body = d.subarray(0, Math.max(0, total - got))
    hash.update(body)
    got += body.length
    if (body.length < d.length && trailer.length < 64) trailer += d.subarray(body.length).toString('utf8')
  })
  const count = Buffer.alloc(8)
  count.writeBigUInt64BE(BigInt(total))
  const start = performance.now()
  socket.write(count)
  await ended
  return { ok: got === total && trailer.slice(0, 64) === hash.digest('hex'), ms: performance.now() - start }
}

function serveEcho(socket: ChannelSocket): void {
  socket.on('error', (err) => out({ event: 'channel-error', code: (err as { code?: string }).code, message: err.message }))
  socket.pipe(socket)
}

/** One way: `total` bytes out, EOF, then the sink's {bytes, sha256} answer. */
async function transferOneWay(socket: ChannelSocket, total: number): Promise<{ sent: string; received: string; receivedBytes: number; ms: number }> {
  const sentHash = createHash('sha256')
  let answer = ''
  socket.on('data', (d: Buffer) => {
    if (answer.length < 4096) answer += d.toString('utf8')
  })
  const ended = new Promise<void>((resolve, reject) => {
    socket.once('end', () => resolve())
    socket.once('error', reject)
    socket.once('close', () => resolve())
  })
  const start = performance.now()
  const block = randomBytes(256 * 1024)
  let sent = 0
  let n = 0
  while (sent < total) {
    const size = Math.min(block.length, total - sent)
    const chunk = Buffer.from(block.subarray(0, size))
    chunk.writeUInt32LE(n++, 0)
    sentHash.update(chunk)
    sent += size
    if (!socket.write(chunk)) await once(socket, 'drain')
  }
  socket.end()
  await ended
  const ms = performance.now() - start
  let parsed: { bytes?: number; sha256?: string } = {}
  try {
    parsed = JSON.parse(answer) as typeof parsed
  } catch {
    // no answer: reported as a mismatch
  }
  return { sent: sentHash.digest('hex'), received: parsed.sha256 ?? '', receivedBytes: parsed.bytes ?? 0, ms }
}

async function transfer(socket: ChannelSocket, total: number): Promise<{ sent: string; received: string; receivedBytes: number; ms: number }> {
  const sentHash = createHash('sha256')
  const recvHash = createHash('sha256')
  let receivedBytes = 0
  socket.on('data', (d: Buffer) => {
    recvHash.update(d)
    receivedBytes += d.length
  })
  const ended = new Promise<void>((resolve, reject) => {
    socket.once('end', () => resolve())
    socket.once('error', reject)
    socket.once('close', () => resolve())
  })
  const start = performance.now()
  const block = randomBytes(256 * 1024)
  let sent = 0
  let n = 0
  while (sent < total) {
    const size = Math.min(block.length, total - sent)
    const chunk = Buffer.from(block.subarray(0, size))
    chunk.writeUInt32LE(n++, 0) // every block differs: a lost, doubled or misplaced block changes the hash
    sentHash.update(chunk)
    sent += size
    if (!socket.write(chunk)) await once(socket, 'drain')
    if (config.paceMs) await new Promise((r) => setTimeout(r, config.paceMs))
  }
  socket.end()
  await ended
  return { sent: sentHash.digest('hex'), received: recvHash.digest('hex'), receivedBytes, ms: performance.now() - start }
}

/** NATLAB_TRACE=1: time the DHT steps of a connect (stderr), to see where connect time goes. */
function traceDht(rt: ToolRuntime): void {
  const dht = rt.dht as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>
  for (const name of ['putEncrypted', 'findCertificate']) {
    const orig = dht[name]!.bind(rt.dht)
    dht[name] = async (...args: unknown[]) => {
      const s = performance.now()
      process.stderr.write(`${since()} trace ${name} start\n`)
      try {
        return await orig(...args)
      } finally {
        process.stderr.write(`${since()} trace ${name} done in ${Math.round(performance.now() - s)} ms\n`)
      }
    }
  }
}

async function main(): Promise<void> {
  runtime = await startToolRuntime({
    identityFiles: { certificate: config.cert, privateKey: config.key },
    bootstrap: [config.bootstrap],
    discovery: false,
    iceServers: config.iceServers,
    ...(config.turn ? { turn: config.turn } : {}),
    ...(config.transport ? { transport: config.transport } : {}),
    anonymous: false, // the peer must be signed by our CA (both lab devices are)
    requireBootstrap: true,
    bootstrapTimeoutMs: 10_000,
    publishTimeoutMs: 10_000,
    ...(config.upnp ? { upnp: config.upnp } : {}),
    log: (level, message) => {
      logFile?.write(`${since()} ${level} ${message}\n`)
      if (verbose || level === 'warn' || level === 'error' || message.startsWith('UPnP:') || message.startsWith('ice-tcp: connected') || message.startsWith('ice-tcp: TCP')) {
        process.stderr.write(`${since()} ${level} ${message}\n`)
      }
    },
    onChannelRequest: (_cert, name) => (name === 'echo' || name === 'sink' || name === 'source' ? true : { accept: false, reason: `no service "${name}"` }),
    onConnectionReady: (_peer, name, socket) => {
      if (config.mode !== 'serve' || !('pipe' in socket) || (socket as ChannelSocket).initiator) return
      if (name === 'echo') serveEcho(socket as ChannelSocket)
      else if (name === 'sink') serveSink(socket as ChannelSocket)
      else if (name === 'source') serveSource(socket as ChannelSocket)
    },
  })
  const cm = runtime.connections
  if (process.env.NATLAB_TRACE) traceDht(runtime)
  cm.on('connection', (info: { candidatePair?: string; localAddress?: string; remoteAddress?: string; initiator: boolean; path: string; relay?: string; transport: string }) =>
    out({
      event: 'connection',
      pair: info.candidatePair,
      local: info.localAddress,
      remote: info.remoteAddress,
      initiator: info.initiator,
      path: info.path,
      relay: info.relay,
      transport: info.transport,
      atMs: since(),
    }),
  )
  out({ event: 'ready', id: runtime.identity.id, longId: runtime.identity.longId, startupMs: since() })
  if (config.mode === 'serve') return

  const timeoutMs = config.timeoutMs ?? 30_000
  const total = config.bytes ?? 8 * 1024 * 1024
  const c0 = performance.now()
  let socket: ChannelSocket
  try {
    socket = (await cm.connectDevice(config.peer!, config.sink ? 'sink' : 'echo', { timeoutMs })) as ChannelSocket
  } catch (err) {
    out({
      event: 'result',
      ok: false,
      code: isDhtnetError(err) ? err.code : 'UNEXPECTED',
      message: (err as Error).message,
      hint: (err as { hint?: string }).hint,
      elapsedMs: Math.round(performance.now() - c0),
      timeoutMs,
    })
    return stop(1)
  }
  const connectMs = performance.now() - c0
  const info = cm.connections()[0]
  try {
    const r = config.sink ? await transferOneWay(socket, total) : await transfer(socket, total)
    let reverse: { ok: boolean; ms: number } | undefined
    if (config.sink) reverse = await receiveFromSource((await cm.connectDevice(config.peer!, 'source', { timeoutMs })) as ChannelSocket, total)
    const ok = r.receivedBytes === total && r.received === r.sent && (reverse?.ok ?? true)
    out({
      event: 'result',
      ok,
      code: ok ? undefined : 'MISMATCH',
      connectMs: Math.round(connectMs),
      pair: info?.candidatePair,
      local: info?.localAddress,
      remote: info?.remoteAddress,
      path: info?.path,
      relay: info?.relay,
      transport: info?.transport,
      bytes: total,
      receivedBytes: r.receivedBytes,
      sha256Sent: r.sent,
      sha256Received: r.received,
      transferMs: Math.round(r.ms),
      mbPerS: Math.round((total / 1e6 / (r.ms / 1000)) * 10) / 10,
      ...(reverse ? { mbPerSReverse: Math.round((total / 1e6 / (reverse.ms / 1000)) * 10) / 10 } : {}),
    })
    return stop(ok ? 0 : 1)
  } catch (err) {
    out({
      event: 'result',
      ok: false,
      code: isDhtnetError(err) ? err.code : 'UNEXPECTED',
      message: (err as Error).message,
      connectMs: Math.round(connectMs),
      pair: info?.candidatePair,
    })
    return stop(1)
  }
}

main().catch((err: unknown) => {
  out({ event: 'result', ok: false, phase: 'startup', code: isDhtnetError(err) ? err.code : 'UNEXPECTED', message: (err as Error).message })
  void stop(1)
})
