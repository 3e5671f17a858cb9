/**
 * TCP services written for the tests: an echo service (half-close aware: it ends its side when the client ends),
 * a sink that hashes what it receives, and a source that sends a fixed amount then ends. All on loopback.
 */
import { createHash, type Hash } from 'node:crypto'
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'

export interface TcpService {
  readonly port: number
  readonly server: Server
  close(): Promise<void>
}

async function listen(server: Server, host: string): Promise<TcpService> {
  const sockets = new Set<Socket>()
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/** Echoes every byte; ends its side after the client ends (half-close). */
export function echoService(host = '127.0.0.1'): Promise<TcpService> {
  return listen(
    createServer({ allowHalfOpen: true }, (s) => s.pipe(s)),
    host,
  )
}

export interface SinkResult {
  bytes: number
  sha256: string
}

/**
 * Hashes what it receives. When `reply` is set, sends that many pseudo-random bytes back at once (while still
 * receiving) and ends its side when both are done; `results` gets one entry per connection, when the client ended.
 */
export async function sinkService(
  options: { host?: string; replyBytes?: number } = {},
): Promise<TcpService & { results: SinkResult[]; replies: SinkResult[]; onResult: (cb: () => void) => void }> {
  const results: SinkResult[] = []
  const replies: SinkResult[] = []
  const waiters: Array<() => void> = []
  const server = createServer({ allowHalfOpen: true }, (s) => {
    hashUntilEnd(s).then(
      (r) => {
        results.push(r)
        if (!options.replyBytes) s.end()
        for (const w of waiters.splice(0)) w()
      },
      () => {},
    )
    if (options.replyBytes) {
      const sent = sendPattern(s, options.replyBytes, 7)
      void sent.then((r) => {
        replies.push(r)
        s.end()
      })
    }
  })
  const svc = await listen(server, options.host ?? '127.0.0.1')
  return { ...svc, results, replies, onResult: (cb) => waiters.push(cb) }
}

/** Deterministic pseudo-random bytes (fast): block i of 64 KiB is a SHA-256 counter stream seeded by `seed`. */
export function patternBlock(index: number, seed: number, size = 65536): Buffer {
  const out = Buffer.allocUnsafe(size)
  let off = 0
  let n = 0
  while (off < size) {
    const h = createHash('sha256').update(`${seed}:${index}:${n++}`).digest()
    off += h.copy(out, off)
  }
  return out
}

/** Writes `total` bytes of pattern with backpressure; resolves with what was sent (not ending the stream). */
export async function sendPattern(w: NodeJS.WritableStream, total: number, seed: number): Promise<SinkResult> {
  const hash: Hash = createHash('sha256')
  // one block reused with a varying prefix keeps it cheap but makes reordering or loss visible
  const base = patternBlock(0, seed)
  let sent = 0
  let i = 0
  while (sent < total) {
    const n = Math.min(base.length, total - sent)
    const chunk = Buffer.from(base.subarray(0, n))
    chunk.writeUInt32BE(i++ >>> 0, 0)
    hash.update(chunk)
    sent += n
    if (!w.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          w.removeListener('error', onError)
          resolve()
        }
        const onError = (err: Error): void => {
          w.removeListener('drain', onDrain)
          reject(err)
        }
        w.once('drain', onDrain)
        w.once('error', onError)
      })
    }
  }
  return { bytes: sent, sha256: hash.digest('hex') }
}

/** Connects to a TCP port; returns the socket once connected (half-open allowed). */
export function tcpConnect(port: number, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host, allowHalfOpen: true })
    s.once('connect', () => {
      s.off('error', reject)
      resolve(s)
    })
    s.once('error', reject)
  })
}

/** Reads a socket to its end: byte count and SHA-256. */
export function hashUntilEnd(s: NodeJS.ReadableStream): Promise<SinkResult> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    let bytes = 0
    s.on('data', (b: Buffer) => {
      bytes += b.length
      hash.update(b)
    })
    s.once('end', () => resolve({ bytes, sha256: hash.digest('hex') }))
    s.once('error', reject)
  })
}

/** A port on which nothing listens (bound then closed). */
export async function closedPort(host = '127.0.0.1'): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
