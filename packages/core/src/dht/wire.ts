/**
 * OpenDHT UDP wire codec: every datagram is one msgpack map (see opendht-protocol.md §1 and OpenDHT's
 * parsed_message.h / network_engine.cpp). Decoding is defensive (any type or size mismatch throws a WireError and
 * the datagram is dropped); encoding reproduces the key order and integer widths of msgpack-c byte for byte.
 */
import { Unpackr } from 'msgpackr'
import { MsgWriter } from './msgpack-writer.js'
import { checkMsgpack } from './msgpack-check.js'
import { HASH_LEN } from './infohash.js'
import { decodeValue, type DhtValue } from './value-shim.js'

export const WANT4 = 1
export const WANT6 = 2
/** Linux address-family numbers, as OpenDHT writes them in `w`. */
export const AF_INET = 2
export const AF_INET6 = 10

/** Values are sent inline when fewer than this many... */
export const MAX_INLINE_VALUES = 50
/** ...and their packed total is below this many bytes; otherwise they go as fragments. */
export const MAX_PACKET_VALUE_SIZE = 600
/** Max bytes of value data per fragment datagram. */
export const FRAGMENT_MTU = 1280
/** Largest value accepted (OpenDHT MAX_VALUE_SIZE). */
export const MAX_VALUE_SIZE = 64 * 1024
export const NODE4_LEN = HASH_LEN + 6
export const NODE6_LEN = HASH_LEN + 18
/** At most this many nodes per family in a reply. */
export const SEND_NODES = 8

export const ERR_NON_AUTHORITATIVE = 203
export const ERR_UNAUTHORIZED = 401
export const ERR_NOT_FOUND = 404

export type MessageKind = 'error' | 'reply' | 'fragment' | 'valueUpdate' | 'ping' | 'find' | 'get' | 'listen' | 'put' | 'refresh' | 'update'

/** Value fields usable in queries (Value::Field). */
export const Field = { Id: 1, ValueType: 2, OwnerPk: 3, SeqNum: 4, UserType: 5 } as const

export interface FieldFilter {
  field: number
  value: bigint | Buffer
}
/** `SELECT fields WHERE filters`; empty select means whole values. */
export interface Query {
  select: number[]
  where: FieldFilter[]
}

/** One value's selected fields from a `fileds` reply, keyed by field code. */
export type FieldRow = Map<number, bigint | Buffer | string>

export interface WireNode {
  id: Buffer
  host: string
  port: number
  family: 4 | 6
}

export interface ParsedMessage {
  kind: MessageKind
  tid: number
  network: number
  isClient: boolean
  ua?: string
  id?: Buffer
  infoHash?: Buffer
  target?: Buffer
  token?: Buffer
  valueId?: bigint
  socketId?: number
  /** `c`, unix seconds */
  created?: number
  nodes4?: Buffer
  nodes6?: Buffer
  /** our address as the sender saw it */
  sa?: Buffer
  values: DhtValue[]
  /** index → announced packed size, for values that follow as fragments */
  valueSizes: Map<number, number>
  expired: bigint[]
  refreshed: bigint[]
  fields?: FieldRow[]
  query?: Query
  /** WANT4|WANT6 bit mask, or -1 when `w` was absent */
  want: number
  errorCode?: number
  errorMessage?: string
  version: number
  /** for kind 'fragment': index → { offset, data } */
  fragments?: Map<number, { offset: number; data: Buffer }>
}

export class WireError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'WireError'
  }
}

function fail(msg: string): never {
  throw new WireError(msg)
}

const unpackr = new Unpackr({ int64AsType: 'bigint', mapsAsObjects: true, useRecords: false })

