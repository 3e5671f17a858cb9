/**
 * dsh's session protocol (version 1) on the channel `dsh://v1`. DHTNet's own dsh protocol (a channel named after
 * the binary, raw stdin/stdout bytes, no header) uses other channel names, so the two never mix.
 *
 * Every message is a frame: type (1 byte), payload length (4 bytes, big-endian), payload. Sizes are bounded: a
 * HELLO payload at most 64 KiB, any other frame at most 64 KiB; a longer declared length is a protocol error
 * before any byte of it is buffered. The decoder holds at most one frame.
 *
 * | type | name   | direction | payload |
 * |------|--------|-----------|---------|
 * | 1    | HELLO  | c → s     | JSON `{v: 1, binary, args: [..], env: {K: V}, pty: {term, rows, cols} | null}` |
 * | 2    | ACCEPT | s → c     | JSON `{v: 1, pid, ignoredEnv: [..]}` (the program started) |
 * | 3    | REFUSE | s → c     | UTF-8 reason; the server then ends the channel |
 * | 4    | STDIN  | c → s     | bytes |
 * | 5    | STDOUT | s → c     | bytes (with a pty: everything the terminal shows) |
 * | 6    | STDERR | s → c     | bytes (pipes only) |
 * | 7    | EOF    | both      | 1 byte: 0 stdin, 1 stdout, 2 stderr |
 * | 8    | RESIZE | c → s     | rows (u16 BE), cols (u16 BE) |
 * | 9    | SIGNAL | c → s     | signal name, ASCII (`INT`, `TERM`, `HUP`, ...: SIGNALS) |
 * | 10   | EXIT   | s → c     | kind (1 byte: 0 exited, 1 killed by a signal), code or signal number (1 byte), then for a signal its name (ASCII) |
 *
 * The client sends HELLO first and nothing else until ACCEPT (or REFUSE). The server sends STDOUT/STDERR as the
 * program writes, EOF for each output stream, then EXIT, then ends the channel.
 */
export const SESSION_CHANNEL = 'dsh://v1'
export const PROTOCOL_VERSION = 1

export const FrameType = {
  HELLO: 1,
  ACCEPT: 2,
  REFUSE: 3,
  STDIN: 4,
  STDOUT: 5,
  STDERR: 6,
  EOF: 7,
  RESIZE: 8,
  SIGNAL: 9,
  EXIT: 10,
} as const
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType]

export const HEADER_BYTES = 5
/** Largest payload of any frame. */
export const MAX_PAYLOAD = 64 * 1024
/** Data frames are cut to this size when sent. */
export const DATA_CHUNK = 32 * 1024

export const StreamId = { STDIN: 0, STDOUT: 1, STDERR: 2 } as const

/** Signals a client may send (names without SIG). */
export const SIGNALS = ['HUP', 'INT', 'QUIT', 'TERM', 'KILL', 'USR1', 'USR2', 'TSTP', 'CONT', 'WINCH', 'ALRM'] as const
export type SignalName = (typeof SIGNALS)[number]

export interface PtyRequest {
  readonly term: string
  readonly rows: number
  readonly cols: number
}

export interface SessionHello {
  readonly v: number
  /** The program to run: a name found in the server's PATH, an absolute path, or '' for the server's default. */
  readonly binary: string
  readonly args: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly pty: PtyRequest | null
}

export interface SessionAccept {
  readonly v: number
  readonly pid: number
  /** Names of `env` entries the server did not pass on (not in its accept_env). */
  readonly ignoredEnv: readonly string[]
}

export type ExitStatus = { readonly kind: 'exited'; readonly code: number } | { readonly kind: 'signal'; readonly signal: number; readonly name: string }

export type Frame =
  | { type: typeof FrameType.HELLO; hello: SessionHello }
  | { type: typeof FrameType.ACCEPT; accept: SessionAccept }
  | { type: typeof FrameType.REFUSE; reason: string }
  | { type: typeof FrameType.STDIN | typeof FrameType.STDOUT | typeof FrameType.STDERR; data: Buffer }
  | { type: typeof FrameType.EOF; stream: number }
  | { type: typeof FrameType.RESIZE; rows: number; cols: number }
  | { type: typeof FrameType.SIGNAL; signal: SignalName }
  | { type: typeof FrameType.EXIT; status: ExitStatus }

/** A malformed frame: the channel is closed with this reason. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ProtocolError'
  }
}

// --- limits of the HELLO -----------------------------------------------------------------------------------------
export const LIMITS = {
  binaryBytes: 4096,
  args: 4096,
  argBytes: 32 * 1024,
  envEntries: 256,
  envNameBytes: 256,
  envValueBytes: 16 * 1024,
  termBytes: 64,
  /** rows and cols: 1..MAX_WINDOW */
  maxWindow: 10_000,
} as const

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const TERM_NAME = /^[A-Za-z0-9._+-]+$/

