/**
 * MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) and FINGERPRINT (CRC-32 xor 0x5354554e, §14.7): keys, computation
 * and verification. Verification works on the received bytes without copying the message.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { FINGERPRINT_XOR, HEADER_BYTES, StunAttr } from './constants.js'
import { crc32 } from './crc32.js'
import type { StunMessage } from './message.js'

/** Short-term credential key (ICE): the password's bytes (SASLprep is the identity for ICE's hex passwords). */
export function shortTermKey(password: string): Buffer {
  return Buffer.from(password, 'utf8')
}

/** Long-term credential key (TURN): MD5(username ":" realm ":" password). */
export function longTermKey(username: string, realm: string, password: string): Buffer {
  return createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest()
}

/**
 * HMAC-SHA1 over `message[0, integrityOffset)` as if the header length ended right after MESSAGE-INTEGRITY
 * (the length field is patched in a 20-byte copy of the header; the rest is hashed in place).
 */
export function computeIntegrity(message: Uint8Array, integrityOffset: number, key: Uint8Array): Buffer {
  const header = Buffer.from(message.subarray(0, HEADER_BYTES))
  header.writeUInt16BE(integrityOffset + 24 - HEADER_BYTES, 2)
  return createHmac('sha1', key).update(header).update(message.subarray(HEADER_BYTES, integrityOffset)).digest()
}

/** FINGERPRINT value for a message whose FINGERPRINT attribute starts at `fingerprintOffset` (the header length
 *  must already count it). */
export function computeFingerprint(message: Uint8Array, fingerprintOffset: number): number {
  return (crc32(message, 0, fingerprintOffset) ^ FINGERPRINT_XOR) >>> 0
}

/** true when the message carries MESSAGE-INTEGRITY and it matches `key`. */
export function verifyIntegrity(msg: StunMessage, key: Uint8Array): boolean {
  const mi = msg.get(StunAttr.MESSAGE_INTEGRITY)
  if (!mi || mi.value.length !== 20) return false
  const expected = computeIntegrity(msg.raw, mi.offset, key)
  return timingSafeEqual(expected, mi.value)
}

/** true when the message carries FINGERPRINT (as its last attribute) and it matches. */
export function verifyFingerprint(msg: StunMessage): boolean {
  const fp = msg.get(StunAttr.FINGERPRINT)
  if (!fp || fp.value.length !== 4 || fp.offset + 8 !== msg.raw.length) return false
  return fp.value.readUInt32BE(0) === computeFingerprint(msg.raw, fp.offset)
}
