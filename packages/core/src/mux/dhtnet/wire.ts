/**
 * DHTNet's MultiplexedSocket v1 on the wire (dhtnet-core.md §4): constants, the encoders of the few msgpack shapes
 * it uses, and a msgpack header reader shared by the incremental frame decoder and the control-message parser.
 *
 * Every encoding is msgpack-c's smallest form, so our bytes are those of the C++ peer:
 *   frame            92 <channel uint> <data bin8|bin16>
 *   channel request  93 <name str> <id uint> <state uint>      (REQUEST 0, ACCEPT 1, DECLINE 2)
 *   version          81 a1 76 01                               {"v": 1}
 *   beacon           81 a1 70 c3 / 81 a1 70 c2                 {"p": true} ping / {"p": false} pong
 */

export const CONTROL_CHANNEL = 0
export const PROTOCOL_CHANNEL = 0xffff
export const MULTIPLEXED_SOCKET_VERSION = 1
/** Largest data of one frame (C++ refuses to write more, and splits channel writes at this size). */
export const MAX_FRAME_DATA = 0xffff
/** Largest frame header: fixarray + uint16 channel + bin16 length. */
export const MAX_FRAME_HEADER = 7
/** First id each side allocates: the connectDevice caller (TLS server) from 0x8000, the other side from 0x0001. */
export const INITIATOR_FIRST_CHANNEL = 0x8000
export const RESPONDER_FIRST_CHANNEL = 0x0001

export const RequestState = { REQUEST: 0, ACCEPT: 1, DECLINE: 2 } as const

export const VERSION_MESSAGE = Buffer.from([0x81, 0xa1, 0x76, MULTIPLEXED_SOCKET_VERSION])
export const BEACON_PING = Buffer.from([0x81, 0xa1, 0x70, 0xc3])
export const BEACON_PONG = Buffer.from([0x81, 0xa1, 0x70, 0xc2])

/** Bytes of a msgpack unsigned integer in its smallest form (values up to 0xffff here). */
function uintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x100 ? 2 : 3
}

function writeUint(buf: Buffer, off: number, v: number): number {
  if (v < 0x80) {
    buf[off] = v
    return off + 1
  }
  if (v < 0x100) {
    buf[off] = 0xcc
    buf[off + 1] = v
    return off + 2
  }
  buf[off] = 0xcd
  buf.writeUInt16BE(v, off + 1)
  return off + 3
}

export function frameHeaderSize(channel: number, length: number): number {
  return 1 + uintSize(channel) + (length < 0x100 ? 2 : 3)
}

/** Write `92 <channel> <bin header>` at `off`; returns the offset after it. `length` ≤ 65535. */
export function writeFrameHeader(buf: Buffer, off: number, channel: number, length: number): number {
  buf[off] = 0x92
  off = writeUint(buf, off + 1, channel)
  if (length < 0x100) {
    buf[off] = 0xc4
    buf[off + 1] = length
    return off + 2
  }
  buf[off] = 0xc5
  buf.writeUInt16BE(length, off + 1)
  return off + 3
}

export function encodeFrameHeader(channel: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(frameHeaderSize(channel, length))
  writeFrameHeader(buf, 0, channel, length)
  return buf
}

/** One whole frame (header and data in one buffer). */
export function encodeFrame(channel: number, data: Uint8Array = EMPTY): Buffer {
  if (data.length > MAX_FRAME_DATA) throw new RangeError(`frame data of ${data.length} bytes exceeds ${MAX_FRAME_DATA}`)
  const header = frameHeaderSize(channel, data.length)
  const buf = Buffer.allocUnsafe(header + data.length)
  writeFrameHeader(buf, 0, channel, data.length)
  buf.set(data, header)
  return buf
}

const EMPTY = Buffer.alloc(0)

/** The body of a ChannelRequest `[name, id, state]` (name as msgpack str, as std::string is packed). */
export function encodeChannelRequest(name: Uint8Array, id: number, state: number): Buffer {
  const n = name.length
  const strHeader = n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5
  const buf = Buffer.allocUnsafe(1 + strHeader + n + uintSize(id) + 1)
  let off = 0
  buf[off++] = 0x93
  if (n < 32) buf[off++] = 0xa0 | n
  else if (n < 0x100) {
    buf[off++] = 0xd9
    buf[off++] = n
  } else if (n < 0x10000) {
    buf[off++] = 0xda
    buf.writeUInt16BE(n, off)
    off += 2
  } else {
    buf[off++] = 0xdb
    buf.writeUInt32BE(n, off)
    off += 4
  }
  buf.set(name, off)
  off = writeUint(buf, off + n, id)
  buf[off] = state // 0..2: positive fixint
  return buf
}

// ---- reading ----------------------------------------------------------------------------------------------------

