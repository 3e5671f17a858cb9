/**
 * dvpn's own protocol, version 1, between our client and our server (a C++ DHTNet peer speaks `dvpn://`, see
 * dhtnet-protocol.ts; the channel names differ, so the two never mix).
 *
 * Control: the stream channel `dvpn://v1`. Every message is a frame: type (1 byte), payload length (4 bytes,
 * big-endian), payload; a declared length over the type's bound is a protocol error before any byte of it is held,
 * and the decoder holds at most one frame.
 *
 * | type | name    | direction | payload (bound) |
 * |------|---------|-----------|-----------------|
 * | 1    | HELLO   | c → s     | JSON `{v: 1, token?, ipv4?, datagram, fullTunnel}` (4 KiB) |
 * | 2    | CONFIG  | s → c     | JSON `{v: 1, token, ipv4, server4, ipv6, server6, routes4: [cidr], routes6: [cidr], mtu, masquerade}` (4 KiB) |
 * | 3    | REFUSE  | s → c     | UTF-8 reason (1 KiB); the server then ends the channel |
 * | 4    | PACKET  | both      | one IP packet (65535): the data path when there is no datagram channel |
 * | 5    | PING    | c → s     | 8 bytes, echoed in PONG |
 * | 6    | PONG    | s → c     | the PING's 8 bytes |
 *
 * The client sends HELLO first and nothing else until CONFIG or REFUSE. `token` names the lease of an earlier session
 * (reconnection: same addresses); `ipv4`, the address it had, is given back when its lease is gone but nobody took it. After CONFIG the client opens the datagram channel `dvpn://v1/data/<token>`
 * (when `datagram`), whose datagrams are whole IP packets back to back (packets.ts), or sends PACKET frames.
 */
import { isIPv4, isIPv6 } from 'node:net'

export const CONTROL_CHANNEL = 'dvpn://v1'
export const DATA_CHANNEL_PREFIX = 'dvpn://v1/data/'
export const PROTOCOL_VERSION = 1

export const FrameType = {
  HELLO: 1,
  CONFIG: 2,
  REFUSE: 3,
  PACKET: 4,
  PING: 5,
  PONG: 6,
} as const
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType]

export const HEADER_BYTES = 5
export const LIMITS = {
  helloBytes: 4096,
  configBytes: 4096,
  reasonBytes: 1024,
  packetBytes: 65535,
  pingBytes: 8,
  routes: 64,
  tokenChars: 64,
} as const

const MAX_PAYLOAD: Record<FrameTypeValue, number> = {
  [FrameType.HELLO]: LIMITS.helloBytes,
  [FrameType.CONFIG]: LIMITS.configBytes,
  [FrameType.REFUSE]: LIMITS.reasonBytes,
  [FrameType.PACKET]: LIMITS.packetBytes,
  [FrameType.PING]: LIMITS.pingBytes,
  [FrameType.PONG]: LIMITS.pingBytes,
}

export interface Hello {
  readonly v: number
  /** The lease of an earlier session (reconnection). */
  readonly token?: string
  /** The IPv4 address the client had (a hint: its lease may have expired). */
  readonly ipv4?: string
  /** The client will send its packets on a datagram channel. */
  readonly datagram: boolean
  readonly fullTunnel: boolean
}

export interface Config {
  readonly v: number
  readonly token: string
  readonly ipv4: string
  readonly server4: string
  readonly ipv6: string
  readonly server6: string
  /** What the client routes through the VPN in split-tunnel mode (CIDR). */
  readonly routes4: readonly string[]
  readonly routes6: readonly string[]
  readonly mtu: number
  /** The server forwards and masquerades: a full tunnel reaches beyond it. */
  readonly masquerade: boolean
}

export type Frame =
  | { type: typeof FrameType.HELLO; hello: Hello }
  | { type: typeof FrameType.CONFIG; config: Config }
  | { type: typeof FrameType.REFUSE; reason: string }
  | { type: typeof FrameType.PACKET; packet: Buffer }
  | { type: typeof FrameType.PING | typeof FrameType.PONG; nonce: Buffer }

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ProtocolError'
  }
}

export const MIN_MTU = 576

