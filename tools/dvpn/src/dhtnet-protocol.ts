/**
 * DHTNet's dvpn protocol (C++ tools/dvpn, reference dhtnet-tools.md §3, capture dhtnet-captures/dvpn.md), spoken with
 * a C++ DHTNet device: the channel `dvpn://`; its first message, server → client, is a msgpack map (MSGPACK_DEFINE_MAP
 * of `MetaData`) `{addrClient, addrServer, addrClientIpv6, addrServerIpv6}`, all strings, in that key order; after it,
 * every channel message is one raw IP packet, both ways (no header, no other handshake).
 *
 * The IPv6 fields are swapped in practice: DHTNet's server and client call their up-script with the IPv6 arguments in
 * the other order than the IPv4 ones (`$6 tun_address_ipv6` is addrServerIpv6 on the client and ip_peer_address_ipv6
 * on the server), so a C++ client puts **addrServerIpv6** on its own interface and the C++ server puts **addrClientIpv6**
 * (capture: server `fd00:0:0:2::0` local, client `fd00:0:0:1::0` local). We follow what the C++ peers do, not the
 * names: `metadataFor` and `addressesFrom` translate.
 */

export const DHTNET_CHANNEL = 'dvpn://'

export interface DhtnetMetadata {
  readonly addrClient: string
  readonly addrServer: string
  readonly addrClientIpv6: string
  readonly addrServerIpv6: string
}

/** What each end puts on its interface. */
export interface TunnelAddresses {
  readonly client4: string
  readonly server4: string
  readonly client6: string
  readonly server6: string
}

const KEYS = ['addrClient', 'addrServer', 'addrClientIpv6', 'addrServerIpv6'] as const

/** The largest metadata message we accept or write (the captured one is 103 bytes). */
export const MAX_METADATA_BYTES = 4096
const MAX_STRING = 255

/** The map a C++ client needs to end up with `addresses` (IPv6 swapped, see above). */
export function metadataFor(addresses: TunnelAddresses): DhtnetMetadata {
  return { addrClient: addresses.client4, addrServer: addresses.server4, addrClientIpv6: addresses.server6, addrServerIpv6: addresses.client6 }
}

/** What a C++ server's map means for each end (IPv6 swapped, see above). */
export function addressesFrom(m: DhtnetMetadata): TunnelAddresses {
  return { client4: m.addrClient, server4: m.addrServer, client6: m.addrServerIpv6, server6: m.addrClientIpv6 }
}

function writeStr(out: number[], s: string): void {
  const b = Buffer.from(s, 'utf8')
  if (b.length > MAX_STRING) throw new Error(`metadata string of ${b.length} bytes`)
  if (b.length < 32) out.push(0xa0 | b.length)
  else out.push(0xd9, b.length)
  for (const x of b) out.push(x)
}

/** The map as msgpack-c packs it: fixmap(4), keys in MetaData's order, str values (fixstr/str8). */
export function encodeMetadata(m: DhtnetMetadata): Buffer {
  const out: number[] = [0x84]
  for (const k of KEYS) {
    writeStr(out, k)
    writeStr(out, m[k])
  }
  return Buffer.from(out)
}

export class MetadataError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'MetadataError'
  }
}

/** Thrown (internally) when the bytes end before the object does. */
const INCOMPLETE = new Error('incomplete message') // a sentinel, compared by identity

class Reader {
  off = 0
  constructor(private readonly b: Buffer) {}
  need(n: number): void {
    if (this.off + n > this.b.length) throw INCOMPLETE
  }
  u8(): number {
    this.need(1)
    return this.b[this.off++]!
  }
  u16(): number {
    this.need(2)
    const v = this.b.readUInt16BE(this.off)
    this.off += 2
    return v
  }
  u32(): number {
    this.need(4)
    const v = this.b.readUInt32BE(this.off)
    this.off += 4
    return v
  }
  bytes(n: number): Buffer {
    this.need(n)
    const v = this.b.subarray(this.off, this.off + n)
    this.off += n
    return v
  }
}

/** A str or bin (msgpack-c converts both to std::string), or undefined for another type (already consumed). */
function readStringish(r: Reader, depth: number): string | undefined {
  const t = r.u8()
  if ((t & 0xe0) === 0xa0) return r.bytes(t & 0x1f).toString('utf8')
  if (t === 0xd9 || t === 0xc4) return r.bytes(r.u8()).toString('utf8')
  if (t === 0xda || t === 0xc5) return r.bytes(r.u16()).toString('utf8')
  if (t === 0xdb || t === 0xc6) return r.bytes(r.u32()).toString('utf8')
  r.off--
  skip(r, depth)
  return undefined
}

