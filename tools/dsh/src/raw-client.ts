/**
 * DHTNet's raw dsh protocol, client side: the channel is named after the program; our stdin goes to it as bytes and
 * its bytes (the program's stdout and stderr, mixed) come to our stdout. No pty, no arguments, no exit status: the
 * session ends when the server ends the channel (exit 0), or fails when the channel is reset or lost (exit 255).
 * stdin EOF ends our sending side only; at a terminal, the remote end also ends the session (no Ctrl-D needed).
 */
import type { Readable, Writable } from 'node:stream'
import type { StreamChannel } from '@dhtnet/core'
import { RunError } from '@dhtnet/cli-kit'
import { EXIT_DSH_FAILURE } from './errors.js'

export function runRawSession(channel: StreamChannel, io: { stdin: Readable; stdout: Writable }): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let finished = false
    const stdinIsTty = (io.stdin as { isTTY?: boolean }).isTTY === true
    const cleanup = (): void => {
      finished = true
      io.stdin.off('data', onInput)
      io.stdin.off('end', onInputEnd)
      io.stdin.pause()
      channel.on('error', () => {})
    }
    const onInput = (chunk: Buffer): void => {
      if (!channel.write(chunk)) {
        io.stdin.pause()
        channel.once('drain', () => {
          if (!finished) io.stdin.resume()
        })
      }
    }
    const onInputEnd = (): void => {
      if (!finished) channel.end()
    }
    channel.on('data', (chunk: Buffer) => {
      if (!io.stdout.write(chunk)) {
        channel.pause()
        io.stdout.once('drain', () => channel.resume())
      }
    })
    channel.once('end', () => {
      if (finished) return
      cleanup()
      if (stdinIsTty) channel.end()
      io.stdout.write(Buffer.alloc(0), () => resolve(0))
    })
    channel.once('error', (err: Error) => {
      if (finished) return
      cleanup()
      reject(new RunError(`connection lost: ${err.message}`, { cause: err, exitCode: EXIT_DSH_FAILURE }))
    })
    channel.once('close', () => {
      if (finished) return
      cleanup()
      reject(new RunError('connection lost: the channel closed before the end of the session', { exitCode: EXIT_DSH_FAILURE }))
    })
    io.stdin.on('data', onInput)
    io.stdin.on('end', onInputEnd)
    io.stdin.resume()
  })
}
