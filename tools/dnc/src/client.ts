/**
 * `dnc <peer>`: one channel `nc://<host>:<port>` to the peer, stdin into it, its bytes to stdout.
 * Half-close: stdin EOF ends our sending side only; dnc keeps writing what arrives until the remote side ends,
 * then exits 0. A reset (service refused, connection lost) is an error: message on stderr, exit 1.
 */
import type { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import type { ToolNode } from '@dhtnet/core'
import { RunError, type Log } from '@dhtnet/cli-kit'
import { forward } from './forward.js'
import type { ClientOptions } from './options/resolve.js'
import { serviceChannelName } from './services.js'

export interface ClientIo {
  readonly stdin: NodeJS.ReadableStream & import('node:stream').Readable
  readonly stdout: NodeJS.WritableStream & import('node:stream').Writable
}

/**
 * Open the service channel, or fail with the step that failed. One deadline: what is left of the node's --timeout
 * (or `timeoutMs` for a later channel, as -L opens them); the connection manager does the one retry there is.
 */
export async function openServiceChannel(node: ToolNode, options: ClientOptions, log: Log, signal?: AbortSignal, timeoutMs?: number): Promise<Duplex> {
  const name = serviceChannelName(options.host, options.port)
  log.debug(`requesting ${name} from ${options.peer.hex}`)
  const started = performance.now()
  const channel = await node.connect(options.peer.hex, name, { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(signal ? { signal } : {}) })
  log.debug(`channel ${name} open after ${Math.round(performance.now() - started)} ms`)
  return channel
}

export async function runClient(node: ToolNode, options: ClientOptions, log: Log, io: ClientIo, signal?: AbortSignal): Promise<number> {
  const channel = await openServiceChannel(node, options, log, signal)
  // the reader of our stdout went away (`dnc ... | head`): like netcat, that is not a failure of dnc
  let outputClosed = false as boolean // set by the output's error listener
  const onOutputError = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EPIPE') outputClosed = true
  }
  io.stdout.on('error', onOutputError)
  let interrupted = false as boolean // set by the signal handler
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
      describeLocalError: (err) => (outputClosed ? 'the client closed its output' : `the client failed: ${err.message}`),
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
export async function runLocalForward(node: ToolNode, options: ClientOptions, log: Log, signal: AbortSignal): Promise<number> {
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
    openServiceChannel(node, options, log, signal, options.timeoutMs).then(
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
