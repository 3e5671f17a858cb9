/**
 * STUN message decoding (RFC 8489 §5-§6, §14): a bounded parser that never copies the attribute values
 * (they are subarrays of the input) and typed accessors for the attributes ICE and TURN use.
 */
import { DhtnetError } from '../../errors.js'
import { HEADER_BYTES, MAGIC_COOKIE, StunAttr, TRANSACTION_ID_BYTES, classOf, methodOf, type StunClass } from './constants.js'
import { readAddress, readErrorCode, readUnknownAttributes, readXorAddress, type StunErrorValue } from './attributes.js'
import type { TransportAddress } from './ip.js'

export interface StunAttribute {
  readonly type: number
  /** The value without padding (a view into the message buffer). */
  readonly value: Buffer
  /** Offset of the attribute's 4-byte header inside the message. */
  readonly offset: number
}

export interface StunParseLimits {
  /** Largest message accepted, header included (default 4096; a STUN message over TCP may be up to 65535). */
  readonly maxBytes?: number
  /** Most attributes accepted (default 32). */
  readonly maxAttributes?: number
}

export const DEFAULT_MAX_STUN_BYTES = 4096
export const DEFAULT_MAX_STUN_ATTRIBUTES = 32

/** Cheap test: could `buf` be one whole STUN message (first two bits 0, magic cookie, length matches)? */
export function looksLikeStun(buf: Uint8Array): boolean {
  if (buf.length < HEADER_BYTES || (buf[0]! & 0xc0) !== 0) return false
  const length = (buf[2]! << 8) | buf[3]!
  if ((length & 3) !== 0 || length + HEADER_BYTES !== buf.length) return false
  return buf[4] === 0x21 && buf[5] === 0x12 && buf[6] === 0xa4 && buf[7] === 0x42
}

function fail(reason: string): never {
  throw new DhtnetError('STUN_ERROR', `malformed STUN message: ${reason}`)
}

/**
 * A decoded message. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are dropped (RFC 8489 §14.5);
 * when an attribute type repeats, the typed accessors read the first one (§14).
 */
export class StunMessage {
  private constructor(
    /** The whole message as received (a view, not a copy). */
    readonly raw: Buffer,
    readonly type: number,
    readonly transactionId: Buffer,
    readonly attributes: readonly StunAttribute[],
  ) {}

  /**
   * Decode one whole message (`buf` must hold exactly one message: over TCP, one RFC 4571 frame).
   * Throws DhtnetError('STUN_ERROR') naming the problem; never anything else. Cost is linear in the size, bounded.
   */
  static decode(buf: Buffer, limits: StunParseLimits = {}): StunMessage {
    const maxBytes = limits.maxBytes ?? DEFAULT_MAX_STUN_BYTES
    const maxAttributes = limits.maxAttributes ?? DEFAULT_MAX_STUN_ATTRIBUTES
    if (buf.length > maxBytes) fail(`${buf.length} bytes, more than the ${maxBytes} accepted`)
    if (buf.length < HEADER_BYTES) fail(`${buf.length} bytes, shorter than a header`)
    const type = buf.readUInt16BE(0)
    if ((type & 0xc000) !== 0) fail('the first two bits are not zero')
    const length = buf.readUInt16BE(2)
    if ((length & 3) !== 0) fail(`length ${length} is not a multiple of 4`)
    if (length + HEADER_BYTES !== buf.length) fail(`length ${length} does not match the ${buf.length - HEADER_BYTES} bytes after the header`)
    if (buf.readUInt32BE(4) !== MAGIC_COOKIE) fail('no magic cookie')
    const attributes: StunAttribute[] = []
    let offset = HEADER_BYTES
    let afterIntegrity = false
    while (offset < buf.length) {
      if (offset + 4 > buf.length) fail('truncated attribute header')
      const attrType = buf.readUInt16BE(offset)
      const attrLen = buf.readUInt16BE(offset + 2)
      const valueEnd = offset + 4 + attrLen
      if (valueEnd > buf.length) fail(`attribute 0x${attrType.toString(16)} runs past the end`)
      const padded = offset + 4 + ((attrLen + 3) & ~3)
      if (padded > buf.length) fail(`attribute 0x${attrType.toString(16)} padding runs past the end`)
      if (attributes.length >= maxAttributes) fail(`more than ${maxAttributes} attributes`)
      if (attrType === StunAttr.FINGERPRINT) {
        if (attrLen !== 4) fail('FINGERPRINT is not 4 bytes')
        if (padded !== buf.length) fail('FINGERPRINT is not the last attribute')
        attributes.push({ type: attrType, value: buf.subarray(offset + 4, valueEnd), offset })
      } else if (!afterIntegrity) {
        if (attrType === StunAttr.MESSAGE_INTEGRITY) {
          if (attrLen !== 20) fail('MESSAGE-INTEGRITY is not 20 bytes')
          afterIntegrity = true
        }
        attributes.push({ type: attrType, value: buf.subarray(offset + 4, valueEnd), offset })
      }
      offset = padded
    }
    return new StunMessage(buf, type, buf.subarray(8, 8 + TRANSACTION_ID_BYTES), attributes)
  }

