/**
 * `dsh -l`: runs programs for trusted peers.
 *
 * - `dsh://v1` channels speak our session protocol (protocol.ts): the HELLO names the program, its arguments, its
 *   environment and the pty; the program is checked against `authorized_binaries` (binaries.ts) and started
 *   (program.ts); its status ends the session.
 * - Any other channel name is DHTNet's raw protocol: the name is the program, the bytes are its stdin and its
 *   stdout+stderr, no pty, no arguments; the same authorization applies (checked when the channel is requested).
 *
 * Trust (who may open a channel at all) is the runtime's: our CA, `authorized_peers`, or anonymous mode.
 * A session whose client goes away (channel closed, peer dead) is hung up: SIGHUP to its processes, SIGKILL after
 * a grace period. Each session is logged: peer, program, start, end, status.
 */
import { userInfo } from 'node:os'
import type { PeerInfo, StreamChannel, ToolNode } from '@dhtnet/core'
import { untilAborted, type Log } from '@dhtnet/cli-kit'
import { BinaryPolicy } from './binaries.js'
import type { ServerOptions } from './options.js'
import { Program } from './program.js'
import {
  FrameDecoder,
  FrameType,
  ProtocolError,
  SESSION_CHANNEL,
  StreamId,
  encodeAccept,
  encodeData,
  encodeEof,
  encodeExit,
  encodeRefuse,
  type ExitStatus,
  type Frame,
  type SessionHello,
} from './protocol.js'

/** How long a client has to send its HELLO. */
const HELLO_TIMEOUT_MS = 10_000
export const MAX_SESSIONS = 128
export const MAX_SESSIONS_PER_PEER = 16
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export interface ServerEnvironment {
  /** The variables every session starts from (HOME, USER, LOGNAME, SHELL, PATH, LANG). */
  readonly base: Readonly<Record<string, string>>
  readonly home: string
  readonly loginShell: string
}

export function serverEnvironment(env: NodeJS.ProcessEnv = process.env): ServerEnvironment {
  const user = userInfo()
  const shell = user.shell || env.SHELL || '/bin/sh'
  const base: Record<string, string> = {
    HOME: user.homedir,
    USER: user.username,
    LOGNAME: user.username,
    SHELL: shell,
    PATH: env.PATH || DEFAULT_PATH,
  }
  if (env.LANG) base.LANG = env.LANG
  return { base, home: user.homedir, loginShell: shell }
}

/** `accept_env` patterns: a name, or a prefix ending with `*` (LC_*). */
export function acceptsEnv(patterns: readonly string[], name: string): boolean {
  return patterns.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : p === name))
}

interface ActiveSession {
  readonly n: number
  readonly peer: PeerInfo
  program?: Program
  channel: StreamChannel
}

function describeStatus(status: ExitStatus): string {
  return status.kind === 'exited' ? `exit ${status.code}` : `killed by SIG${status.name} (${status.signal})`
}

function shorten(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text
}