/** Skip one object (bounded: the reader never goes past the buffer, nesting at most 8 deep). */
function skip(r: Reader, depth: number): void {
  if (depth > 8) throw new MetadataError('metadata nested too deep')
  const t = r.u8()
  if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) return
  if ((t & 0xe0) === 0xa0) return void r.bytes(t & 0x1f)
  if ((t & 0xf0) === 0x90) {
    for (let i = 0, n = t & 0x0f; i < n; i++) skip(r, depth + 1)
    return
  }
  if ((t & 0xf0) === 0x80) {
    for (let i = 0, n = (t & 0x0f) * 2; i < n; i++) skip(r, depth + 1)
    return
  }
  switch (t) {
    case 0xcc:
    case 0xd0:
      return void r.bytes(1)
    case 0xcd:
    case 0xd1:
      return void r.bytes(2)
    case 0xca:
    case 0xce:
    case 0xd2:
      return void r.bytes(4)
    case 0xcb:
    case 0xcf:
    case 0xd3:
      return void r.bytes(8)
    case 0xd9:
    case 0xc4:
      return void r.bytes(r.u8())
    case 0xda:
    case 0xc5:
      return void r.bytes(r.u16())
    case 0xdb:
    case 0xc6:
      return void r.bytes(r.u32())
    case 0xd4:
      return void r.bytes(2)
    case 0xd5:
      return void r.bytes(3)
    case 0xd6:
      return void r.bytes(5)
    case 0xd7:
      return void r.bytes(9)
    case 0xd8:
      return void r.bytes(17)
    case 0xc7:
      return void r.bytes(r.u8() + 1)
    case 0xc8:
      return void r.bytes(r.u16() + 1)
    case 0xc9:
      return void r.bytes(r.u32() + 1)
    case 0xdc:
    case 0xdd: {
      const n = t === 0xdc ? r.u16() : r.u32()
      for (let i = 0; i < n; i++) skip(r, depth + 1)
      return
    }
    case 0xde:
    case 0xdf: {
      const n = (t === 0xde ? r.u16() : r.u32()) * 2
      for (let i = 0; i < n; i++) skip(r, depth + 1)
      return
    }
    default:
      throw new MetadataError(`0x${t.toString(16)} is not msgpack`)
  }
}

/**
 * Parse the metadata map at the start of `bytes`. Returns undefined when the object is not complete yet (more bytes
 * to come), else the map and how many bytes it took. As msgpack-c's `as<MetaData>()`: keys in any order, unknown
 * keys ignored, a missing key gives "", a value of another type than str/bin is an error.
 */
export function parseMetadata(bytes: Buffer): { metadata: DhtnetMetadata; used: number } | undefined {
  const r = new Reader(bytes)
  try {
    const t = r.u8()
    let n: number
    if ((t & 0xf0) === 0x80) n = t & 0x0f
    else if (t === 0xde) n = r.u16()
    else if (t === 0xdf) n = r.u32()
    else throw new MetadataError(`the metadata is not a map (first byte 0x${t.toString(16)})`)
    const found: Record<string, string> = {}
    for (let i = 0; i < n; i++) {
      const key = readStringish(r, 1)
      const valueAt = r.off
      const value = readStringish(r, 1)
      if (key === undefined || !(KEYS as readonly string[]).includes(key)) continue
      if (value === undefined) {
        r.off = valueAt
        throw new MetadataError(`metadata key ${key} is not a string`)
      }
      if (Buffer.byteLength(value) > MAX_STRING) throw new MetadataError(`metadata key ${key} is too long`)
      found[key] = value
    }
    return {
      metadata: { addrClient: found.addrClient ?? '', addrServer: found.addrServer ?? '', addrClientIpv6: found.addrClientIpv6 ?? '', addrServerIpv6: found.addrServerIpv6 ?? '' },
      used: r.off,
    }
  } catch (err) {
    if (err === INCOMPLETE) return undefined
    throw err
  }
}

/**
 * The client's side of the first message(s): bytes are collected (at most MAX_METADATA_BYTES) until one whole map
 * parses, as C++'s unpacker does across messages; bytes after the map in the same message are dropped, as in C++.
 */
export class MetadataReader {
  private pending: Buffer = Buffer.alloc(0)

  /** The metadata once complete, else undefined. Throws MetadataError on a malformed or oversized map. */
  push(message: Buffer): DhtnetMetadata | undefined {
    const bytes = this.pending.length === 0 ? message : Buffer.concat([this.pending, message])
    const parsed = parseMetadata(bytes)
    if (parsed) {
      this.pending = Buffer.alloc(0)
      return parsed.metadata
    }
    if (bytes.length >= MAX_METADATA_BYTES) throw new MetadataError(`no complete metadata map in the first ${MAX_METADATA_BYTES} bytes`)
    this.pending = Buffer.from(bytes)
    return undefined
  }
}