function frame(type: number, payload: Buffer): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new ProtocolError(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`)
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length)
  out[0] = type
  out.writeUInt32BE(payload.length, 1)
  payload.copy(out, HEADER_BYTES)
  return out
}

export function encodeHello(hello: SessionHello): Buffer {
  checkHello(hello)
  return frame(FrameType.HELLO, Buffer.from(JSON.stringify(hello), 'utf8'))
}

export function encodeAccept(accept: SessionAccept): Buffer {
  return frame(FrameType.ACCEPT, Buffer.from(JSON.stringify(accept), 'utf8'))
}

export function encodeRefuse(reason: string): Buffer {
  return frame(FrameType.REFUSE, Buffer.from(reason.slice(0, 4000), 'utf8'))
}

/** Data frames for `data` (cut into DATA_CHUNK pieces). */
export function encodeData(type: typeof FrameType.STDIN | typeof FrameType.STDOUT | typeof FrameType.STDERR, data: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < data.length; i += DATA_CHUNK) out.push(frame(type, data.subarray(i, Math.min(data.length, i + DATA_CHUNK))))
  return out
}

export function encodeEof(stream: number): Buffer {
  return frame(FrameType.EOF, Buffer.from([stream]))
}

export function encodeResize(rows: number, cols: number): Buffer {
  const p = Buffer.alloc(4)
  p.writeUInt16BE(clampWindow(rows), 0)
  p.writeUInt16BE(clampWindow(cols), 2)
  return frame(FrameType.RESIZE, p)
}

export function encodeSignal(signal: SignalName): Buffer {
  return frame(FrameType.SIGNAL, Buffer.from(signal, 'ascii'))
}

export function encodeExit(status: ExitStatus): Buffer {
  if (status.kind === 'exited') return frame(FrameType.EXIT, Buffer.from([0, status.code & 0xff]))
  return frame(FrameType.EXIT, Buffer.concat([Buffer.from([1, status.signal & 0xff]), Buffer.from(status.name.slice(0, 32), 'ascii')]))
}

function clampWindow(n: number): number {
  return Math.max(1, Math.min(LIMITS.maxWindow, Math.round(n) || 1))
}

/** Throws a ProtocolError naming what is wrong with a HELLO (also used before sending one). */
export function checkHello(value: unknown): asserts value is SessionHello {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('HELLO must be a JSON object')
  const h = value as Record<string, unknown>
  if (h.v !== PROTOCOL_VERSION) throw new ProtocolError(`unsupported dsh protocol version ${JSON.stringify(h.v)} (this side speaks ${PROTOCOL_VERSION})`)
  if (typeof h.binary !== 'string' || Buffer.byteLength(h.binary) > LIMITS.binaryBytes || h.binary.includes('\0')) {
    throw new ProtocolError('HELLO.binary must be a string of at most 4096 bytes without NUL')
  }
  if (!Array.isArray(h.args) || h.args.length > LIMITS.args) throw new ProtocolError(`HELLO.args must be a list of at most ${LIMITS.args} strings`)
  let argBytes = 0
  for (const a of h.args) {
    if (typeof a !== 'string' || a.includes('\0')) throw new ProtocolError('HELLO.args must hold strings without NUL')
    argBytes += Buffer.byteLength(a)
  }
  if (argBytes > LIMITS.argBytes) throw new ProtocolError(`HELLO.args hold more than ${LIMITS.argBytes} bytes`)
  if (typeof h.env !== 'object' || h.env === null || Array.isArray(h.env)) throw new ProtocolError('HELLO.env must be an object')
  const env = Object.entries(h.env as Record<string, unknown>)
  if (env.length > LIMITS.envEntries) throw new ProtocolError(`HELLO.env has more than ${LIMITS.envEntries} entries`)
  for (const [k, v] of env) {
    if (!ENV_NAME.test(k) || k.length > LIMITS.envNameBytes) throw new ProtocolError(`HELLO.env: "${k.slice(0, 64)}" is not a variable name`)
    if (typeof v !== 'string' || v.includes('\0') || Buffer.byteLength(v) > LIMITS.envValueBytes) throw new ProtocolError(`HELLO.env.${k} must be a string without NUL`)
  }
  if (h.pty !== null) {
    if (typeof h.pty !== 'object' || Array.isArray(h.pty)) throw new ProtocolError('HELLO.pty must be null or {term, rows, cols}')
    const p = h.pty as Record<string, unknown>
    if (typeof p.term !== 'string' || p.term.length > LIMITS.termBytes || !TERM_NAME.test(p.term)) throw new ProtocolError('HELLO.pty.term must be a terminal name')
    for (const k of ['rows', 'cols'] as const) {
      const n = p[k]
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > LIMITS.maxWindow) throw new ProtocolError(`HELLO.pty.${k} must be an integer from 1 to ${LIMITS.maxWindow}`)
    }
  }
}

function parseJson(payload: Buffer, what: string): unknown {
  try {
    return JSON.parse(payload.toString('utf8'))
  } catch {
    throw new ProtocolError(`${what} is not valid JSON`)
  }
}

function parsePayload(type: number, payload: Buffer): Frame {
  switch (type) {
    case FrameType.HELLO: {
      const hello = parseJson(payload, 'HELLO')
      checkHello(hello)
      const h = hello
      // copy only the known fields: nothing else from the peer travels further
      return {
        type,
        hello: {
          v: h.v,
          binary: h.binary,
          args: [...h.args],
          env: Object.fromEntries(Object.entries(h.env)),
          pty: h.pty ? { term: h.pty.term, rows: h.pty.rows, cols: h.pty.cols } : null,
        },
      }
    }
    case FrameType.ACCEPT: {
      const a = parseJson(payload, 'ACCEPT') as Record<string, unknown> | null
      if (typeof a !== 'object' || a === null || typeof a.pid !== 'number' || !Number.isInteger(a.pid)) throw new ProtocolError('ACCEPT must be {v, pid, ignoredEnv}')
      const ignored = Array.isArray(a.ignoredEnv) ? a.ignoredEnv.filter((x): x is string => typeof x === 'string').slice(0, LIMITS.envEntries) : []
      return { type, accept: { v: typeof a.v === 'number' ? a.v : 0, pid: a.pid, ignoredEnv: ignored.map((s) => s.slice(0, LIMITS.envNameBytes)) } }
    }
    case FrameType.REFUSE:
      return { type, reason: payload.toString('utf8') }
    case FrameType.STDIN:
    case FrameType.STDOUT:
    case FrameType.STDERR:
      return { type, data: payload }
    case FrameType.EOF:
      if (payload.length !== 1 || payload[0]! > 2) throw new ProtocolError('EOF must name stream 0, 1 or 2')
      return { type, stream: payload[0]! }
    case FrameType.RESIZE:
      if (payload.length !== 4) throw new ProtocolError('RESIZE must be 4 bytes')
      return { type, rows: clampWindow(payload.readUInt16BE(0)), cols: clampWindow(payload.readUInt16BE(2)) }
    case FrameType.SIGNAL: {
      const name = payload.toString('latin1')
      if (!(SIGNALS as readonly string[]).includes(name)) throw new ProtocolError(`SIGNAL: "${name.slice(0, 16)}" is not a signal a client may send`)
      return { type, signal: name as SignalName }
    }
    case FrameType.EXIT: {
      if (payload.length < 2 || payload.length > 2 + 32) throw new ProtocolError('EXIT must be 2 to 34 bytes')
      if (payload[0] === 0 && payload.length === 2) return { type, status: { kind: 'exited', code: payload[1]! } }
      if (payload[0] === 1) {
        const name = payload.subarray(2).toString('latin1')
        if (!/^[A-Z0-9]*$/.test(name)) throw new ProtocolError('EXIT: bad signal name')
        return { type, status: { kind: 'signal', signal: payload[1]!, name } }
      }
      throw new ProtocolError('EXIT: unknown kind')
    }
    default:
      throw new ProtocolError(`unknown frame type ${type}`)
  }
}

/**
 * Incremental decoder: push() bytes as they come, get whole frames back. Holds at most one frame (64 KiB + 5).
 * Throws ProtocolError on the first malformed frame; the caller then closes the channel.
 */
export class FrameDecoder {
  private buffered: Buffer[] = []
  private bufferedBytes = 0
  private failed = false

  /** Bytes received but not yet part of a whole frame. */
  get pendingBytes(): number {
    return this.bufferedBytes
  }

  push(chunk: Buffer): Frame[] {
    if (this.failed) throw new ProtocolError('decoder already failed')
    this.buffered.push(chunk)
    this.bufferedBytes += chunk.length
    const frames: Frame[] = []
    try {
      for (;;) {
        if (this.bufferedBytes < HEADER_BYTES) break
        const head = this.peek(HEADER_BYTES)
        const type = head[0]!
        const length = head.readUInt32BE(1)
        if (type < FrameType.HELLO || type > FrameType.EXIT) throw new ProtocolError(`unknown frame type ${type}`)
        if (length > MAX_PAYLOAD) throw new ProtocolError(`frame of ${length} bytes exceeds ${MAX_PAYLOAD}`)
        if (this.bufferedBytes < HEADER_BYTES + length) break
        const whole = this.take(HEADER_BYTES + length)
        frames.push(parsePayload(type, whole.subarray(HEADER_BYTES)))
      }
    } catch (err) {
      this.failed = true
      this.buffered = []
      this.bufferedBytes = 0
      throw err
    }
    return frames
  }

  private peek(n: number): Buffer {
    if (this.buffered[0]!.length >= n) return this.buffered[0]!.subarray(0, n)
    const all = Buffer.concat(this.buffered)
    this.buffered = [all]
    return all.subarray(0, n)
  }

  private take(n: number): Buffer {
    const all = this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered)
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    this.buffered = rest.length > 0 ? [rest] : []
    this.bufferedBytes = rest.length
    return out
  }
}
