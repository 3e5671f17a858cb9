/**
 * The client side of a session (protocol.ts): HELLO, then the program's output to our stdout/stderr and our stdin
 * to it, resizes, signals, and its exit status as ours (128+N for a signal). Interactive (a pty with a local
 * terminal): the terminal is raw for the session and restored on every way out. A session that ends without an
 * exit status (connection lost, server gone) is a failure (exit 255).
 */
import type { Readable, Writable } from 'node:stream'
import type { ReadStream } from 'node:tty'
import type { StreamChannel } from '@dhtnet/core'
import { RunError, type Log } from '@dhtnet/cli-kit'
import { EXIT_DSH_FAILURE } from './errors.js'
import {
  FrameDecoder,
  FrameType,
  ProtocolError,
  PROTOCOL_VERSION,
  StreamId,
  encodeData,
  encodeEof,
  encodeHello,
  encodeResize,
  encodeSignal,
  type ExitStatus,
  type Frame,
  type PtyRequest,
  type SignalName,
} from './protocol.js'
import { enterRawMode, windowSize, type TerminalGuard } from './terminal.js'

export interface SessionIo {
  readonly stdin: Readable
  readonly stdout: Writable
  readonly stderr: Writable
}

export interface SessionRequest {
  readonly binary: string
  readonly args: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly pty: PtyRequest | null
}

export function exitCodeOf(status: ExitStatus): number {
  return status.kind === 'exited' ? status.code : 128 + status.signal
}

export class SessionClient {
  private terminal: TerminalGuard | undefined
  private status: ExitStatus | undefined
  private accepted = false
  private finished = false
  private readonly cleanups: Array<() => void> = []
  private settle!: (code: number) => void
  private fail!: (err: Error) => void
  readonly done: Promise<number>

  constructor(
    private readonly channel: StreamChannel,
    private readonly request: SessionRequest,
    private readonly io: SessionIo,
    private readonly log: Log,
  ) {
    this.done = new Promise<number>((resolve, reject) => {
      this.settle = resolve
      this.fail = reject
    })
    this.done.catch(() => {}) // observed by the caller
    this.start()
  }

  /** The local terminal back to normal (before an error message is printed). */
  restoreTerminal(): void {
    this.terminal?.restore()
  }

  /**
   * A SIGINT/SIGTERM/SIGHUP of ours. With pipes, it is passed to the remote program (whose status then ends the
   * session): returns true. With a pty, the session is hung up and dsh exits 128+N: returns false (the caller
   * stops).
   */
  forwardSignal(sig: NodeJS.Signals): boolean {
    if (this.request.pty || !this.accepted || this.finished) return false
    this.log.debug(`passing ${sig} on to the remote program`)
    this.channel.write(encodeSignal(sig.replace(/^SIG/, '') as SignalName))
    return true
  }

  /** Ends the session from our side (a signal with a pty, the user's abort). */
  hangUp(code: number): void {
    if (this.finished) return
    this.finish()
    this.channel.destroy()
    this.settle(code)
  }

  private start(): void {
    const { channel } = this
    const decoder = new FrameDecoder()
    channel.write(encodeHello({ v: PROTOCOL_VERSION, binary: this.request.binary, args: this.request.args, env: this.request.env, pty: this.request.pty }))
    const onData = (chunk: Buffer): void => {
      let frames: Frame[]
      try {
        frames = decoder.push(chunk)
      } catch (err) {
        const why = (err as Error).message
        if (!this.accepted) {
          this.failWith(
            new RunError(`the peer did not answer in dsh's session protocol (${why}): it may be a C++ DHTNet dsh server`, {
              hint: "use --raw to speak DHTNet's raw protocol (give the program with -s)",
            }),
          )
        } else this.failWith(new RunError(`protocol error from the server: ${why}`))
        return
      }
      for (const f of frames) this.onFrame(f)
    }
    const onEnd = (): void => {
      if (this.finished) return
      if (this.status) return this.complete()
      this.failWith(new RunError('connection lost: the session ended without an exit status'))
    }
    const onClose = (): void => {
      if (!this.finished) onEnd()
    }
    const onError = (err: Error): void => {
      if (this.finished) return
      const code = (err as { code?: string }).code
      const prefix = code === 'CHANNEL_RESET' ? 'remote service' : 'connection lost'
      this.failWith(new RunError(`${prefix}: ${err.message}`, { cause: err }))
    }
    channel.on('data', onData)
    channel.on('end', onEnd)
    channel.on('close', onClose)
    channel.on('error', onError)
    this.cleanups.push(() => {
      channel.off('data', onData)
      channel.off('end', onEnd)
      channel.off('close', onClose)
      channel.off('error', onError)
      channel.on('error', () => {})
    })
  }

