/**
 * STUN message encoding: attributes are appended in call order (as TLVs, zero-padded to 4 bytes);
 * MESSAGE-INTEGRITY and FINGERPRINT are added last by build().
 */
import { randomBytes } from 'node:crypto'
import { DhtnetError } from '../../errors.js'
import { HEADER_BYTES, MAGIC_COOKIE, StunAttr, TRANSACTION_ID_BYTES, messageType, type StunClass } from './constants.js'
import { encodeAddress, encodeErrorCode, encodeUnknownAttributes, encodeXorAddress } from './attributes.js'
import { computeFingerprint, computeIntegrity } from './integrity.js'
import type { StunMessage } from './message.js'

export function randomTransactionId(): Buffer {
  return randomBytes(TRANSACTION_ID_BYTES)
}

export interface BuildOptions {
  /** Add MESSAGE-INTEGRITY keyed with this (shortTermKey / longTermKey). */
  readonly integrityKey?: Uint8Array | undefined
  /** Add FINGERPRINT (default true: ICE requires it). */
  readonly fingerprint?: boolean | undefined
}

/** Longest message build() produces (the 16-bit length field). */
const MAX_BODY = 0xffff - 3

export class StunMessageBuilder {
  private readonly attrs: Array<{ type: number; value: Uint8Array }> = []
  private bodyLength = 0

  constructor(
    readonly type: number,
    readonly transactionId: Buffer = randomTransactionId(),
  ) {
    if (transactionId.length !== TRANSACTION_ID_BYTES) throw new DhtnetError('INVALID_ARGUMENT', 'a STUN transaction id has 12 bytes')
    if ((type & 0xc000) !== 0) throw new DhtnetError('INVALID_ARGUMENT', `STUN message type 0x${type.toString(16)} out of range`)
  }

  static create(method: number, cls: StunClass, transactionId?: Buffer): StunMessageBuilder {
    return new StunMessageBuilder(messageType(method, cls), transactionId)
  }

  /** A response (success or error) to `request`: same method, same transaction id. */
  static responseTo(request: StunMessage, cls: 'success' | 'error'): StunMessageBuilder {
    return new StunMessageBuilder(messageType(request.method, cls), Buffer.from(request.transactionId))
  }

  /** Any attribute, value unpadded. */
  add(type: number, value: Uint8Array = new Uint8Array(0)): this {
    if (!Number.isInteger(type) || type < 0 || type > 0xffff) throw new DhtnetError('INVALID_ARGUMENT', `STUN attribute type ${type} out of range`)
    if (value.length > 0xffff) throw new DhtnetError('INVALID_ARGUMENT', 'STUN attribute value longer than 65535 bytes')
    this.bodyLength += 4 + ((value.length + 3) & ~3)
    if (this.bodyLength > MAX_BODY) throw new DhtnetError('INVALID_ARGUMENT', 'STUN message longer than 65535 bytes')
    this.attrs.push({ type, value })
    return this
  }

  addEmpty(type: number): this {
    return this.add(type)
  }

  addUint32(type: number, n: number): this {
    const b = Buffer.alloc(4)
    b.writeUInt32BE(n >>> 0, 0)
    return this.add(type, b)
  }

  addUint64(type: number, n: bigint): this {
    const b = Buffer.alloc(8)
    b.writeBigUInt64BE(BigInt.asUintN(64, n), 0)
    return this.add(type, b)
  }

  addText(type: number, text: string | Uint8Array): this {
    return this.add(type, typeof text === 'string' ? Buffer.from(text, 'utf8') : text)
  }

  addAddress(type: number, addr: { address: string; port: number }): this {
    return this.add(type, encodeAddress(addr))
  }

  addXorAddress(type: number, addr: { address: string; port: number }): this {
    return this.add(type, encodeXorAddress(addr, this.transactionId))
  }

  addErrorCode(code: number, reason: string): this {
    return this.add(StunAttr.ERROR_CODE, encodeErrorCode(code, reason))
  }

  addUnknownAttributes(types: readonly number[]): this {
    return this.add(StunAttr.UNKNOWN_ATTRIBUTES, encodeUnknownAttributes(types))
  }

  /** The encoded message (one allocation). */
  build(options: BuildOptions = {}): Buffer {
    const withMi = options.integrityKey !== undefined
    const withFp = options.fingerprint ?? true
    const total = HEADER_BYTES + this.bodyLength + (withMi ? 24 : 0) + (withFp ? 8 : 0)
    if (total - HEADER_BYTES > MAX_BODY) throw new DhtnetError('INVALID_ARGUMENT', 'STUN message longer than 65535 bytes')
    const out = Buffer.alloc(total)
    out.writeUInt16BE(this.type, 0)
    out.writeUInt16BE(total - HEADER_BYTES, 2)
    out.writeUInt32BE(MAGIC_COOKIE, 4)
    out.set(this.transactionId, 8)
    let offset = HEADER_BYTES
    for (const a of this.attrs) {
      out.writeUInt16BE(a.type, offset)
      out.writeUInt16BE(a.value.length, offset + 2)
      out.set(a.value, offset + 4)
      offset += 4 + ((a.value.length + 3) & ~3)
    }
    if (withMi) {
      const mac = computeIntegrity(out, offset, options.integrityKey)
      out.writeUInt16BE(StunAttr.MESSAGE_INTEGRITY, offset)
      out.writeUInt16BE(20, offset + 2)
      mac.copy(out, offset + 4)
      offset += 24
    }
    if (withFp) {
      out.writeUInt16BE(StunAttr.FINGERPRINT, offset)
      out.writeUInt16BE(4, offset + 2)
      out.writeUInt32BE(computeFingerprint(out, offset), offset + 4)
    }
    return out
  }
}