type Obj = Record<string, unknown>
function isMap(x: unknown): x is Obj {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array) && !(x instanceof Date)
}
function get(o: Obj, k: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined
}
function asBin(x: unknown, what: string): Buffer {
  if (Buffer.isBuffer(x)) return x
  if (x instanceof Uint8Array) return Buffer.from(x.buffer, x.byteOffset, x.length)
  return fail(`${what}: not bin`)
}
function asHash(x: unknown, what: string): Buffer {
  const b = asBin(x, what)
  if (b.length !== HASH_LEN) fail(`${what}: not ${HASH_LEN} bytes`)
  return b
}
function asUint(x: unknown, what: string, max = 0xffffffff): number {
  if (typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max) return x
  if (typeof x === 'bigint' && x >= 0n && x <= BigInt(max)) return Number(x)
  return fail(`${what}: not an unsigned integer <= ${max}`)
}
function asInt(x: unknown, what: string): number {
  if (typeof x === 'number' && Number.isInteger(x)) return x
  if (typeof x === 'bigint' && x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(x)
  return fail(`${what}: not an integer`)
}
function asU64(x: unknown, what: string): bigint {
  if (typeof x === 'bigint' && x >= 0n && x <= 0xffffffffffffffffn) return x
  if (typeof x === 'number' && Number.isInteger(x) && x >= 0) return BigInt(x)
  return fail(`${what}: not a uint64`)
}
function asStr(x: unknown, what: string): string {
  if (typeof x === 'string') return x
  return fail(`${what}: not a string`)
}
function asBool(x: unknown, what: string): boolean {
  if (typeof x === 'boolean') return x
  return fail(`${what}: not a bool`)
}
/** Transaction ids: uint32, or a legacy 4-byte bin (big-endian). */
function asTid(x: unknown, what: string): number {
  if (x instanceof Uint8Array) {
    if (x.length !== 4) fail(`${what}: bin tid not 4 bytes`)
    return Buffer.from(x.buffer, x.byteOffset, 4).readUInt32BE(0)
  }
  return asUint(x, what)
}
function asU64Array(x: unknown, what: string): bigint[] {
  if (!Array.isArray(x)) fail(`${what}: not an array`)
  if (x.length > 4096) fail(`${what}: too long`)
  return x.map((e, i) => asU64(e, `${what}[${i}]`))
}

export function parseQuery(x: unknown): Query {
  if (!isMap(x)) fail('q: not a map')
  const q: Query = { select: [], where: [] }
  const s = get(x, 's')
  if (s !== undefined) {
    if (!Array.isArray(s) || s.length > 16) fail('q.s: not a short array')
    q.select = s.map((f, i) => asUint(f, `q.s[${i}]`, 255))
  }
  const w = get(x, 'w')
  if (w !== undefined) {
    if (!Array.isArray(w) || w.length > 16) fail('q.w: not a short array')
    for (const fv of w) {
      if (!isMap(fv)) fail('q.w: filter not a map')
      const field = asUint(get(fv, 'f'), 'q.w.f', 255)
      const v = get(fv, 'v')
      switch (field) {
        case Field.Id:
        case Field.ValueType:
        case Field.SeqNum:
          q.where.push({ field, value: asU64(v, 'q.w.v') })
          break
        case Field.OwnerPk:
          q.where.push({ field, value: asHash(v, 'q.w.v') })
          break
        case Field.UserType:
          q.where.push({ field, value: typeof v === 'string' ? Buffer.from(v) : asBin(v, 'q.w.v') })
          break
        default:
          fail('q.w: unknown field')
      }
    }
  }
  return q
}

function parseFields(x: unknown): FieldRow[] {
  if (!isMap(x)) fail('fileds: not a map')
  const f = get(x, 'f')
  if (!Array.isArray(f) || f.length === 0 || f.length > 16) fail('fileds.f: bad')
  const fields = [...new Set(f.map((e, i) => asUint(e, `fileds.f[${i}]`, 255)))].sort((a, b) => a - b)
  const v = get(x, 'v')
  if (v === undefined) return []
  if (!Array.isArray(v)) fail('fileds.v: not an array')
  const rows: FieldRow[] = []
  const n = Math.floor(v.length / fields.length)
  for (let i = 0; i < n; i++) {
    try {
      const row: FieldRow = new Map()
      fields.forEach((field, j) => {
        const e: unknown = v[i * fields.length + j]
        if (field === Field.Id || field === Field.ValueType || field === Field.SeqNum) row.set(field, asU64(e, 'field'))
        else if (field === Field.OwnerPk) row.set(field, asBin(e, 'field'))
        else if (field === Field.UserType) row.set(field, typeof e === 'string' ? e : asBin(e, 'field').toString())
      })
      rows.push(row)
    } catch {
      // one bad row does not spoil the others (as OpenDHT)
    }
  }
  return rows
}

/** Decode one datagram. Throws WireError (or a msgpackr error) on anything malformed. */
export function decodeMessage(buf: Buffer): ParsedMessage {
  const quick = decodeSimple(buf)
  if (quick) return quick
  if (!checkMsgpack(buf)) fail('not a well-formed msgpack object')
  const root: unknown = unpackr.unpack(buf)
  if (!isMap(root)) fail('message is not a map')
  const msg: ParsedMessage = {
    kind: 'ping',
    tid: 0,
    network: 0,
    isClient: false,
    values: [],
    valueSizes: new Map(),
    expired: [],
    refreshed: [],
    want: -1,
    version: 0,
  }
  const y = get(root, 'y'),
    r = get(root, 'r'),
    u = get(root, 'u'),
    e = get(root, 'e'),
    p = get(root, 'p'),
    a = get(root, 'a')
  const t = get(root, 't')
  if (t !== undefined) msg.tid = asTid(t, 't')
  const ua = get(root, 'v')
  if (ua !== undefined) msg.ua = asStr(ua, 'v')
  const n = get(root, 'n')
  if (n !== undefined) msg.network = asUint(n, 'n')
  const s = get(root, 's')
  if (s !== undefined) msg.isClient = asBool(s, 's')
  const q = get(root, 'q')
  const qname = q === undefined ? '' : asStr(q, 'q')

  if (e !== undefined) msg.kind = 'error'
  else if (r !== undefined) msg.kind = 'reply'
  else if (p !== undefined) msg.kind = 'fragment'
  else if (u !== undefined) msg.kind = 'valueUpdate'
  else if (y !== undefined && y !== 'q') fail('y: not a query')
  else {
    switch (qname) {
      case 'ping':
      case 'find':
      case 'get':
      case 'listen':
      case 'put':
      case 'refresh':
      case 'update':
        msg.kind = qname
        break
      default:
        fail(`unknown query ${JSON.stringify(qname).slice(0, 40)}`)
    }
  }

  if (msg.kind === 'fragment') {
    if (!isMap(p)) fail('p: not a map')
    msg.fragments = new Map()
    for (const key of Object.keys(p)) {
      if (!/^\d{1,5}$/.test(key)) fail('p: bad index')
      const part = p[key]
      if (!isMap(part)) continue
      const o = get(part, 'o'),
        d = get(part, 'd')
      if (o === undefined || d === undefined) continue
      msg.fragments.set(Number(key), { offset: asUint(o, 'p.o'), data: asBin(d, 'p.d') })
    }
    return msg
  }

  if (a === undefined && r === undefined && e === undefined && u === undefined) fail('no body')
  if (e !== undefined) {
    if (!Array.isArray(e) || e.length < 1) fail('e: not an array')
    msg.errorCode = asUint(e[0], 'e[0]', 0xffff)
    if (typeof e[1] === 'string') msg.errorMessage = e[1].slice(0, 200)
  }
  const req = a !== undefined ? a : r !== undefined ? r : u
  if (req !== undefined && !isMap(req)) fail('body: not a map')
  if (req === undefined) return msg

  for (const key of Object.keys(req)) {
    const val = req[key]
    switch (key) {
      case 'sid':
        msg.socketId = asTid(val, 'sid')
        break
      case 'id':
        msg.id = asHash(val, 'id')
        break
      case 'h':
        msg.infoHash = asHash(val, 'h')
        break
      case 'target':
        msg.target = asHash(val, 'target')
        break
      case 'q':
        msg.query = parseQuery(val)
        break
      case 'token':
        msg.token = asBin(val, 'token')
        if (msg.token.length > 64) fail('token too long')
        break
      case 'vid':
        msg.valueId = asU64(val, 'vid')
        break
      case 'n4':
        msg.nodes4 = asBin(val, 'n4')
        if (msg.nodes4.length % NODE4_LEN) fail('n4: bad length')
        break
      case 'n6':
        msg.nodes6 = asBin(val, 'n6')
        if (msg.nodes6.length % NODE6_LEN) fail('n6: bad length')
        break
      case 'sa': {
        const b = asBin(val, 'sa')
        if (b.length === 4 || b.length === 16) msg.sa = b
        break
      }
      case 'c':
        msg.created = asInt(val, 'c')
        break
      case 'values': {
        if (!Array.isArray(val)) fail('values: not an array')
        if (val.length > 65536) fail('values: too many')
        val.forEach((pv, i) => {
          if (typeof pv === 'number' || typeof pv === 'bigint') {
            const size = asUint(pv, 'values[i]')
            if (size > MAX_VALUE_SIZE + 32 || size === 0) return
            msg.valueSizes.set(i, size)
          } else {
            try {
              msg.values.push(decodeValue(pv))
            } catch {
              // skip an unreadable value, keep the others (as OpenDHT)
            }
          }
        })
        break
      }
      case 'exp':
        msg.expired = asU64Array(val, 'exp')
        break
      case 're':
        msg.refreshed = asU64Array(val, 're')
        break
      case 'fileds':
        msg.fields = parseFields(val)
        break
      case 'w': {
        if (!Array.isArray(val)) fail('w: not an array')
        msg.want = 0
        for (const f of val) {
          if (f === AF_INET) msg.want |= WANT4
          else if (f === AF_INET6) msg.want |= WANT6
        }
        break
      }
      case 've':
        msg.version = asInt(val, 've')
        break
      default:
        break
    }
  }
  return msg
}

// ---------------------------------------------------------------------------------------------- fast path

/*
 * Most datagrams are small queries and replies (ping, find, get and their answers) made of a few well-known keys
 * with plain values. `decodeSimple` reads exactly those straight from the bytes, with no intermediate objects, and
 * returns what `decodeMessage`'s general path would. Anything else — another key, another encoding of a value, a
 * duplicate key, a value the general path would refuse — makes it give up (undefined) so that the general path
 * decides, errors included.
 */

const QUERY_KINDS: ReadonlySet<string> = new Set(['ping', 'find', 'get', 'listen', 'put', 'refresh', 'update'])

// root keys the fast path knows, as bits (a second occurrence makes it give up), and their names in bit order
const R_A = 1,
  R_R = 2,
  R_T = 4,
  R_V = 8,
  R_N = 16,
  R_S = 32,
  R_Q = 64,
  R_Y = 128
const ROOT_KEYS = ['a', 'r', 't', 'v', 'n', 's', 'q', 'y'].map((k) => Buffer.from(k))
// body keys
const B_ID = 1,
  B_H = 2,
  B_TARGET = 4,
  B_TOKEN = 8,
  B_N4 = 16,
  B_N6 = 32,
  B_SA = 64,
  B_W = 128
const BODY_KEYS = ['id', 'h', 'target', 'token', 'n4', 'n6', 'sa', 'w'].map((k) => Buffer.from(k))

/** Cursor over one datagram; every reader returns undefined (or -1) on an encoding it does not take. */
class SimpleReader {
  pos = 0
  constructor(readonly buf: Buffer) {}

  /** fixstr of ASCII bytes (every key, and the short string values) */
  asciiStr(): string | undefined {
    const buf = this.buf
    const h = buf[this.pos]
    if (h === undefined || (h & 0xe0) !== 0xa0) return undefined
    const len = h & 0x1f
    const start = this.pos + 1
    if (start + len > buf.length) return undefined
    let out = ''
    for (let i = start; i < start + len; i++) {
      const c = buf[i]!
      if (c >= 0x80) return undefined
      out += String.fromCharCode(c)
    }
    this.pos = start + len
    return out
  }

  /** positive fixint, uint8/16/32 as msgpackr returns them (a number); -1 otherwise */
  uint(): number {
    const buf = this.buf
    const p = this.pos
    const h = buf[p]
    if (h === undefined) return -1
    if (h <= 0x7f) {
      this.pos = p + 1
      return h
    }
    if (h === 0xcc && p + 2 <= buf.length) {
      this.pos = p + 2
      return buf[p + 1]!
    }
    if (h === 0xcd && p + 3 <= buf.length) {
      this.pos = p + 3
      return (buf[p + 1]! << 8) | buf[p + 2]!
    }
    if (h === 0xce && p + 5 <= buf.length) {
      this.pos = p + 5
      return buf.readUInt32BE(p + 1)
    }
    return -1
  }

  /** bin8/bin16 as a view of the datagram (as msgpackr returns it) */
  bin(): Buffer | undefined {
    const buf = this.buf
    const p = this.pos
    const h = buf[p]
    let len: number, start: number
    if (h === 0xc4 && p + 2 <= buf.length) {
      len = buf[p + 1]!
      start = p + 2
    } else if (h === 0xc5 && p + 3 <= buf.length) {
      len = (buf[p + 1]! << 8) | buf[p + 2]!
      start = p + 3
    } else return undefined
    if (start + len > buf.length) return undefined
    this.pos = start + len
    return buf.subarray(start, start + len)
  }

  /**
   * A fixstr key compared in place with the known ones (no string made): its index in `names`, -1 when it is
   * another key, -2 when it is not a fixstr at all.
   */
  key(names: readonly Buffer[]): number {
    const buf = this.buf
    const h = buf[this.pos]
    if (h === undefined || (h & 0xe0) !== 0xa0) return -2
    const len = h & 0x1f
    const start = this.pos + 1
    if (start + len > buf.length) return -2
    this.pos = start + len
    outer: for (let i = 0; i < names.length; i++) {
      const nm = names[i]!
      if (nm.length !== len) continue
      for (let j = 0; j < len; j++) if (buf[start + j] !== nm[j]) continue outer
      return i
    }
    return -1
  }

  /** fixmap size, -1 otherwise */
  fixmap(): number {
    const h = this.buf[this.pos]
    if (h === undefined || (h & 0xf0) !== 0x80) return -1
    this.pos++
    return h & 0x0f
  }
}

function decodeSimple(buf: Buffer): ParsedMessage | undefined {
  const rd = new SimpleReader(buf)
  const rootLen = rd.fixmap()
  if (rootLen < 0) return undefined
  let seen = 0
  let tid = 0,
    network = 0,
    isClient = false
  let ua: string | undefined, qname: string | undefined, y: string | undefined
  let bodyStart = -1
  let bodyKey = 0
  for (let i = 0; i < rootLen; i++) {
    const ki = rd.key(ROOT_KEYS)
    if (ki < 0) return undefined
    const bit = 1 << ki
    if (seen & bit) return undefined
    seen |= bit
    switch (bit) {
      case R_A:
      case R_R: {
        // the body is read once the root is known (skip it now: it is a fixmap of known keys, read twice is cheap)
        if (bodyStart >= 0) return undefined
        bodyStart = rd.pos
        bodyKey = bit
        if (!skipBody(rd)) return undefined
        break
      }
      case R_T: {
        const b = buf[rd.pos]
        if (b === 0xc4) {
          const bin = rd.bin()
          if (!bin || bin.length !== 4) return undefined
          tid = bin.readUInt32BE(0)
        } else if ((tid = rd.uint()) < 0) return undefined
        break
      }
      case R_V:
        if ((ua = rd.asciiStr()) === undefined) return undefined
        break
      case R_N:
        if ((network = rd.uint()) < 0) return undefined
        break
      case R_S: {
        const b = buf[rd.pos]
        if (b !== 0xc2 && b !== 0xc3) return undefined
        isClient = b === 0xc3
        rd.pos++
        break
      }
      case R_Q:
        if ((qname = rd.asciiStr()) === undefined) return undefined
        break
      case R_Y:
        if ((y = rd.asciiStr()) === undefined) return undefined
        break
    }
  }
  if (rd.pos !== buf.length || bodyStart < 0) return undefined
  let kind: MessageKind
  if (bodyKey === R_R) kind = 'reply'
  else if (y !== undefined && y !== 'q') return undefined
  else if (qname !== undefined && QUERY_KINDS.has(qname)) kind = qname as MessageKind
  else return undefined

  const msg: ParsedMessage = {
    kind: 'ping',
    tid: 0,
    network: 0,
    isClient: false,
    values: [],
    valueSizes: new Map(),
    expired: [],
    refreshed: [],
    want: -1,
    version: 0,
  }
  msg.tid = tid
  if (ua !== undefined) msg.ua = ua
  msg.network = network
  msg.isClient = isClient
  msg.kind = kind

  rd.pos = bodyStart
  const n = rd.fixmap()
  let bseen = 0
  for (let i = 0; i < n; i++) {
    const ki = rd.key(BODY_KEYS)
    if (ki < 0) return undefined
    const bit = 1 << ki
    if (bseen & bit) return undefined
    bseen |= bit
    if (bit === B_W) {
      const h = buf[rd.pos]
      if (h === undefined || (h & 0xf0) !== 0x90) return undefined
      rd.pos++
      let want = 0
      for (let j = 0; j < (h & 0x0f); j++) {
        const f = rd.uint()
        if (f < 0) return undefined
        if (f === AF_INET) want |= WANT4
        else if (f === AF_INET6) want |= WANT6
      }
      msg.want = want
      continue
    }
    const b = rd.bin()
    if (!b) return undefined
    switch (bit) {
      case B_ID:
        if (b.length !== HASH_LEN) return undefined
        msg.id = b
        break
      case B_H:
        if (b.length !== HASH_LEN) return undefined
        msg.infoHash = b
        break
      case B_TARGET:
        if (b.length !== HASH_LEN) return undefined
        msg.target = b
        break
      case B_TOKEN:
        if (b.length > 64) return undefined
        msg.token = b
        break
      case B_N4:
        if (b.length % NODE4_LEN) return undefined
        msg.nodes4 = b
        break
      case B_N6:
        if (b.length % NODE6_LEN) return undefined
        msg.nodes6 = b
        break
      case B_SA:
        if (b.length === 4 || b.length === 16) msg.sa = b
        break
    }
  }
  return msg
}

/** Step over a body map made only of keys and values `decodeSimple` reads; false when it is anything else. */
function skipBody(rd: SimpleReader): boolean {
  const n = rd.fixmap()
  if (n < 0) return false
  for (let i = 0; i < n; i++) {
    const ki = rd.key(BODY_KEYS)
    if (ki === -2) return false
    if (ki === 7) {
      // w
      const h = rd.buf[rd.pos]
      if (h === undefined || (h & 0xf0) !== 0x90) return false
      rd.pos++
      for (let j = 0; j < (h & 0x0f); j++) if (rd.uint() < 0) return false
    } else if (!rd.bin()) return false
  }
  return true
}

// ---------------------------------------------------------------------------------------------- node lists

const ipCache = new Map<string, Buffer | null>()

/** IPv4/IPv6 text → 4 or 16 bytes (undefined when not an address). Cached: every datagram needs it twice. */
export function ipToBytes(host: string): Buffer | undefined {
  const c = ipCache.get(host)
  if (c !== undefined) return c ?? undefined
  const b = parseIp(host)
  if (ipCache.size >= 4096) ipCache.clear()
  ipCache.set(host, b ?? null)
  return b
}

function parseIp(host: string): Buffer | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host)
  if (v4) {
    const parts = v4.slice(1).map(Number)
    if (parts.some((x) => x > 255)) return undefined
    return Buffer.from(parts)
  }
  let h = host
  const pct = h.indexOf('%')
  if (pct >= 0) h = h.slice(0, pct)
  if (!h.includes(':')) return undefined
  const lastColon = h.lastIndexOf(':')
  const tail = h.slice(lastColon + 1)
  if (tail.includes('.')) {
    // IPv6 with an embedded IPv4 tail: rewrite the tail as two hex groups
    const b = parseIp(tail)
    if (!b || b.length !== 4) return undefined
    h = `${h.slice(0, lastColon + 1)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`
  }
  const dbl = h.split('::')
  if (dbl.length > 2) return undefined
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : NaN)))
  const head = parse(dbl[0]!)
  const rest = dbl.length === 2 ? parse(dbl[1]!) : []
  let groups: number[]
  if (dbl.length === 2) {
    const fill = 8 - head.length - rest.length
    if (fill < 1) return undefined
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest]
  } else groups = head
  if (groups.length !== 8 || groups.some((g) => Number.isNaN(g))) return undefined
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2))
  return out
}