  get method(): number {
    return methodOf(this.type)
  }

  get class(): StunClass {
    return classOf(this.type)
  }

  get transactionIdHex(): string {
    return this.transactionId.toString('hex')
  }

  /** The first attribute of that type. */
  get(type: number): StunAttribute | undefined {
    for (const a of this.attributes) if (a.type === type) return a
    return undefined
  }

  getAll(type: number): StunAttribute[] {
    return this.attributes.filter((a) => a.type === type)
  }

  has(type: number): boolean {
    return this.get(type) !== undefined
  }

  /** Comprehension-required attribute types (< 0x8000) not in `known`: what an UNKNOWN-ATTRIBUTES answer lists. */
  unknownRequired(known: ReadonlySet<number>): number[] {
    const out: number[] = []
    for (const a of this.attributes) if (a.type < 0x8000 && !known.has(a.type) && !out.includes(a.type)) out.push(a.type)
    return out
  }

  private text(type: number): string | undefined {
    return this.get(type)?.value.toString('utf8')
  }

  private uint32(type: number): number | undefined {
    const a = this.get(type)
    if (!a) return undefined
    if (a.value.length !== 4) fail(`attribute 0x${type.toString(16)} is not 4 bytes`)
    return a.value.readUInt32BE(0)
  }

  private uint64(type: number): bigint | undefined {
    const a = this.get(type)
    if (!a) return undefined
    if (a.value.length !== 8) fail(`attribute 0x${type.toString(16)} is not 8 bytes`)
    return a.value.readBigUInt64BE(0)
  }

  get username(): string | undefined {
    return this.text(StunAttr.USERNAME)
  }

  get realm(): string | undefined {
    return this.text(StunAttr.REALM)
  }

  get nonce(): string | undefined {
    return this.text(StunAttr.NONCE)
  }

  /** SOFTWARE as sent (pjnath's value keeps NUL bytes inside its declared length). */
  get software(): string | undefined {
    return this.text(StunAttr.SOFTWARE)
  }

  get priority(): number | undefined {
    return this.uint32(StunAttr.PRIORITY)
  }

  get useCandidate(): boolean {
    return this.has(StunAttr.USE_CANDIDATE)
  }

  /** The tie-breaker of ICE-CONTROLLING, when present. */
  get iceControlling(): bigint | undefined {
    return this.uint64(StunAttr.ICE_CONTROLLING)
  }

  get iceControlled(): bigint | undefined {
    return this.uint64(StunAttr.ICE_CONTROLLED)
  }

  get lifetime(): number | undefined {
    return this.uint32(StunAttr.LIFETIME)
  }

  get xorMappedAddress(): TransportAddress | undefined {
    return this.xorAddress(StunAttr.XOR_MAPPED_ADDRESS)
  }

  get mappedAddress(): TransportAddress | undefined {
    const a = this.get(StunAttr.MAPPED_ADDRESS)
    return a ? readAddress(a.value) : undefined
  }

  /** Any XOR-encoded address attribute (XOR-MAPPED-ADDRESS, TURN's XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS). */
  xorAddress(type: number): TransportAddress | undefined {
    const a = this.get(type)
    return a ? readXorAddress(a.value, this.transactionId) : undefined
  }

  get errorCode(): StunErrorValue | undefined {
    const a = this.get(StunAttr.ERROR_CODE)
    return a ? readErrorCode(a.value) : undefined
  }

  get unknownAttributes(): number[] | undefined {
    const a = this.get(StunAttr.UNKNOWN_ATTRIBUTES)
    return a ? readUnknownAttributes(a.value) : undefined
  }
}
