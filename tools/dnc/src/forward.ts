/**
 * Byte plumbing between a channel and a TCP socket (or stdin/stdout), with half-close both ways:
 *
 *  - EOF from one side is passed on as EOF (channel end() / TCP FIN) and the other direction keeps flowing;
 *    the forward is done when both directions have ended and every byte was written;
 *  - an error on one side is passed on as an error: a channel reset by the peer resets the TCP connection (RST),
 *    a TCP error resets the channel with a reason the peer can read ("connection reset by 127.0.0.1:22").
 * Backpressure comes from pipe(): a slow reader on either side stops the other.
 */
import type { Duplex, Readable, Writable } from 'node:stream'
import type { Socket } from 'node:net'
import type { StreamChannel } from '@dhtnet/core'

export interface ForwardResult {
  /** Bytes that went from the channel to the other side, and back. */
  readonly bytesFromChannel: number
  readonly bytesToChannel: number
}

/** An Error whose message is what the peer will read as the reset reason. */
export function resetReason(message: string): Error {
  return new Error(message)
}

/**
 * Forward both ways between `channel` and `tcp` until both directions are done. Resolves on a clean end of both,
 * rejects with the first error (after passing it on to the other side). `tcp` must allow half-open sockets
 * (`allowHalfOpen: true`), or the kernel's FIN would close our sending side too early.
 */
export function forwardChannelToTcp(channel: Duplex, tcp: Socket, label: string): Promise<ForwardResult> {
  return forward({
    channel,
    input: tcp,
    output: tcp,
    // a DHTNet channel (C++ peer) has no half-close: its end closes both directions, so ours ends with it
    endInputWithChannel: (channel as Partial<StreamChannel>).capabilities?.halfClose === false,
    describeLocalError: (err) => describeTcpError(err, label),
    abortLocal: (err) => {
      if (err) tcp.resetAndDestroy()
      else tcp.destroy()
    },
  })
}

export interface ForwardOptions {
  channel: Duplex
  /** What goes into the channel. */
  input: Readable
  /** Where the channel's bytes go. */
  output: Writable
  /** End `output` when the channel ends (default true; false for process.stdout). */
  endOutput?: boolean
  /** When the channel ends, stop reading `input` and end our side too (an interactive terminal: nothing to wait for). */
  endInputWithChannel?: boolean
  /** Turns a local error into the reason the peer sees. */
  describeLocalError: (err: Error) => string
  /** Tear the local side down: err set when the channel failed (TCP: send RST). */
  abortLocal: (err?: Error) => void
}

export function forward(options: ForwardOptions): Promise<ForwardResult> {
  const { channel, input, output } = options
  const endOutput = options.endOutput ?? true
  let bytesFromChannel = 0
  let bytesToChannel = 0
  let settled = false

  return new Promise<ForwardResult>((resolve, reject) => {
    let channelToLocalDone = false
    let localToChannelDone = false
    let channelEnded = false
    let inputEnded = false

    const cleanup = (): void => {
      channel.off('data', onChannelData)
      channel.off('end', onChannelEnd)
      channel.off('error', onChannelError)
      input.off('data', onInputData)
      input.off('end', onInputEnd)
      input.off('error', onLocalError)
      output.off('error', onLocalError)
      output.off('drain', onOutputDrain)
      channel.off('drain', onChannelDrain)
      channel.off('close', onChannelClose)
      input.off('close', onInputClose)
    }
    const finish = (err?: Error): void => {
      if (settled) return
      settled = true
      cleanup()
      // errors after the end (a late reset) must not become unhandled
      channel.on('error', () => {})
      input.on('error', () => {})
      output.on('error', () => {})
      if (err) reject(err)
      else resolve({ bytesFromChannel, bytesToChannel })
    }
    const maybeDone = (): void => {
      if (channelToLocalDone && localToChannelDone) finish()
    }

    // channel -> local
    const onChannelData = (chunk: Buffer): void => {
      bytesFromChannel += chunk.length
      if (!output.write(chunk)) channel.pause()
    }
    const onOutputDrain = (): void => {
      channel.resume()
    }
    const onChannelEnd = (): void => {
      channelEnded = true
      if (options.endInputWithChannel && !inputEnded) {
        input.off('data', onInputData)
        input.off('end', onInputEnd)
        input.pause()
        onInputEnd()
      }
      if (endOutput) {
        output.end(() => {
          channelToLocalDone = true
          maybeDone()
        })
      } else {
        // stdout: make sure everything queued was flushed before calling it done
        output.write(Buffer.alloc(0), () => {
          channelToLocalDone = true
          maybeDone()
        })
      }
    }
    const onChannelError = (err: Error): void => {
      if (settled) return
      options.abortLocal(err)
      finish(err)
    }

    // local -> channel
    const onInputData = (chunk: Buffer): void => {
      bytesToChannel += chunk.length
      if (!channel.write(chunk)) input.pause()
    }
    const onChannelDrain = (): void => {
      input.resume()
    }
    const onInputEnd = (): void => {
      if (inputEnded) return
      inputEnded = true
      channel.end(() => {
        localToChannelDone = true
        maybeDone()
      })
    }
    const onLocalError = (err: Error): void => {
      if (settled) return
      const reason = options.describeLocalError(err)
      channel.destroy(resetReason(reason))
      options.abortLocal()
      finish(new Error(reason, { cause: err }))
    }

    // closed without an error and before the end: the stream was cut, not finished
    const onChannelClose = (): void => {
      if (!settled && !(channelEnded && localToChannelDone)) onChannelError(new Error('the channel closed before the end of the stream'))
    }
    const onInputClose = (): void => {
      if (!settled && !inputEnded) onLocalError(Object.assign(new Error('closed before the end of the stream'), { code: 'ECLOSED' }))
    }

    channel.on('close', onChannelClose)
    input.on('close', onInputClose)
    channel.on('data', onChannelData)
    channel.on('end', onChannelEnd)
    channel.on('error', onChannelError)
    channel.on('drain', onChannelDrain)
    output.on('drain', onOutputDrain)
    output.on('error', onLocalError)
    input.on('data', onInputData)
    input.on('end', onInputEnd)
    if ((input as unknown) !== output) input.on('error', onLocalError)
  })
}

/** "connection refused by 127.0.0.1:9", "connection reset by [::1]:22", ... */
export function describeTcpError(err: Error, label: string): string {
  const code = (err as NodeJS.ErrnoException).code
  switch (code) {
    case 'ECONNREFUSED':
      return `connection refused by ${label}`
    case 'ECONNRESET':
      return `connection reset by ${label}`
    case 'EPIPE':
      return `${label} closed the connection while data was still being sent to it`
    case 'ETIMEDOUT':
      return `connection to ${label} timed out`
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${label} is unreachable (${code})`
    case 'EADDRNOTAVAIL':
      return `cannot connect to ${label}: address not available`
    default:
      return `${label}: ${err.message}`
  }
}