export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16))
  // compress the longest run of zeros
  let best = -1,
    bestLen = 0
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  if (bestLen < 2) return groups.join(':')
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`
}

export function packNodes(nodes: ReadonlyArray<Pick<WireNode, 'id' | 'host' | 'port'>>, family: 4 | 6): Buffer {
  const len = family === 4 ? NODE4_LEN : NODE6_LEN
  // every byte is written below (TypedArray.set is much cheaper than Buffer#copy for these small pieces)
  const out = Buffer.allocUnsafe(len * nodes.length)
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!
    const ip = ipToBytes(n.host)!
    const o = i * len
    if (n.id.length === HASH_LEN) out.set(n.id, o)
    else {
      out.fill(0, o, o + HASH_LEN)
      out.set(n.id.subarray(0, HASH_LEN), o)
    }
    out.set(ip, o + HASH_LEN)
    out.writeUInt16BE(n.port, o + HASH_LEN + ip.length)
  }
  return out
}

export function unpackNodes(buf: Buffer, family: 4 | 6): WireNode[] {
  const len = family === 4 ? NODE4_LEN : NODE6_LEN
  const iplen = family === 4 ? 4 : 16
  const out: WireNode[] = []
  for (let o = 0; o + len <= buf.length; o += len) {
    out.push({
      id: Buffer.from(buf.subarray(o, o + HASH_LEN)),
      host: bytesToIp(buf.subarray(o + HASH_LEN, o + HASH_LEN + iplen)),
      port: buf.readUInt16BE(o + HASH_LEN + iplen),
      family,
    })
  }
  return out
}

/** OpenDHT's martian filter: port 0, IPv4 0/8 and >= 224/3, IPv6 multicast, `::`, v4-mapped. */
export function isMartian(host: string, port: number): boolean {
  if (port <= 0 || port > 65535) return true
  const b = ipToBytes(host)
  if (!b) return true
  if (b.length === 4) return b[0] === 0 || (b[0]! & 0xe0) === 0xe0
  if (b[0] === 0xff) return true
  if (b.every((x) => x === 0)) return true
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return true
  return false
}

export function isLoopback(host: string): boolean {
  return host.startsWith('127.') || host === '::1'
}

// ---------------------------------------------------------------------------------------------- encoding

export interface EncoderConfig {
  myId: Buffer
  userAgent: string
  network: number
  isClient: boolean
}

/** Packed values to carry: inline in the message, or announced by size and sent as fragments. */
export interface PackedValues {
  inline: boolean
  packed: Buffer[]
}

export function planValues(packed: Buffer[]): PackedValues {
  const total = packed.reduce((s, b) => s + b.length, 0)
  return { inline: packed.length < MAX_INLINE_VALUES && total < MAX_PACKET_VALUE_SIZE, packed }
}

/** A message plus the fragment datagrams that must follow it (and be re-sent with each retry). */
export interface Outgoing {
  msg: Buffer
  parts: Buffer[]
}

export class WireEncoder {
  /** `id` key and our id, as every message carries them */
  private readonly idField: Buffer
  /** reply trailer after the tid: y:"r", v, [n], [s] */
  private readonly replyEnd: Buffer

  constructor(private readonly cfg: EncoderConfig) {
    this.idField = new MsgWriter(32).str('id').bin(cfg.myId).finish()
    const w = new MsgWriter(64).str('y').str('r').str('v').str(cfg.userAgent)
    this.netClient(w)
    this.replyEnd = w.finish()
  }

  get myId(): Buffer {
    return this.cfg.myId
  }

  private extra(): number {
    return (this.cfg.network ? 1 : 0) + (this.cfg.isClient ? 1 : 0)
  }

  private netClient(w: MsgWriter): void {
    if (this.cfg.network) w.str('n').uint(this.cfg.network)
    if (this.cfg.isClient) w.str('s').bool(true)
  }

  /** Trailer of queries: q, t, y:"q", v, [n], [s]. */
  private queryTail(w: MsgWriter, q: string, tid: number): Buffer {
    w.str('q').str(q).str('t').uint(tid).str('y').str('q').str('v').str(this.cfg.userAgent)
    this.netClient(w)
    return w.finish()
  }

  /** Trailer of replies: t, y:"r", v, [n], [s]. */
  private replyTail(w: MsgWriter, tid: number): Buffer {
    w.str('t').uint(tid).raw(this.replyEnd)
    return w.take()
  }

  /** Room for a reply: its variable part plus the constant pieces. */
  private replySize(variable: number): number {
    return variable + this.idField.length + this.replyEnd.length + 32
  }

  private writeWant(w: MsgWriter, want: number): void {
    w.str('w').array((want & WANT4 ? 1 : 0) + (want & WANT6 ? 1 : 0))
    if (want & WANT4) w.uint(AF_INET)
    if (want & WANT6) w.uint(AF_INET6)
  }

  private writeValues(w: MsgWriter, pv: PackedValues): void {
    w.str('values').array(pv.packed.length)
    for (const b of pv.packed) {
      if (pv.inline) w.raw(b)
      else w.uint(b.length)
    }
  }

  ping(tid: number): Buffer {
    const w = new MsgWriter(96).map(5 + this.extra())
    w.str('a').map(1).str('id').bin(this.cfg.myId)
    return this.queryTail(w, 'ping', tid)
  }

  pong(tid: number, sa: Buffer): Buffer {
    const w = new MsgWriter(this.replySize(sa.length)).map(4 + this.extra())
    w.str('r').map(2).raw(this.idField).str('sa').bin(sa)
    return this.replyTail(w, tid)
  }

  find(tid: number, target: Buffer, want: number): Buffer {
    const w = new MsgWriter(128).map(5 + this.extra())
    w.str('a')
      .map(2 + (want > 0 ? 1 : 0))
      .str('id')
      .bin(this.cfg.myId)
      .str('target')
      .bin(target)
    if (want > 0) this.writeWant(w, want)
    return this.queryTail(w, 'find', tid)
  }

  get(tid: number, key: Buffer, query: Query | undefined, want: number): Buffer {
    const sendQuery = query !== undefined && (query.select.length > 0 || query.where.length > 0)
    const w = new MsgWriter(160).map(5 + this.extra())
    w.str('a')
      .map(2 + (sendQuery ? 1 : 0) + (want > 0 ? 1 : 0))
      .str('id')
      .bin(this.cfg.myId)
      .str('h')
      .bin(key)
    if (sendQuery) writeQuery(w, query)
    if (want > 0) this.writeWant(w, want)
    return this.queryTail(w, 'get', tid)
  }

  /** Reply to find/get (and the legacy listen push, with tid = socket id). */
  nodesValues(
    tid: number,
    sa: Buffer,
    n4: Buffer,
    n6: Buffer,
    token: Buffer | undefined,
    packedValues: Buffer[] | undefined,
    fieldRows?: { fields: number[]; values: ((w: MsgWriter) => void)[] },
  ): Outgoing {
    const hasValues = (packedValues !== undefined && packedValues.length > 0) || fieldRows !== undefined
    const w = new MsgWriter(this.replySize(64 + sa.length + n4.length + n6.length + (token ? token.length : 0))).map(4 + this.extra())
    w.str('r').map(2 + (hasValues ? 1 : 0) + (n4.length ? 1 : 0) + (n6.length ? 1 : 0) + (token ? 1 : 0))
    w.raw(this.idField).str('sa').bin(sa)
    if (n4.length) w.str('n4').bin(n4)
    if (n6.length) w.str('n6').bin(n6)
    if (token) w.str('token').bin(token)
    let parts: Buffer[] = []
    if (fieldRows) {
      w.str('fileds').map(2).str('f').array(fieldRows.fields.length)
      for (const f of fieldRows.fields) w.uint(f)
      w.str('v').array(fieldRows.values.length * fieldRows.fields.length)
      for (const row of fieldRows.values) row(w)
    } else if (packedValues && packedValues.length) {
      const pv = planValues(packedValues)
      this.writeValues(w, pv)
      if (!pv.inline) parts = this.fragments(tid, packedValues)
    }
    return { msg: this.replyTail(w, tid), parts }
  }

  listen(tid: number, key: Buffer, token: Buffer, sid: number, query?: Query): Buffer {
    const hasQuery = query !== undefined && (query.select.length > 0 || query.where.length > 0)
    const w = new MsgWriter(160).map(5 + this.extra())
    w.str('a')
      .map(5 + (hasQuery ? 1 : 0))
      .str('id')
      .bin(this.cfg.myId)
      .str('ve')
      .uint(1)
      .str('h')
      .bin(key)
      .str('token')
      .bin(token)
      .str('sid')
      .uint(sid)
    if (hasQuery) writeQuery(w, query)
    return this.queryTail(w, 'listen', tid)
  }

  /** Reply to listen and update: r{id, sa, [token]}. */
  listenConfirm(tid: number, sa: Buffer, token?: Buffer): Buffer {
    const w = new MsgWriter(this.replySize(16 + sa.length + (token ? token.length : 0))).map(4 + this.extra())
    w.str('r')
      .map(2 + (token ? 1 : 0))
      .raw(this.idField)
      .str('sa')
      .bin(sa)
    if (token) w.str('token').bin(token)
    return this.replyTail(w, tid)
  }

  put(tid: number, key: Buffer, packedValue: Buffer, created: number | undefined, token: Buffer): Outgoing {
    const w = new MsgWriter(160 + packedValue.length).map(5 + this.extra())
    w.str('a')
      .map(created !== undefined ? 5 : 4)
      .str('id')
      .bin(this.cfg.myId)
      .str('h')
      .bin(key)
    const pv = planValues([packedValue])
    this.writeValues(w, pv)
    if (created !== undefined) w.str('c').uint(created)
    w.str('token').bin(token)
    return { msg: this.queryTail(w, 'put', tid), parts: pv.inline ? [] : this.fragments(tid, pv.packed) }
  }

  refresh(tid: number, key: Buffer, vid: bigint, token: Buffer): Buffer {
    const w = new MsgWriter(160).map(5 + this.extra())
    w.str('a').map(4).str('id').bin(this.cfg.myId).str('h').bin(key).str('vid').uint(vid).str('token').bin(token)
    return this.queryTail(w, 'refresh', tid)
  }

  valueAnnounced(tid: number, vid: bigint, sa: Buffer): Buffer {
    const w = new MsgWriter(128).map(4 + this.extra())
    w.str('r').map(3).str('id').bin(this.cfg.myId).str('vid').uint(vid).str('sa').bin(sa)
    return this.replyTail(w, tid)
  }

  error(tid: number, code: number, message: string, includeId = true): Buffer {
    const w = new MsgWriter(128).map(4 + (includeId ? 1 : 0) + this.extra())
    w.str('e').array(2).uint(code).str(message)
    if (includeId) w.str('r').map(1).str('id').bin(this.cfg.myId)
    w.str('t').uint(tid).str('y').str('e').str('v').str(this.cfg.userAgent)
    this.netClient(w)
    return w.finish()
  }

  /** `update` query carrying new values to a ve>=1 listener. */
  updateValues(tid: number, key: Buffer, sid: number, packedValues: Buffer[], created: number | undefined, token: Buffer): Outgoing {
    const w = new MsgWriter(256).map(5 + this.extra())
    w.str('a')
      .map(created !== undefined ? 7 : 6)
      .str('id')
      .bin(this.cfg.myId)
      .str('ve')
      .uint(1)
      .str('h')
      .bin(key)
      .str('sid')
      .uint(sid)
    const pv = planValues(packedValues)
    this.writeValues(w, pv)
    if (created !== undefined) w.str('c').uint(created)
    w.str('token').bin(token)
    return { msg: this.queryTail(w, 'update', tid), parts: pv.inline ? [] : this.fragments(tid, packedValues) }
  }

  /**
   * Refreshed/expired ids to a listener: for ve>=1 an `update` query with a new tid; for legacy listeners a `u`
   * message with t = socket id.
   */
  updateIds(kind: 're' | 'exp', sid: number, token: Buffer, ids: bigint[], version: number, tid: number): Buffer {
    const v1 = version >= 1
    const w = new MsgWriter(160).map(4 + (v1 ? 1 : 0) + this.extra())
    w.str(v1 ? 'a' : 'u').map(1 + (v1 ? 1 : 0) + (ids.length ? 1 : 0) + (token.length ? 1 : 0))
    w.str('id').bin(this.cfg.myId)
    if (v1) w.str('sid').uint(sid)
    if (token.length) w.str('token').bin(token)
    if (ids.length) {
      w.str(kind).array(ids.length)
      for (const id of ids) w.uint(id)
    }
    w.str('y')
      .str(v1 ? 'q' : 'r')
      .str('v')
      .str(this.cfg.userAgent)
    this.netClient(w)
    if (v1) {
      w.str('q').str('update').str('t').uint(tid)
    } else {
      w.str('t').uint(sid)
    }
    return w.finish()
  }

  /** Fragment datagrams `{[n], [s], y:"p", t, p:{index:{o, d}}}`, in order, ≤ FRAGMENT_MTU data bytes each. */
  fragments(tid: number, packed: Buffer[]): Buffer[] {
    const out: Buffer[] = []
    packed.forEach((v, i) => {
      let start = 0
      do {
        const end = Math.min(start + FRAGMENT_MTU, v.length)
        const w = new MsgWriter(end - start + 64).map(3 + this.extra())
        this.netClient(w)
        w.str('y').str('p').str('t').uint(tid).str('p').map(1).uint(i).map(2).str('o').uint(start).str('d').bin(v.subarray(start, end))
        out.push(w.finish())
        start = end
      } while (start !== v.length)
    })
    return out
  }
}

export function writeQuery(w: MsgWriter, q: Query): void {
  w.str('q').map(2).str('s').array(q.select.length)
  for (const f of q.select) w.uint(f)
  w.str('w').array(q.where.length)
  for (const f of q.where) {
    w.map(2).str('f').uint(f.field).str('v')
    if (f.field === Field.UserType) w.bin(f.value as Buffer)
    else if (f.field === Field.OwnerPk) w.bin(f.value as Buffer)
    else w.uint(f.value as bigint)
  }
}