/** Kinds of msgpack objects, as far as this protocol cares. */
export const Kind = {
  UINT: 0,
  INT: 1, // negative fixint, int8..int64 (value is the signed number)
  NIL: 2,
  BOOL: 3, // value 0 or 1
  FLOAT: 4,
  STR: 5, // value: payload length
  BIN: 6, // value: payload length
  EXT: 7, // value: payload length (the type byte is part of the header)
  ARRAY: 8, // value: element count
  MAP: 9, // value: entry count
} as const

/** What `readHeader` found. Reused across calls (no allocation per object). */
export interface MsgHeader {
  kind: number
  value: number
}

/** Bytes after the marker byte for the fixed-size formats 0xc0..0xdf (−1: the never-used 0xc1). */
const EXTRA_BYTES: readonly number[] = [
  0,
  -1,
  0,
  0, // c0 nil, c1 never used, c2 false, c3 true
  1,
  2,
  4, // c4..c6 bin8/16/32 length
  2,
  3,
  5, // c7..c9 ext8/16/32 length + type
  4,
  8, // ca, cb float32/64
  1,
  2,
  4,
  8, // cc..cf uint8..64
  1,
  2,
  4,
  8, // d0..d3 int8..64
  1,
  1,
  1,
  1,
  1, // d4..d8 fixext 1..16: type byte
  1,
  2,
  4, // d9..db str8/16/32 length
  2,
  4, // dc, dd array16/32
  2,
  4, // de, df map16/32
]

/**
 * Read the header of the msgpack object at `off`. Returns the header's length in bytes (scalars are all header),
 * 0 when more bytes are needed, −1 for the byte 0xc1 (never valid: the stream cannot be resynchronised).
 * A header is at most 9 bytes.
 */
export function readHeader(buf: Uint8Array, off: number, out: MsgHeader): number {
  const avail = buf.length - off
  if (avail < 1) return 0
  const b = buf[off]!
  if (b < 0x80) {
    out.kind = Kind.UINT
    out.value = b
    return 1
  }
  if (b < 0x90) {
    out.kind = Kind.MAP
    out.value = b & 0x0f
    return 1
  }
  if (b < 0xa0) {
    out.kind = Kind.ARRAY
    out.value = b & 0x0f
    return 1
  }
  if (b < 0xc0) {
    out.kind = Kind.STR
    out.value = b & 0x1f
    return 1
  }
  if (b >= 0xe0) {
    out.kind = Kind.INT
    out.value = b - 0x100
    return 1
  }
  const extra = EXTRA_BYTES[b - 0xc0]!
  if (extra < 0) return -1
  if (avail < 1 + extra) return 0
  const p = off + 1
  switch (b) {
    case 0xc0:
      out.kind = Kind.NIL
      out.value = 0
      break
    case 0xc2:
    case 0xc3:
      out.kind = Kind.BOOL
      out.value = b - 0xc2
      break
    case 0xc4:
    case 0xc5:
    case 0xc6:
      out.kind = Kind.BIN
      out.value = readUintBE(buf, p, extra)
      break
    case 0xc7:
    case 0xc8:
    case 0xc9:
      out.kind = Kind.EXT
      out.value = readUintBE(buf, p, extra - 1)
      break
    case 0xca:
    case 0xcb:
      out.kind = Kind.FLOAT
      out.value = 0
      break
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
      out.kind = Kind.UINT
      out.value = readUintBE(buf, p, extra)
      break
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
      out.kind = Kind.INT
      const u = readUintBE(buf, p, extra)
      const bits = extra * 8
      // two's complement; for int64 an approximation is enough (only small values matter to us)
      out.value = extra < 8 ? (u >= 2 ** (bits - 1) ? u - 2 ** bits : u) : u >= 2 ** 63 ? u - 2 ** 64 : u
      break
    }
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
      out.kind = Kind.EXT
      out.value = 1 << (b - 0xd4)
      break
    case 0xd9:
    case 0xda:
    case 0xdb:
      out.kind = Kind.STR
      out.value = readUintBE(buf, p, extra)
      break
    case 0xdc:
    case 0xdd:
      out.kind = Kind.ARRAY
      out.value = readUintBE(buf, p, extra)
      break
    default: // 0xde, 0xdf
      out.kind = Kind.MAP
      out.value = readUintBE(buf, p, extra)
      break
  }
  return 1 + extra
}

function readUintBE(buf: Uint8Array, off: number, n: number): number {
  let v = 0
  for (let i = 0; i < n; i++) v = v * 256 + buf[off + i]!
  return v
}

/** Payload bytes following a header (str, bin, ext). */
export function payloadBytes(h: MsgHeader): number {
  return h.kind === Kind.STR || h.kind === Kind.BIN || h.kind === Kind.EXT ? h.value : 0
}

/** Nested objects following a header (array elements, map keys and values). */
export function childObjects(h: MsgHeader): number {
  return h.kind === Kind.ARRAY ? h.value : h.kind === Kind.MAP ? 2 * h.value : 0
}
