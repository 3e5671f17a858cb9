// The raw TCP baselines of scripts/bench/nat, run inside a lab namespace (config JSON in $NATLAB_RAW); JSON lines on
// stdout. No TLS, no multiplexer, no ICE: what the path itself gives.
//   {mode:'sink', port}                            TCP server: answers the sender's greeting ('G' + the byte count,
//                                                  u64) with 'R', counts and hashes that many bytes, answers
//                                                  {bytes, sha256}
//   {mode:'relay-sink', server, user, pass, peer}  the same behind a TURN/TCP relay (RFC 6062) allocated on `server`,
//                                                  `peer` permitted; prints {"event":"relayed", address, port}
//   {mode:'send', host, port, bytes}               connects, greets, waits for 'R', sends `bytes`, reads the
//                                                  answer; prints {"event":"result", ok, connectMs, mbPerS}
// No half-close: coturn ends a relayed TCP connection on the first FIN and drops what it still held (measured here:
// 951,022 of 1,048,576 bytes arrived), so the count travels in the greeting. The time to 'R' counts as connect time.
// Stops on SIGTERM.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'
import { TurnTcpClient, type TurnAllocation } from '../../../packages/core/src/transport/turn/index.js'

const config = JSON.parse(process.env.NATLAB_RAW ?? '{}') as {
  mode: 'sink' | 'relay-sink' | 'send'
  port?: number
  host?: string
  bytes?: number
  server?: string
  user?: string
  pass?: string
  peer?: string
}
const out = (m: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(m) + '\n')
}

function sink(socket: Socket): void {
  const hash = createHash('sha256')
  let bytes = 0
  socket.on('error', () => {})
  let greeting = Buffer.alloc(0)
  let expected = -1
  socket.on('data', (d: Buffer) => {
    if (expected < 0) {
      greeting = Buffer.concat([greeting, d])
      if (greeting.length < 9) return
      expected = Number(greeting.readBigUInt64BE(1))
      d = greeting.subarray(9)
      socket.write('R')
    }
    const take = d.subarray(0, Math.max(0, expected - bytes))
    hash.update(take)
    bytes += take.length
    if (bytes >= expected && expected >= 0) {
      expected = Number.POSITIVE_INFINITY
      socket.end(JSON.stringify({ bytes, sha256: hash.digest('hex') }) + '\n')
      out({ event: 'sink', bytes })
    }
  })
}

let allocation: TurnAllocation | undefined
process.on('SIGTERM', () => {
  void (allocation?.close() ?? Promise.resolve()).then(() => process.exit(0))
})

if (config.mode === 'sink') {
  const server = createServer(sink)
  server.listen(config.port ?? 0, '0.0.0.0')
  await once(server, 'listening')
  out({ event: 'listening', port: (server.address() as { port: number }).port })
} else if (config.mode === 'relay-sink') {
  allocation = await TurnTcpClient.allocate({ server: config.server!, username: config.user!, password: config.pass! })
  allocation.on('connection', (stream, peer) => {
    out({ event: 'connection', peer })
    sink(stream)
    stream.resume()
  })
  await allocation.permit([config.peer!])
  out({ event: 'relayed', address: allocation.relayedAddress.address, port: allocation.relayedAddress.port })
} else {
  const total = config.bytes ?? 16 * 1024 * 1024
  const t0 = performance.now()
  const socket = connect({ host: config.host!, port: config.port!, noDelay: true })
  socket.on('error', (err) => {
    out({ event: 'result', ok: false, message: err.message })
    process.exit(1)
  })
  await once(socket, 'connect')
  let answer = ''
  const ready = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      answer += d.toString('utf8')
      if (answer.startsWith('R')) resolve()
    })
  })
  const answered = new Promise<void>((resolve) => socket.on('data', () => answer.includes('\n') && resolve()))
  const greeting = Buffer.alloc(9)
  greeting.write('G')
  greeting.writeBigUInt64BE(BigInt(total), 1)
  socket.write(greeting)
  await ready
  const connectMs = performance.now() - t0
  const sent = createHash('sha256')
  const block = randomBytes(256 * 1024)
  const start = performance.now()
  for (let n = 0, done = 0; done < total; n++) {
    // (the sender's own bytes: 256 KiB blocks, each different)
    const chunk = Buffer.from(block.subarray(0, Math.min(block.length, total - done)))
    chunk.writeUInt32LE(n, 0)
    sent.update(chunk)
    done += chunk.length
    if (!socket.write(chunk)) await once(socket, 'drain')
  }
  await answered
  const ms = performance.now() - start
  socket.destroy()
  let reply: { bytes?: number; sha256?: string } = {}
  try {
    reply = JSON.parse(answer.slice(1)) as typeof reply
  } catch {
    // reported below
  }
  const ok = reply.bytes === total && reply.sha256 === sent.digest('hex')
  out({ event: 'result', ok, connectMs: Math.round(connectMs * 10) / 10, mbPerS: Math.round((total / 1e6 / (ms / 1000)) * 10) / 10 })
  process.exit(ok ? 0 : 1)
}
