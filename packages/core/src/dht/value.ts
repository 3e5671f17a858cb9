/**
 * OpenDHT values: the data model, the exact msgpack encoding and decoding.
 *
 * The encoding must be byte-identical to msgpack-c's (OpenDHT `value.h`): the signed body is re-encoded by every
 * C++ node to verify signatures, so key order, minimal integer/header encodings and bin-vs-str choices matter.
 * msgpackr's encoder is not used here: it writes integers above 2^32 as floats and picks its own headers.
 */
import { randomBytes } from 'node:crypto'
import { Unpackr } from 'msgpackr'
import { DhtnetError } from '../errors.js'
import { MsgWriter as MsgpackWriter } from './msgpack-writer.js'

/** One OpenDHT value. Signed values carry `owner` (+`signature`); encrypted ones carry only `id` and `cypher`. */
export interface DhtValue {
  /** Non-zero uint64. */
  id: bigint
  /** Value type id (uint16): 0 user data, 8 certificate, ... */
  type: number
  data?: Buffer
  /** Free text describing the data, e.g. "text/plain" or "peer_request". */
  userType?: string
  /** Sequence number (uint16) of a signed value; edits must increase it. */
  seq?: number
  /** Signer's public key, DER SubjectPublicKeyInfo. Present iff the value is signed. */
  owner?: Buffer
  /** Recipient's SHA-1 key id (20 bytes), set in the signed body of an encrypted value. */
  recipient?: Buffer
  /** RSA PKCS#1 v1.5 SHA-512 signature over the signed body. */
  signature?: Buffer
  /** Encrypted `{body, sig}`; when set, the value carries nothing else but `id` (and `priority`/`pushType`). */
  cypher?: Buffer
  /** Unsigned, 0 is left out of the encoding. */
  priority?: number
  /** Push notification type (OpenDHT >= 3.7.8 `pt`), outside the signature. */
  pushType?: string
}

/** Built-in OpenDHT value types (`default_types.cpp`, `securedht.h`). */
export const ValueType = {
  USER_DATA: 0,
  DHT_MESSAGE: 1,
  IP_SERVICE_ANNOUNCEMENT: 2,
  IM_MESSAGE: 3,
  TRUST_REQUEST: 4,
  ICE_CANDIDATES: 5,
  CERTIFICATE: 8,
} as const

const MINUTE = 60_000
const DAY = 24 * 60 * MINUTE
const TYPE_EXPIRATIONS_MS: ReadonlyMap<number, number> = new Map([
  [ValueType.USER_DATA, 10 * MINUTE],
  [ValueType.DHT_MESSAGE, 5 * MINUTE],
  [ValueType.IP_SERVICE_ANNOUNCEMENT, 15 * MINUTE],
  [ValueType.IM_MESSAGE, 5 * MINUTE],
  [ValueType.TRUST_REQUEST, 7 * DAY],
  [ValueType.ICE_CANDIDATES, 1 * MINUTE],
  [ValueType.CERTIFICATE, 7 * DAY],
])

/** How long a storage node keeps a value of this type (unknown types behave as USER_DATA: 10 minutes). */
export function valueTypeExpirationMs(type: number): number {
  return TYPE_EXPIRATIONS_MS.get(type) ?? 10 * MINUTE
}

/** Field codes of OpenDHT's query language (`Value::Field`). */
export const ValueField = { ID: 1, VALUE_TYPE: 2, OWNER_PK: 3, SEQ_NUM: 4, USER_TYPE: 5 } as const

export const MAX_UINT64 = (1n << 64n) - 1n

/** A random non-zero uint64 value id. */
export function randomValueId(): bigint {
  for (;;) {
    const id = randomBytes(8).readBigUInt64BE(0)
    if (id !== 0n) return id
  }
}

export function isSignedValue(v: DhtValue): boolean {
  return v.owner !== undefined && v.owner.length > 0
}