function frame(type: FrameTypeValue, payload: Uint8Array): Buffer {
  if (payload.length > MAX_PAYLOAD[type]) throw new ProtocolError(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD[type]}`)
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length)
  out[0] = type
  out.writeUInt32BE(payload.length, 1)
  out.set(payload, HEADER_BYTES)
  return out
}

export function encodeHello(hello: Omit<Hello, 'v'>): Buffer {
  return frame(FrameType.HELLO, Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, ...hello })))
}

export function encodeConfig(config: Omit<Config, 'v'>): Buffer {
  return frame(FrameType.CONFIG, Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, ...config })))
}

export function encodeRefuse(reason: string): Buffer {
  let bytes = Buffer.from(reason, 'utf8')
  if (bytes.length > LIMITS.reasonBytes) bytes = bytes.subarray(0, LIMITS.reasonBytes)
  return frame(FrameType.REFUSE, bytes)
}

/** The header of a PACKET frame, written before the packet itself (no copy of the packet). */
export function packetHeader(length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES)
  h[0] = FrameType.PACKET
  h.writeUInt32BE(length, 1)
  return h
}

export function encodePacket(packet: Uint8Array): Buffer {
  return frame(FrameType.PACKET, packet)
}

export function encodePing(type: typeof FrameType.PING | typeof FrameType.PONG, nonce: Uint8Array): Buffer {
  if (nonce.length !== LIMITS.pingBytes) throw new ProtocolError(`a ping carries ${LIMITS.pingBytes} bytes`)
  return frame(type, nonce)
}

// --- payload validation --------------------------------------------------------------------------------------------

const TOKEN = /^[0-9a-f]{1,64}$/
const CIDR4 = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/
const CIDR6 = /^[0-9a-f:.]{2,45}\/\d{1,3}$/i

function json(payload: Buffer, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(payload.toString('utf8'))
  } catch {
    throw new ProtocolError(`${what} is not JSON`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError(`${what} is not a JSON object`)
  return value as Record<string, unknown>
}

function version(o: Record<string, unknown>, what: string): number {
  const v = o.v
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 255) throw new ProtocolError(`${what}: bad version ${JSON.stringify(v)}`)
  return v
}

function mtu(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < MIN_MTU || v > LIMITS.packetBytes) throw new ProtocolError(`${what}: mtu must be ${MIN_MTU}..${LIMITS.packetBytes}`)
  return v
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw new ProtocolError(`${what} must be true or false`)
  return v
}

function str(v: unknown, pattern: RegExp, what: string): string {
  if (typeof v !== 'string' || !pattern.test(v)) throw new ProtocolError(`${what} is malformed`)
  return v
}

function ip4(v: unknown, what: string): string {
  if (typeof v !== 'string' || !isIPv4(v)) throw new ProtocolError(`${what} is malformed`)
  return v
}

function ip6(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length > 45 || !isIPv6(v)) throw new ProtocolError(`${what} is malformed`)
  return v
}

function list(v: unknown, pattern: RegExp, what: string): string[] {
  if (!Array.isArray(v) || v.length > LIMITS.routes) throw new ProtocolError(`${what} must be a list of at most ${LIMITS.routes}`)
  return v.map((x, i) => str(x, pattern, `${what}[${i}]`))
}

export function parseHello(payload: Buffer): Hello {
  const o = json(payload, 'HELLO')
  const v = version(o, 'HELLO')
  const token = o.token === undefined || o.token === null ? undefined : str(o.token, TOKEN, 'HELLO token')
  const ipv4 = o.ipv4 === undefined || o.ipv4 === null ? undefined : ip4(o.ipv4, 'HELLO ipv4')
  return { v, ...(token ? { token } : {}), ...(ipv4 ? { ipv4 } : {}), datagram: bool(o.datagram, 'HELLO datagram'), fullTunnel: bool(o.fullTunnel, 'HELLO fullTunnel') }
}

export function parseConfig(payload: Buffer): Config {
  const o = json(payload, 'CONFIG')
  const v = version(o, 'CONFIG')
  if (v !== PROTOCOL_VERSION) throw new ProtocolError(`CONFIG of version ${v}: this client speaks version ${PROTOCOL_VERSION}`)
  return {
    v,
    token: str(o.token, TOKEN, 'CONFIG token'),
    ipv4: ip4(o.ipv4, 'CONFIG ipv4'),
    server4: ip4(o.server4, 'CONFIG server4'),
    ipv6: ip6(o.ipv6, 'CONFIG ipv6'),
    server6: ip6(o.server6, 'CONFIG server6'),
    routes4: list(o.routes4, CIDR4, 'CONFIG routes4'),
    routes6: list(o.routes6, CIDR6, 'CONFIG routes6'),
    mtu: mtu(o.mtu, 'CONFIG'),
    masquerade: bool(o.masquerade, 'CONFIG masquerade'),
  }
}

// --- incremental decoder -------------------------------------------------------------------------------------------

/**
 * Frames out of a byte stream, whatever its chunking. Holds at most one frame (≤ 64 KiB + header); a frame inside one
 * chunk is handed on as a view of it. Throws ProtocolError on an unknown type, an over-long length or a malformed
 * HELLO/CONFIG; after that the decoder refuses everything (the channel must be closed).
 */
export class FrameDecoder {
  private header = Buffer.alloc(HEADER_BYTES)
  private headerFilled = 0
  private type: FrameTypeValue | 0 = 0
  private body: Buffer | undefined
  private bodyFilled = 0
  private failed = false

  constructor(private readonly onFrame: (frame: Frame) => void) {}

  push(chunk: Buffer): void {
    if (this.failed) throw new ProtocolError('the stream is no longer readable after a protocol error')
    try {
      this.consume(chunk)
    } catch (err) {
      this.failed = true
      throw err
    }
  }

  private consume(chunk: Buffer): void {
    let off = 0
    while (off < chunk.length) {
      if (this.type === 0) {
        // fast path: a whole frame inside the chunk, handed on as a view
        if (this.headerFilled === 0 && chunk.length - off >= HEADER_BYTES) {
          const type = this.checkType(chunk[off]!)
          const length = this.checkLength(type, chunk.readUInt32BE(off + 1))
          if (chunk.length - off - HEADER_BYTES >= length) {
            const payload = chunk.subarray(off + HEADER_BYTES, off + HEADER_BYTES + length)
            off += HEADER_BYTES + length
            this.deliver(type, payload)
            continue
          }
        }
        const n = Math.min(HEADER_BYTES - this.headerFilled, chunk.length - off)
        chunk.copy(this.header, this.headerFilled, off, off + n)
        this.headerFilled += n
        off += n
        if (this.headerFilled < HEADER_BYTES) return
        this.headerFilled = 0
        const type = this.checkType(this.header[0]!)
        const length = this.checkLength(type, this.header.readUInt32BE(1))
        this.type = type
        this.body = Buffer.allocUnsafe(length)
        this.bodyFilled = 0
      }
      const body = this.body!
      const n = Math.min(body.length - this.bodyFilled, chunk.length - off)
      chunk.copy(body, this.bodyFilled, off, off + n)
      this.bodyFilled += n
      off += n
      if (this.bodyFilled === body.length) {
        const type = this.type
        this.type = 0
        this.body = undefined
        this.deliver(type, body)
      }
    }
  }

  private checkType(t: number): FrameTypeValue {
    if (t < FrameType.HELLO || t > FrameType.PONG) throw new ProtocolError(`unknown frame type ${t}`)
    return t as FrameTypeValue
  }

  private checkLength(type: FrameTypeValue, length: number): number {
    const max = MAX_PAYLOAD[type]
    if (length > max) throw new ProtocolError(`frame of type ${type} declares ${length} bytes (the most is ${max})`)
    if ((type === FrameType.PING || type === FrameType.PONG) && length !== LIMITS.pingBytes)
      throw new ProtocolError(`a ping or pong carries ${LIMITS.pingBytes} bytes, not ${length}`)
    return length
  }

  private deliver(type: FrameTypeValue, payload: Buffer): void {
    switch (type) {
      case FrameType.HELLO:
        return this.onFrame({ type, hello: parseHello(payload) })
      case FrameType.CONFIG:
        return this.onFrame({ type, config: parseConfig(payload) })
      case FrameType.REFUSE:
        return this.onFrame({ type, reason: payload.toString('utf8') })
      case FrameType.PACKET:
        return this.onFrame({ type, packet: payload })
      default:
        return this.onFrame({ type, nonce: payload })
    }
  }
}
