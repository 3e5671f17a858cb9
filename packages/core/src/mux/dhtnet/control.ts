/**
 * The bodies of control frames (channel 0) and protocol frames (channel 0xffff), parsed as DHTNet does
 * (multiplexed_socket.cpp handleControlPacket / handleProtocolPacket / handleProtocolMsg):
 * - a body holds one or more msgpack objects, read in turn;
 * - a non-empty map is a protocol message, dispatched by its first key: "p" (beacon, bool), "v" (version, uint);
 * - on channel 0 any other object must be a ChannelRequest `[name, id, state]`; the first one that is not ends the
 *   body (C++ throws there);
 * - on channel 0xffff only the first protocol message of a body is handled; other objects are skipped.
 * The body is complete and at most 65535 bytes: parsing is bounded, and nothing is allocated per element.
 */
import { CONTROL_CHANNEL, PROTOCOL_CHANNEL, Kind, childObjects, payloadBytes, readHeader, type MsgHeader } from './wire.js'

export interface ControlHandler {
  version(v: number): void
  beacon(ping: boolean): void
  /** A ChannelRequest; `name` is a view of the body (the raw bytes, echoed back in the answer). */
  request(name: Buffer, id: number, state: number): void
  /** An object was not understood and was skipped (C++ logs these). */
  ignored(reason: string): void
}

class BodyReader {
  off = 0
  readonly h: MsgHeader = { kind: 0, value: 0 }
  constructor(private readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.off
  }

  /** Read the next object's header; false when truncated or invalid. */
  header(): boolean {
    const n = readHeader(this.buf, this.off, this.h)
    if (n <= 0) return false
    this.off += n
    return true
  }

  /** The payload of the header just read (str, bin, ext). */
  payload(): Buffer | undefined {
    const n = payloadBytes(this.h)
    if (n > this.remaining) return undefined
    const out = this.buf.subarray(this.off, this.off + n)
    this.off += n
    return out
  }

  /** Skip the payload and the nested objects of the header just read. */
  skipRest(): boolean {
    let bytes = payloadBytes(this.h)
    let objects = childObjects(this.h)
    for (;;) {
      if (bytes > this.remaining) return false
      this.off += bytes
      if (objects === 0) return true
      // every nested object takes at least one byte: this also bounds the counter
      if (objects > this.remaining) return false
      objects--
      if (!this.header()) return false
      bytes = payloadBytes(this.h)
      objects += childObjects(this.h)
    }
  }

  skipObject(): boolean {
    return this.header() && this.skipRest()
  }

  /** A str or bin (std::string accepts both). */
  string(): Buffer | undefined {
    if (!this.header() || (this.h.kind !== Kind.STR && this.h.kind !== Kind.BIN)) return undefined
    return this.payload()
  }
}

type ProtocolMessage = { type: 'beacon'; ping: boolean } | { type: 'version'; v: number } | { type: 'bad'; reason: string; consumed: boolean }

/** The map whose header was just read: every key must be a string; the first key names the message. */
function readProtocolMap(r: BodyReader, entries: number): ProtocolMessage {
  let message: ProtocolMessage | undefined
  let badKey = false
  for (let i = 0; i < entries; i++) {
    if (!r.header()) return { type: 'bad', reason: 'truncated protocol message', consumed: false }
    let key: Buffer | undefined
    if (r.h.kind === Kind.STR || r.h.kind === Kind.BIN) key = r.payload()
    else if (!r.skipRest()) return { type: 'bad', reason: 'truncated protocol message', consumed: false }
    if (!key) badKey = true
    if (!r.header()) return { type: 'bad', reason: 'truncated protocol message', consumed: false }
    if (i === 0 && key) {
      const name = key.toString('latin1')
      const { kind, value } = r.h
      if (name === 'p') {
        message = kind === Kind.BOOL ? { type: 'beacon', ping: value === 1 } : { type: 'bad', reason: 'beacon value is not a bool', consumed: true }
      } else if (name === 'v') {
        message = kind === Kind.UINT && value <= 0xffffffff ? { type: 'version', v: value } : { type: 'bad', reason: 'version is not an unsigned int', consumed: true }
      } else {
        message = { type: 'bad', reason: `unknown protocol message "${name.slice(0, 32)}"`, consumed: true }
      }
    }
    if (!r.skipRest()) return { type: 'bad', reason: 'truncated protocol message', consumed: false }
  }
  // msgpack-c reads every key as a string: one that is not fails the whole message
  if (badKey) return { type: 'bad', reason: 'a protocol message key is not a string', consumed: true }
  return message!
}

export function parseControlBody(channel: number, body: Buffer, handler: ControlHandler): void {
  const r = new BodyReader(body)
  while (r.remaining > 0) {
    if (!r.header()) return handler.ignored('truncated or invalid msgpack in a control message')
    const { kind, value } = r.h
    if (kind === Kind.MAP && value > 0) {
      const msg = readProtocolMap(r, value)
      if (msg.type === 'beacon') handler.beacon(msg.ping)
      else if (msg.type === 'version') handler.version(msg.v)
      else {
        handler.ignored(msg.reason)
        // C++: on channel 0 the object is then read as a ChannelRequest, which throws and ends the body
        if (!msg.consumed || channel === CONTROL_CHANNEL) return
        continue
      }
      if (channel === PROTOCOL_CHANNEL) return
      continue
    }
    if (channel !== CONTROL_CHANNEL) {
      handler.ignored('an object on the protocol channel is not a protocol message')
      if (!r.skipRest()) return
      continue
    }
    if (kind !== Kind.ARRAY || value < 3) return handler.ignored('a control message is not a channel request')
    const name = r.string()
    if (!name) return handler.ignored('channel request: the name is not a string')
    if (!r.header() || r.h.kind !== Kind.UINT || r.h.value > 0xffff) return handler.ignored('channel request: bad channel id')
    const id = r.h.value
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- header() read a new header into r.h (TypeScript keeps the narrowing from the id)
    if (!r.header() || (r.h.kind !== Kind.UINT && r.h.kind !== Kind.INT)) return handler.ignored('channel request: bad state')
    const state = r.h.value
    for (let i = 3; i < value; i++) if (!r.skipObject()) return handler.ignored('truncated channel request')
    handler.request(name, id, state)
  }
}
