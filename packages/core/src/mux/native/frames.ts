/**
 * Wire format of the multiplexer (see README.md in this folder).
 * Every transport message is exactly one frame: [type: u8][channel id: u32 big-endian][body].
 */

export const MUX_PROTOCOL_VERSION = 1
export const FRAME_HEADER_BYTES = 5
/** Longest channel name, in UTF-8 bytes. */
export const MAX_CHANNEL_NAME_BYTES = 4096
/** Reasons (DECLINE, RESET, GOAWAY) are cut to this many bytes on the wire. */
export const MAX_REASON_BYTES = 1024

export const FrameType = {
  HELLO: 0x00,
  OPEN: 0x01,
  ACCEPT: 0x02,
  DECLINE: 0x03,
  DATA: 0x04,
  WINDOW: 0x05,
  EOF: 0x06,
  RESET: 0x07,
  PING: 0x08,
  PONG: 0x09,
  GOAWAY: 0x0a,
  DGRAM: 0x0b,
} as const
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType]

export const ChannelKindCode = { stream: 0, datagram: 1 } as const
export type ChannelKind = keyof typeof ChannelKindCode

/** HELLO flags. */
export const HELLO_FLAG_DATAGRAM_TRANSPORT = 0x01
/** The HELLO carries the sender's connection receive window (u32 after the flags). */
export const HELLO_FLAG_CONNECTION_WINDOW = 0x02
/** PING and PONG bodies: a u32 nonce, nothing more. */
export const PING_BODY_BYTES = 4

function header(type: number, channelId: number, bodyBytes: number): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + bodyBytes)
  buf[0] = type
  buf.writeUInt32BE(channelId, 1)
  return buf
}

/** A frame with an optional raw body (copied). */
export function encodeFrame(type: FrameTypeCode, channelId: number, body?: Uint8Array, bodyStart = 0, bodyEnd?: number): Buffer {
  if (body === undefined) return header(type, channelId, 0)
  const end = bodyEnd ?? body.length
  const buf = header(type, channelId, end - bodyStart)
  buf.set(body.subarray(bodyStart, end), FRAME_HEADER_BYTES)
  return buf
}

export function encodeHello(version: number, flags: number, connectionWindow?: number): Buffer {
  const withWindow = connectionWindow !== undefined
  const buf = header(FrameType.HELLO, 0, withWindow ? 6 : 2)
  buf[5] = version
  buf[6] = withWindow ? flags | HELLO_FLAG_CONNECTION_WINDOW : flags
  if (withWindow) buf.writeUInt32BE(connectionWindow, 7)
  return buf
}

export function encodeOpen(channelId: number, kind: ChannelKind, window: number, name: Buffer): Buffer {
  const buf = header(FrameType.OPEN, channelId, 5 + name.length)
  buf[5] = ChannelKindCode[kind]
  buf.writeUInt32BE(window, 6)
  name.copy(buf, 10)
  return buf
}

export function encodeAccept(channelId: number, window: number): Buffer {
  const buf = header(FrameType.ACCEPT, channelId, 4)
  buf.writeUInt32BE(window, 5)
  return buf
}

export function encodeWindow(channelId: number, credit: number): Buffer {
  const buf = header(FrameType.WINDOW, channelId, 4)
  buf.writeUInt32BE(credit, 5)
  return buf
}

/** DECLINE, RESET and GOAWAY carry a UTF-8 reason. */
export function encodeReason(type: FrameTypeCode, channelId: number, reason: string): Buffer {
  let bytes = Buffer.from(reason, 'utf8')
  if (bytes.length > MAX_REASON_BYTES) bytes = bytes.subarray(0, MAX_REASON_BYTES)
  return encodeFrame(type, channelId, bytes)
}

export function encodePing(type: typeof FrameType.PING | typeof FrameType.PONG, nonce: number): Buffer {
  const buf = header(type, 0, 4)
  buf.writeUInt32BE(nonce >>> 0, 5)
  return buf
}