  private onFrame(f: Frame): void {
    if (this.finished) return
    switch (f.type) {
      case FrameType.ACCEPT:
        this.accepted = true
        if (f.accept.ignoredEnv.length > 0) this.log.warn(`the server did not pass on ${f.accept.ignoredEnv.join(', ')} (not in its accept_env)`)
        this.log.debug(`session started, remote pid ${f.accept.pid}`)
        this.startInput()
        break
      case FrameType.REFUSE:
        this.failWith(
          new RunError(`refused: ${f.reason}`, {
            hint: /authorized_binaries/.test(f.reason)
              ? "ask for a program the server authorizes (-s PROGRAM, or the command's first word), or add it to the server's authorized_binaries"
              : undefined,
          }),
        )
        break
      case FrameType.STDOUT:
        this.output(this.io.stdout, f.data)
        break
      case FrameType.STDERR:
        this.output(this.io.stderr, f.data)
        break
      case FrameType.EOF:
        break
      case FrameType.EXIT:
        this.status = f.status
        this.log.debug(`remote program ended: ${f.status.kind === 'exited' ? `exit ${f.status.code}` : `SIG${f.status.name}`}`)
        // the server ends the channel next; our side is done too
        this.channel.end()
        break
      default:
        this.failWith(new RunError(`protocol error from the server: unexpected frame type ${f.type}`))
    }
  }

  private output(stream: Writable, data: Buffer): void {
    if (!stream.write(data)) {
      this.channel.pause()
      stream.once('drain', () => this.channel.resume())
    }
  }

  private startInput(): void {
    const { stdin } = this.io
    const tty = stdin as ReadStream
    if (this.request.pty && tty.isTTY && typeof tty.setRawMode === 'function') this.terminal = enterRawMode(tty)
    if (this.request.pty) {
      const stdoutTty = [process.stdout, process.stderr].find((s) => s.isTTY)
      if (stdoutTty) {
        const onResize = (): void => {
          const { rows, cols } = windowSize()
          this.channel.write(encodeResize(rows, cols))
        }
        stdoutTty.on('resize', onResize)
        this.cleanups.push(() => stdoutTty.off('resize', onResize))
      }
    }
    const onInput = (chunk: Buffer): void => {
      let ok = true
      for (const f of encodeData(FrameType.STDIN, chunk)) ok = this.channel.write(f) && ok
      if (!ok) {
        stdin.pause()
        this.channel.once('drain', () => {
          if (!this.finished) stdin.resume()
        })
      }
    }
    const onInputEnd = (): void => {
      if (!this.finished) this.channel.write(encodeEof(StreamId.STDIN))
    }
    const onInputError = (): void => onInputEnd()
    stdin.on('data', onInput)
    stdin.on('end', onInputEnd)
    stdin.on('error', onInputError)
    this.cleanups.push(() => {
      stdin.off('data', onInput)
      stdin.off('end', onInputEnd)
      stdin.off('error', onInputError)
      stdin.pause()
    })
    stdin.resume()
  }

  private finish(): void {
    this.finished = true
    for (const c of this.cleanups.splice(0)) c()
    this.terminal?.restore()
  }

  private complete(): void {
    this.finish()
    const code = exitCodeOf(this.status!)
    // everything written to stdout/stderr is flushed before the exit code is handed back
    let pending = 2
    const flushed = (): void => {
      if (--pending === 0) this.settle(code)
    }
    this.io.stdout.write(Buffer.alloc(0), flushed)
    this.io.stderr.write(Buffer.alloc(0), flushed)
  }

  private failWith(err: RunError): void {
    if (this.finished) return
    this.finish()
    this.channel.destroy()
    this.fail(err.exitCode === undefined ? new RunError(err.message, { hint: err.hint, cause: err.cause, exitCode: EXIT_DSH_FAILURE }) : err)
  }
}

/** The request's pty: ours when asked (or stdin is a terminal and not -T), with our TERM and window size. */
export function ptyRequest(mode: 'auto' | 'force' | 'never', stdinIsTty: boolean, term: string | undefined): PtyRequest | null {
  if (mode === 'never' || (mode === 'auto' && !stdinIsTty)) return null
  const { rows, cols } = windowSize()
  const name = term && /^[A-Za-z0-9._+-]{1,64}$/.test(term) ? term : 'dumb'
  return { term: name, rows, cols }
}

export { ProtocolError }