export function isEncryptedValue(v: DhtValue): boolean {
  return v.cypher !== undefined && v.cypher.length > 0
}

// The deterministic msgpack writer (msgpack-c's choices of headers) is shared with the wire codec.
export { MsgWriter as MsgpackWriter, MsgpackRaw, msgpackEncode } from './msgpack-writer.js'

// ---------------------------------------------------------------------------------------------------------------
// Encoding values

function writeSignedBody(w: MsgpackWriter, v: DhtValue): void {
  const signed = isSignedValue(v)
  const hasUserType = v.userType !== undefined && v.userType.length > 0
  w.map((hasUserType ? 1 : 0) + (signed ? (v.recipient ? 5 : 4) : 2))
  if (signed) {
    w.str('seq').uint(v.seq ?? 0)
    w.str('owner').bin(v.owner!)
    if (v.recipient) w.str('to').bin(v.recipient)
  }
  w.str('type').uint(v.type)
  w.str('data').bin(v.data ?? EMPTY)
  if (hasUserType) w.str('utype').str(v.userType!)
}

function writeToEncrypt(w: MsgpackWriter, v: DhtValue): void {
  if (isEncryptedValue(v)) {
    w.bin(v.cypher!)
    return
  }
  const signed = isSignedValue(v)
  w.map(signed ? 2 : 1)
  w.str('body')
  writeSignedBody(w, v)
  if (signed) w.str('sig').bin(v.signature ?? EMPTY)
}

const EMPTY = Buffer.alloc(0)

function checkEncodable(v: DhtValue): void {
  const bad = (what: string) => new DhtnetError('BAD_VALUE', `cannot encode value: ${what}`)
  if (typeof v.id !== 'bigint' || v.id <= 0n || v.id > MAX_UINT64) throw bad(`id must be a non-zero uint64 bigint, got ${String(v.id)}`)
  if (!isUint(v.type, 0xffff)) throw bad(`type must be a uint16, got ${String(v.type)}`)
  if (v.seq !== undefined && !isUint(v.seq, 0xffff)) throw bad(`seq must be a uint16, got ${String(v.seq)}`)
  if (v.priority !== undefined && !isUint(v.priority, 0xffffffff)) throw bad(`priority must be a uint32, got ${String(v.priority)}`)
  if (v.recipient !== undefined && v.recipient.length !== 20) throw bad(`recipient must be 20 bytes, got ${v.recipient.length}`)
}

function isUint(n: unknown, max: number): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= max
}

/** The signed body B: `{[seq, owner, [to]], type, data, [utype]}`, exactly as msgpack-c writes it. */
export function packSignedBody(v: DhtValue): Buffer {
  checkEncodable(v)
  const w = new MsgpackWriter(64 + (v.data?.length ?? 0) + (v.owner?.length ?? 0))
  writeSignedBody(w, v)
  return w.finish()
}

/** The plaintext of an encrypted value: `{body: B, [sig]}`. */
export function packToEncrypt(v: DhtValue): Buffer {
  checkEncodable(v)
  const w = new MsgpackWriter(64 + (v.data?.length ?? 0) + (v.owner?.length ?? 0) + (v.signature?.length ?? 0))
  writeToEncrypt(w, v)
  return w.finish()
}

/** A value on the wire: `{id, dat: bin(cypher) | {body, [sig]}, [p], [pt]}`. */
export function packValue(v: DhtValue): Buffer {
  checkEncodable(v)
  const hasPrio = v.priority !== undefined && v.priority !== 0
  const hasPushType = v.pushType !== undefined && v.pushType.length > 0
  const w = new MsgpackWriter(96 + (v.data?.length ?? 0) + (v.owner?.length ?? 0) + (v.signature?.length ?? 0) + (v.cypher?.length ?? 0))
  w.map(2 + (hasPrio ? 1 : 0) + (hasPushType ? 1 : 0))
  w.str('id').uint(v.id)
  w.str('dat')
  writeToEncrypt(w, v)
  if (hasPrio) w.str('p').uint(v.priority!)
  if (hasPushType) w.str('pt').str(v.pushType!)
  return w.finish()
}

