/**
 * Value codecs of the structured attributes (RFC 8489 §14): (XOR-)MAPPED-ADDRESS, ERROR-CODE, UNKNOWN-ATTRIBUTES.
 * Readers throw DhtnetError('STUN_ERROR') on malformed values; writers validate their input.
 */
import { DhtnetError } from '../../errors.js'
import { MAGIC_COOKIE } from './constants.js'
import { bytesToIp, ipToBytes, type TransportAddress } from './ip.js'

export interface StunErrorValue {
  /** 300..699 */
  readonly code: number
  readonly reason: string
}

function fail(reason: string): never {
  throw new DhtnetError('STUN_ERROR', `malformed STUN attribute: ${reason}`)
}

const FAMILY_V4 = 0x01
const FAMILY_V6 = 0x02

/** MAPPED-ADDRESS value (also ALTERNATE-SERVER and the like). */
export function readAddress(value: Buffer): TransportAddress {
  return decodeAddress(value, undefined)
}

/** XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS value; the transaction id unmasks IPv6. */
export function readXorAddress(value: Buffer, transactionId: Uint8Array): TransportAddress {
  return decodeAddress(value, transactionId)
}

function decodeAddress(value: Buffer, transactionId: Uint8Array | undefined): TransportAddress {
  if (value.length < 4) fail('address attribute shorter than 4 bytes')
  const family = value[1]
  const size = family === FAMILY_V4 ? 4 : family === FAMILY_V6 ? 16 : fail(`unknown address family ${family}`)
  if (value.length !== 4 + size) fail(`address attribute of ${value.length} bytes for family ${family}`)
  let port = value.readUInt16BE(2)
  const ip = Buffer.from(value.subarray(4, 4 + size))
  if (transactionId) {
    port ^= MAGIC_COOKIE >>> 16
    const mask = xorMask(transactionId)
    for (let i = 0; i < size; i++) ip[i]! ^= mask[i]!
  }
  return { family: size === 4 ? 4 : 6, address: bytesToIp(ip), port }
}

function xorMask(transactionId: Uint8Array): Buffer {
  const mask = Buffer.alloc(16)
  mask.writeUInt32BE(MAGIC_COOKIE, 0)
  mask.set(transactionId.subarray(0, 12), 4)
  return mask
}

export function encodeAddress(addr: { address: string; port: number }): Buffer {
  return encode(addr, undefined)
}

export function encodeXorAddress(addr: { address: string; port: number }, transactionId: Uint8Array): Buffer {
  return encode(addr, transactionId)
}

function encode(addr: { address: string; port: number }, transactionId: Uint8Array | undefined): Buffer {
  const ip = ipToBytes(addr.address)
  if (!ip) throw new DhtnetError('BAD_ADDRESS', `not an IP address: ${JSON.stringify(addr.address)}`)
  if (!Number.isInteger(addr.port) || addr.port < 0 || addr.port > 65535) throw new DhtnetError('BAD_ADDRESS', `bad port ${addr.port}`)
  const out = Buffer.alloc(4 + ip.length)
  out[1] = ip.length === 4 ? FAMILY_V4 : FAMILY_V6
  let port = addr.port
  if (transactionId) {
    port ^= MAGIC_COOKIE >>> 16
    const mask = xorMask(transactionId)
    for (let i = 0; i < ip.length; i++) ip[i]! ^= mask[i]!
  }
  out.writeUInt16BE(port, 2)
  out.set(ip, 4)
  return out
}

export function readErrorCode(value: Buffer): StunErrorValue {
  if (value.length < 4) fail('ERROR-CODE shorter than 4 bytes')
  const cls = value[2]! & 0x07
  const number = value[3]!
  if (cls < 3 || cls > 6 || number > 99) fail(`ERROR-CODE class ${cls} number ${number}`)
  return { code: cls * 100 + number, reason: value.subarray(4).toString('utf8') }
}

export function encodeErrorCode(code: number, reason: string): Buffer {
  if (!Number.isInteger(code) || code < 300 || code > 699) throw new DhtnetError('INVALID_ARGUMENT', `STUN error code ${code} is not in 300..699`)
  const text = Buffer.from(reason, 'utf8')
  if (text.length > 763) throw new DhtnetError('INVALID_ARGUMENT', 'STUN error reason longer than 763 bytes')
  const out = Buffer.alloc(4 + text.length)
  out[2] = Math.floor(code / 100)
  out[3] = code % 100
  out.set(text, 4)
  return out
}

export function readUnknownAttributes(value: Buffer): number[] {
  if (value.length % 2 !== 0) fail('UNKNOWN-ATTRIBUTES has an odd length')
  const out: number[] = []
  for (let i = 0; i < value.length; i += 2) out.push(value.readUInt16BE(i))
  return out
}

export function encodeUnknownAttributes(types: readonly number[]): Buffer {
  const out = Buffer.alloc(types.length * 2)
  types.forEach((t, i) => out.writeUInt16BE(t & 0xffff, i * 2))
  return out
}
