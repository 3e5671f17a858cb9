/**
 * dsh after parsing: resolve options (flags + YAML), start the node (the tools' runtime), then serve (-l) or run
 * one session (our protocol, or DHTNet's raw one with --raw or for a C++ DHTNet peer). Returns the exit code:
 * the remote program's, 128+N for a signal; throws (exit 255, message naming the step) when dsh itself failed.
 */
import { createLog, handleStopSignals, logConfiguration, signalExitCode, startNode, stopWithin, RunError } from '@dhtnet/cli-kit'
import { SessionClient, ptyRequest } from './client.js'
import type { ParsedArgs } from './cli.js'
import { EXIT_DSH_FAILURE } from './errors.js'
import { RAW_DEFAULT_BINARY, resolveOptions } from './options.js'
import { SESSION_CHANNEL } from './protocol.js'
import { runRawSession } from './raw-client.js'
import { runServer } from './server.js'

const STOP_TIMEOUT_MS = 3000

export async function main(args: ParsedArgs): Promise<number> {
  const options = await resolveOptions(args)
  const log = createLog('dsh', options.verbosity)
  logConfiguration(log, options, ['~/.dsh/config.yml', '/etc/dhtnet/dsh.yaml'])

  let session: SessionClient | undefined
  const stop = handleStopSignals(log, {
    // with pipes the first signal goes to the remote program; with a pty it hangs the session up
    onFirst: (sig) => {
      if (!session) return false
      if (session.forwardSignal(sig)) return true
      session.hangUp(signalExitCode(sig))
      return true
    },
    beforeExit: () => session?.restoreTerminal(),
  })
  const server = options.mode === 'server'
  if (options.mode === 'server' && options.anonymous) {
    log.warn('anonymous: true: any device whose certificate chain verifies (from any CA) may run the authorized programs here')
  }
  const node = await startNode(options, log, {
    tool: 'dsh',
    role: server ? 'server' : 'client',
    ...(server ? { anonymous: options.anonymous, allowedPeers: options.allowedPeers } : {}),
    signal: stop.signal,
  })
  let code: number
  try {
    if (options.mode === 'server') {
      process.stdout.write(`id ${node.id}\nlong_id ${node.longId}\n`)
      code = await runServer(node, options, log, stop.signal)
    } else {
      // the reader of our output went away (`dsh id -- cat big | head`): end the session as SIGPIPE would (141)
      const onOutputError = (err: NodeJS.ErrnoException): void => {
        if (err.code !== 'EPIPE') return
        if (session) session.hangUp(141)
        else process.exit(141)
      }
      process.stdout.on('error', onOutputError)
      process.stderr.on('error', onOutputError)
      const peer = options.peer.hex
      // the connection first, without a channel: a C++ DHTNet device would run any channel name as a program, so
      // its protocol is chosen from what the peer turns out to be (or --raw)
      if (!options.raw) await node.connectPeer(peer, { signal: stop.signal })
      const raw = options.raw || node.peerFlavour(peer) === 'dhtnet'
      const rawBinary = options.binary || RAW_DEFAULT_BINARY
      if (raw && !options.raw) log.info(`${peer} is a C++ DHTNet device: DHTNet's raw protocol (program "${rawBinary}", no pty, no exit status)`)
      const name = raw ? rawBinary : SESSION_CHANNEL
      log.debug(`opening ${raw ? `raw channel "${name}"` : `session channel ${name}`} to ${peer}`)
      const channel = await node.connect(peer, name, { signal: stop.signal })
      if (raw) {
        code = await runRawSession(channel, { stdin: process.stdin, stdout: process.stdout })
      } else {
        const pty = ptyRequest(options.pty, process.stdin.isTTY === true, process.env.TERM)
        session = new SessionClient(
          channel,
          { binary: options.binary, args: options.args, env: options.env, pty },
          { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
          log,
        )
        try {
          code = await session.done
        } finally {
          session.restoreTerminal()
        }
      }
      await node.sync(peer)
    }
  } catch (err) {
    session?.restoreTerminal()
    if (stop.signal.aborted && !(err instanceof RunError)) throw new RunError(`interrupted: ${(err as Error).message}`, { exitCode: EXIT_DSH_FAILURE })
    throw err
  } finally {
    await stopWithin(node.stop(), STOP_TIMEOUT_MS, () => log.warn(`stopping took longer than ${STOP_TIMEOUT_MS / 1000} s; exiting anyway`))
  }
  process.exit(code)
}