/**
 * The values of the requested fields, in ascending field order, as OpenDHT's `msgpack_pack_fields` writes them
 * for a SELECT reply (`fileds: {f, v}`): id and type and seq as unsigned, owner as bin(DER) (or 20 zero bytes when
 * unsigned), user type as str. Unknown field codes are skipped.
 */
export function valueFieldValues(v: DhtValue, fields: Iterable<number>): Array<bigint | number | Buffer | string> {
  const out: Array<bigint | number | Buffer | string> = []
  for (const f of [...new Set(fields)].sort((a, b) => a - b)) {
    switch (f) {
      case ValueField.ID:
        out.push(v.id)
        break
      case ValueField.VALUE_TYPE:
        out.push(v.type)
        break
      case ValueField.OWNER_PK:
        out.push(v.owner && v.owner.length > 0 ? v.owner : Buffer.alloc(20))
        break
      case ValueField.SEQ_NUM:
        out.push(v.seq ?? 0)
        break
      case ValueField.USER_TYPE:
        out.push(v.userType ?? '')
        break
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding values

/** Options an Unpackr needs for `decodeValue` (64-bit ints as bigint, maps as plain objects, no records). */
export const VALUE_UNPACKR_OPTIONS = { int64AsType: 'bigint', mapsAsObjects: true, useRecords: false } as const

const unpackr = new Unpackr(VALUE_UNPACKR_OPTIONS)

function badValue(message: string, cause?: unknown): DhtnetError {
  return new DhtnetError('BAD_VALUE', `malformed OpenDHT value: ${message}`, cause === undefined ? {} : { cause })
}

function field(o: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined
}

function asObject(x: unknown, what: string): Record<string, unknown> {
  if (x === null || typeof x !== 'object' || Array.isArray(x) || x instanceof Uint8Array) throw badValue(`${what} is not a map`)
  if (x instanceof Map) return Object.fromEntries(x) as Record<string, unknown>
  return x as Record<string, unknown>
}

function asUint(x: unknown, max: bigint, what: string): bigint {
  let n: bigint
  if (typeof x === 'bigint') n = x
  else if (typeof x === 'number' && Number.isInteger(x)) n = BigInt(x)
  else throw badValue(`${what} is not an integer`)
  if (n < 0n || n > max) throw badValue(`${what} out of range (${n})`)
  return n
}

/** msgpack-c `unpackBlob`: bin, str or an array of bytes. */
function asBlob(x: unknown, what: string): Buffer {
  if (Buffer.isBuffer(x)) return x
  if (x instanceof Uint8Array) return Buffer.from(x.buffer, x.byteOffset, x.byteLength)
  if (typeof x === 'string') return Buffer.from(x, 'utf8')
  if (Array.isArray(x)) {
    const out = Buffer.alloc(x.length)
    x.forEach((b, i) => {
      out[i] = Number(asUint(b, 0xffn, `${what}[${i}]`))
    })
    return out
  }
  throw badValue(`${what} is not binary`)
}

function asString(x: unknown, what: string): string {
  if (typeof x === 'string') return x
  if (x instanceof Uint8Array) return Buffer.from(x).toString('utf8')
  throw badValue(`${what} is not a string`)
}

/**
 * The body part of a value (`Value::msgpack_unpack_body`): bin(cypher) or `{body: B, [sig]}`. Also used on the
 * plaintext of an encrypted value.
 */
export function decodeValueBody(id: bigint, dat: unknown): DhtValue {
  if (dat instanceof Uint8Array) {
    const cypher = asBlob(dat, 'dat')
    return { id, type: 0, cypher }
  }
  const o = asObject(dat, 'dat')
  const body = asObject(field(o, 'body'), 'dat.body')
  const rdata = field(body, 'data')
  if (rdata === undefined) throw badValue('body has no data')
  const rtype = field(body, 'type')
  if (rtype === undefined) throw badValue('body has no type')
  const v: DhtValue = { id, type: Number(asUint(rtype, 0xffffn, 'type')), data: asBlob(rdata, 'data') }
  const rutype = field(body, 'utype')
  if (rutype !== undefined) {
    const ut = asString(rutype, 'utype')
    if (ut.length > 0) v.userType = ut
  }
  const rowner = field(body, 'owner')
  if (rowner !== undefined) {
    const rseq = field(body, 'seq')
    if (rseq === undefined) throw badValue('signed body has no seq')
    v.seq = Number(asUint(rseq, 0xffffn, 'seq'))
    const owner = asBlob(rowner, 'owner')
    if (owner.length === 0) throw badValue('owner is empty')
    v.owner = owner
    const rto = field(body, 'to')
    if (rto !== undefined) {
      const to = asBlob(rto, 'to')
      if (to.length !== 20) throw badValue(`recipient is ${to.length} bytes, not 20`)
      v.recipient = to
    }
    const rsig = field(o, 'sig')
    if (rsig === undefined) throw badValue('signed value has no signature')
    v.signature = asBlob(rsig, 'sig')
  }
  return v
}

/** A value from an object decoded by msgpackr with VALUE_UNPACKR_OPTIONS. Throws DhtnetError('BAD_VALUE'). */
export function decodeValue(obj: unknown): DhtValue {
  const o = asObject(obj, 'value')
  const rid = field(o, 'id')
  if (rid === undefined) throw badValue('no id')
  const id = asUint(rid, MAX_UINT64, 'id')
  if (id === 0n) throw badValue('id is 0')
  const rdat = field(o, 'dat')
  if (rdat === undefined) throw badValue('no dat')
  const v = decodeValueBody(id, rdat)
  const rprio = field(o, 'p')
  if (rprio !== undefined) {
    const p = Number(asUint(rprio, 0xffffffffn, 'priority'))
    if (p !== 0) v.priority = p
  }
  const rpt = field(o, 'pt')
  if (rpt !== undefined) {
    const pt = asString(rpt, 'pushType')
    if (pt.length > 0) v.pushType = pt
  }
  return v
}

/** Decode msgpack bytes with the value options (throws DhtnetError('BAD_VALUE') when they are not msgpack). */
export function msgpackDecode(buf: Uint8Array, what = 'value'): unknown {
  try {
    return unpackr.unpack(buf)
  } catch (err) {
    throw badValue(`${what} is not valid msgpack`, err)
  }
}

/** A value from its packed bytes. */
export function unpackValue(buf: Uint8Array): DhtValue {
  return decodeValue(msgpackDecode(buf))
}

/** A deep copy (buffers copied). */
export function cloneValue(v: DhtValue): DhtValue {
  const c: DhtValue = { ...v }
  for (const k of ['data', 'owner', 'recipient', 'signature', 'cypher'] as const) {
    const b = v[k]
    if (b !== undefined) c[k] = Buffer.from(b)
  }
  return c
}

/** Short human-readable form, like OpenDHT's `operator<<`. */
export function formatValue(v: DhtValue): string {
  let s = `Value[id:${v.id.toString(16)} `
  if (isEncryptedValue(v)) s += 'encrypted '
  else if (isSignedValue(v)) s += `signed (v${v.seq ?? 0}) ${v.recipient ? 'decrypted ' : ''}`
  if (!isEncryptedValue(v)) {
    const data = v.data ?? EMPTY
    if (v.type === ValueType.CERTIFICATE) s += 'Certificate'
    else {
      s += v.userType ? `data(${v.userType}):` : 'data:'
      if (v.userType === 'text/plain') s += JSON.stringify(data.toString('utf8'))
      else if (data.length < 1024) s += data.toString('hex')
      else s += `${data.length} bytes`
    }
  }
  return s + ']'
}
