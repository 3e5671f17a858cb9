/**
 * `dnc <peer>`: one channel `nc://<host>:<port>` to the peer, stdin into it, its bytes to stdout.
 * Half-close: stdin EOF ends our sending side only; dnc keeps writing what arrives until the remote side ends,
 * then exits 0. A reset (service refused, connection lost) is an error: message on stderr, exit 1.
 */
import type { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import { RunError } from './errors.js'
import { forward } from './forward.js'
import type { Log } from './log.js'
import type { ClientOptions } from './options/resolve.js'
import type { DncNode } from './peer.js'
import { serviceChannelName } from './services.js'

export interface ClientIo {
  readonly stdin: NodeJS.ReadableStream & import('node:stream').Readable
  readonly stdout: NodeJS.WritableStream & import('node:stream').Writable
}

/** Error codes of transport failures worth another attempt within the timeout. */
const TRANSIENT = new Set(['ICE_FAILED', 'BAD_SDP', 'WEBRTC_ERROR', 'CONNECTION_CLOSED', 'PEER_UNREACHABLE', 'TRANSPORT_CLOSED'])

/** Open the service channel within the timeout, or fail with the step that failed. */
export async function openServiceChannel(node: DncNode, options: ClientOptions, log: Log, signal?: AbortSignal): Promise<Duplex> {
  const name = serviceChannelName(options.host, options.port)
  log.debug(`requesting ${name} from ${options.peer.hex}`)
  const started = performance.now()
  // a guard in case the library overran its own deadline: dnc never waits longer than asked (plus a grace second)
  let guard: NodeJS.Timeout | undefined
  const overrun = new Promise<never>((_, reject) => {
    guard = setTimeout(
      () => reject(new RunError(`timeout: no connection to ${options.peer.hex} after ${options.timeoutMs / 1000} s`, { hint: 'is the peer running dnc -l, and do both sides use the same bootstrap (-b)?' })),
      options.timeoutMs + 1000,
    )
    guard.unref()
  })
  try {
    // a failure of the transport itself (ICE, DTLS, a connection dying while the channel opens) may be transient:
    // retried while time remains, at most twice; refusals and lookups that found nothing are final
    for (let attempt = 1; ; attempt++) {
      try {
        // the library enforces the deadline and says which step it was in; `signal` is the user's Ctrl-C
        const timeoutMs = Math.max(1, options.timeoutMs - (performance.now() - started))
        const channel = await Promise.race([node.connect(options.peer.hex, name, { timeoutMs, ...(signal ? { signal } : {}) }), overrun])
        log.debug(`channel ${name} open after ${Math.round(performance.now() - started)} ms`)
        return channel
      } catch (err) {
        const code = (err as { code?: string }).code ?? ''
        const left = options.timeoutMs - (performance.now() - started)
        if (attempt >= 3 || !TRANSIENT.has(code) || left < 500 || signal?.aborted) throw err
        log.debug(`attempt ${attempt} failed (${(err as Error).message}); retrying`)
      }
    }
  } finally {
    clearTimeout(guard)
  }
}

export async function runClient(node: DncNode, options: ClientOptions, log: Log, io: ClientIo, signal?: AbortSignal): Promise<number> {
  const channel = await openServiceChannel(node, options, log, signal)
  // the reader of our stdout went away (`dnc ... | head`): like netcat, that is not a failure of dnc
  let outputClosed = false
  const onOutputError = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EPIPE') outputClosed = true
  }
  io.stdout.on('error', onOutputError)
  let interrupted = false
  const onAbort = (): void => {
    interrupted = true
    channel.destroy(new Error('the dnc client was interrupted'))
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    const result = await forward({
      channel,
      input: io.stdin,
      output: io.stdout,
      endOutput: false,
      // a person at a terminal: when the remote side is done, so is dnc (netcat would wait for Ctrl-D)
      endInputWithChannel: (io.stdin as { isTTY?: boolean }).isTTY === true,
      describeLocalError: (err) =>
        outputClosed ? 'the client closed its output' : `the client failed: ${err.message}`,
      abortLocal: () => io.stdin.destroy(),
    })
    // our last bytes and EOF may still be on their way: wait until the peer has them before the process stops
    await node.sync(options.peer.hex)
    log.debug(`done: ${result.bytesToChannel} bytes sent, ${result.bytesFromChannel} bytes received`)
    return 0
  } catch (err) {
    if (outputClosed) return 0
    if (interrupted) throw new RunError('interrupted before the end of the stream')
    throw new RunError(describeChannelFailure(err as Error), { cause: err })
  } finally {
    io.stdout.off('error', onOutputError)
    signal?.removeEventListener('abort', onAbort)
  }
}

function describeChannelFailure(err: Error): string {
  const code = (err as { code?: string }).code
  if (code === 'CHANNEL_RESET') return `remote service: ${err.message.replace(/^channel "[^"]*" was reset by the peer: /, '')}`
  if (code === 'PEER_UNREACHABLE' || code === 'CONNECTION_CLOSED') return `connection lost: ${err.message}`
  return err.message
}

/**
 * `dnc -L [bind:]port <peer>`: like `ssh -L`. Each accepted TCP connection gets its own channel on the one
 * connection to the peer (the connection manager shares it). A channel that cannot be opened resets that TCP
 * connection and is reported; the listener keeps running until SIGINT/SIGTERM (`signal`).
 */
export async function runLocalForward(node: DncNode, options: ClientOptions, log: Log, signal: AbortSignal): Promise<number> {
  const { createServer } = await import('node:net')
  const { forwardChannelToTcp } = await import('./forward.js')
  const bind = options.localForward!
  const name = serviceChannelName(options.host, options.port)
  const sockets = new Set<import('node:net').Socket>()
  let served = 0
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
    const n = ++served
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {}) // reported through the forward below
    const from = `${socket.remoteAddress}:${socket.remotePort}`
    log.debug(`#${n} connection from ${from}: opening ${name}`)
    openServiceChannel(node, options, log, signal).then(
      (channel) => {
        socket.resume()
        forwardChannelToTcp(channel, socket, `local client ${from}`).then(
          (r) => log.debug(`#${n} done: ${r.bytesToChannel} bytes sent, ${r.bytesFromChannel} bytes received`),
          (err: Error) => log.warn(`#${n} ${describeChannelFailure(err)}`),
        )
      },
      (err: Error) => {
        log.error(`#${n} cannot open ${name} on ${options.peer.hex}: ${err.message}`)
        socket.resetAndDestroy()
      },
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the address is in use' : err.code === 'EACCES' ? 'permission denied' : err.message
      reject(new RunError(`-L: cannot listen on ${hostPort(bind.host, bind.port)}: ${why}`, { hint: 'choose another port with -L' }))
    })
    server.listen(bind.port, bind.host, () => resolve())
  })
  const address = server.address() as import('node:net').AddressInfo
  log.info(`listening on ${hostPort(address.address, address.port)}, forwarding to ${name.slice(5)} on ${options.peer.hex}`)
  await new Promise<void>((resolve) => {
    if (signal.aborted) return resolve()
    signal.addEventListener('abort', () => resolve(), { once: true })
  })
  server.close()
  for (const s of sockets) s.destroy()
  return 0
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