export async function runServer(node: ToolNode, options: ServerOptions, log: Log, signal: AbortSignal, environment = serverEnvironment()): Promise<number> {
  const binaries = new BinaryPolicy(options.binaries ?? [environment.loginShell], environment.base.PATH!)
  if (binaries.allowsNothing) log.warn('authorized_binaries is empty: every session will be refused')
  else log.info(`authorized programs: ${binaries.describe()}${options.binaries === undefined ? ' (the login shell; set authorized_binaries to change)' : ''}`)
  if (options.allowedPeers.length > 0) log.info(`authorized peers: ${options.allowedPeers.join(', ')}`)

  const active = new Set<ActiveSession>()
  let counter = 0
  const perPeer = (id: string): number => [...active].filter((s) => s.peer.id === id).length

  const admit = (peer: PeerInfo): string | undefined => {
    if (active.size >= MAX_SESSIONS) return `this server runs its maximum of ${MAX_SESSIONS} sessions`
    if (perPeer(peer.id) >= MAX_SESSIONS_PER_PEER) return `this peer already has ${MAX_SESSIONS_PER_PEER} sessions here`
    return undefined
  }

  const sessionEnv = (peer: PeerInfo, requested: Readonly<Record<string, string>>, term: string | undefined): { env: Record<string, string>; ignored: string[] } => {
    const env: Record<string, string> = { ...environment.base, DSH_PEER: peer.id }
    const ignored: string[] = []
    for (const [k, v] of Object.entries(requested)) {
      if (acceptsEnv(options.acceptEnv, k)) env[k] = v
      else ignored.push(k)
    }
    if (term) env.TERM = term
    return { env, ignored }
  }

  const startProgram = (s: ActiveSession, path: string, args: readonly string[], env: Record<string, string>, pty: SessionHello['pty']): Program => {
    const program = new Program({ path, args, env, cwd: environment.home, pty })
    s.program = program
    const started = Date.now()
    log.info(`session #${s.n} ${s.peer.id}: started ${shorten([path, ...args].join(' '))} (${pty ? `pty ${pty.cols}x${pty.rows} ${pty.term}` : 'pipes'}), pid ${program.pid}`)
    program.once('exit', (status: ExitStatus) => {
      log.info(`session #${s.n} ${s.peer.id}: ended, ${describeStatus(status)}, after ${((Date.now() - started) / 1000).toFixed(1)} s`)
      // what the program left behind in its session (background jobs) ends with it
      if (program.remainingProcesses().length > 0) program.hangup()
    })
    return program
  }

  const end = (s: ActiveSession): void => {
    active.delete(s)
  }

  /** The client went away before the program ended: hang the session up. */
  const watchClient = (s: ActiveSession): void => {
    s.channel.once('close', () => {
      const program = s.program
      if (program && !program.hasExited) {
        log.info(`session #${s.n} ${s.peer.id}: the client is gone; hanging up`)
        program.resumeOutput() // nobody reads it any more: let the program write (and see the hang-up)
        program.hangup()
      }
      if (!program || program.hasExited) end(s)
      else program.once('exit', () => end(s))
    })
  }

  function serveSession(peer: PeerInfo, channel: StreamChannel): void {
    const s: ActiveSession = { n: ++counter, peer, channel }
    active.add(s)
    channel.on('error', () => {}) // a reset from the client ends the session like a close
    watchClient(s)
    const refusal = admit(peer)
    const decoder = new FrameDecoder()
    let state: 'hello' | 'checking' | 'running' | 'done' = 'hello'
    const queued: Frame[] = []
    let open = true
    channel.once('close', () => (open = false))
    const send = (buf: Buffer): boolean => (open ? channel.write(buf) : true)
    const refuse = (reason: string): void => {
      log.info(`session #${s.n} ${peer.id}: refused: ${reason}`)
      state = 'done'
      send(encodeRefuse(reason))
      channel.end()
    }
    const helloTimer = setTimeout(() => {
      if (state === 'hello') refuse(`no session header within ${HELLO_TIMEOUT_MS / 1000} s`)
    }, HELLO_TIMEOUT_MS)
    helloTimer.unref()

    const handle = (f: Frame): void => {
      const program = s.program
      if (state === 'checking') {
        if (queued.length >= 64) throw new ProtocolError('too many frames before the session started')
        queued.push(f)
        return
      }
      if (state === 'hello') {
        clearTimeout(helloTimer)
        if (f.type !== FrameType.HELLO) throw new ProtocolError('the first frame must be HELLO')
        if (refusal) return refuse(refusal)
        state = 'checking'
        void begin(f.hello)
        return
      }
      if (state !== 'running' || !program) return
      switch (f.type) {
        case FrameType.STDIN:
          if (!program.writeStdin(f.data)) {
            channel.pause()
            program.once('drain', () => channel.resume())
          }
          break
        case FrameType.EOF:
          if (f.stream === StreamId.STDIN) program.endStdin()
          break
        case FrameType.RESIZE:
          program.resize(f.rows, f.cols)
          break
        case FrameType.SIGNAL:
          log.debug(`session #${s.n}: SIG${f.signal} from the client`)
          program.signal(f.signal)
          break
        default:
          throw new ProtocolError(`unexpected frame type ${f.type} from a client`)
      }
    }

    const begin = async (hello: SessionHello): Promise<void> => {
      const decision = await binaries.decide(hello.binary)
      if (!open) return
      if (!decision.ok) return refuse(decision.reason)
      const { env, ignored } = sessionEnv(peer, hello.env, hello.pty?.term)
      let program: Program
      try {
        program = startProgram(s, decision.path, hello.args, env, hello.pty)
      } catch (err) {
        return refuse(`cannot start ${decision.path}: ${(err as Error).message}`)
      }
      state = 'running'
      send(encodeAccept({ v: 1, pid: program.pid, ignoredEnv: ignored }))
      const out = (type: typeof FrameType.STDOUT | typeof FrameType.STDERR) => (data: Buffer) => {
        let ok = true
        for (const f of encodeData(type, data)) ok = send(f) && ok
        if (!ok && open) {
          program.pauseOutput()
          channel.once('drain', () => program.resumeOutput())
        }
      }
      program.on('stdout', out(FrameType.STDOUT))
      program.on('stderr', out(FrameType.STDERR))
      program.on('stdout-end', () => send(encodeEof(StreamId.STDOUT)))
      program.on('stderr-end', () => send(encodeEof(StreamId.STDERR)))
      program.once('exit', (status: ExitStatus) => {
        state = 'done'
        send(encodeExit(status))
        if (open) channel.end()
      })
      for (const f of queued.splice(0)) safeHandle(f)
    }

    const safeHandle = (f: Frame): void => {
      try {
        handle(f)
      } catch (err) {
        protocolFailure(err)
      }
    }
    const protocolFailure = (err: unknown): void => {
      log.info(`session #${s.n} ${peer.id}: protocol error: ${(err as Error).message}`)
      state = 'done'
      channel.destroy(new Error(`dsh protocol error: ${(err as Error).message}`))
    }
    channel.on('data', (chunk: Buffer) => {
      if (state === 'done') return
      let frames: Frame[]
      try {
        frames = decoder.push(chunk)
      } catch (err) {
        return protocolFailure(err)
      }
      for (const f of frames) safeHandle(f)
    })
    channel.on('end', () => {
      // the client finished sending; in the hello state there will be no session
      if (state === 'hello') refuse('the client closed the channel before its session header')
    })
  }

  function serveRaw(peer: PeerInfo, name: string, channel: StreamChannel): void {
    const s: ActiveSession = { n: ++counter, peer, channel }
    active.add(s)
    channel.on('error', () => {})
    watchClient(s)
    const refusal = admit(peer)
    if (refusal) {
      log.info(`session #${s.n} ${peer.id}: refused (raw): ${refusal}`)
      channel.destroy(new Error(refusal))
      return
    }
    channel.pause()
    void binaries.decide(name).then((decision) => {
      if (channel.destroyed) return
      if (!decision.ok) {
        channel.destroy(new Error(decision.reason))
        return
      }
      const { env } = sessionEnv(peer, {}, undefined)
      const program = startProgram(s, decision.path, [], env, null)
      log.debug(`session #${s.n}: DHTNet raw protocol on channel "${shorten(name, 60)}"`)
      let open = true
      channel.once('close', () => (open = false))
      // DHTNet's protocol: stdout and stderr both go to the channel
      let outputsEnded = 0
      const out = (data: Buffer): void => {
        if (!open) return
        if (!channel.write(data)) {
          program.pauseOutput()
          channel.once('drain', () => program.resumeOutput())
        }
      }
      program.on('stdout', out)
      program.on('stderr', out)
      const endOne = (): void => {
        if (++outputsEnded === 2 && open) channel.end()
      }
      program.on('stdout-end', endOne)
      program.on('stderr-end', endOne)
      channel.on('data', (chunk: Buffer) => {
        if (!program.writeStdin(chunk)) {
          channel.pause()
          program.once('drain', () => channel.resume())
        }
      })
      channel.on('end', () => program.endStdin())
      channel.resume()
    })
  }

  node.serve({
    decide: async (peer, name) => {
      if (name === SESSION_CHANNEL) return true
      // DHTNet's raw protocol: the channel is named after the program
      const decision = await binaries.decide(name)
      if (!decision.ok) {
        log.info(`refused "${shorten(name, 60)}" (raw) for ${peer.id}: ${decision.reason}`)
        return { accept: false, reason: decision.reason }
      }
      return true
    },
    onChannel: (peer, name, channel) => {
      if (name === SESSION_CHANNEL) serveSession(peer, channel)
      else serveRaw(peer, name, channel)
    },
  })

  log.debug('ready')
  await untilAborted(signal)
  log.info(`stopping: hanging up ${active.size} session${active.size === 1 ? '' : 's'}`)
  const peers = new Set<string>()
  const exits: Promise<unknown>[] = []
  for (const s of active) {
    const program = s.program
    if (program && !program.hasExited) {
      exits.push(new Promise((resolve) => program.once('exit', resolve)))
      program.hangup()
    }
    peers.add(s.peer.longId)
  }
  // the programs end (SIGHUP, SIGKILL after the grace), their exit statuses go out, then the connections close
  await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 4000).unref())])
  for (const s of active) s.channel.end()
  await Promise.all([...peers].map((p) => node.sync(p)))
  return 0
}
