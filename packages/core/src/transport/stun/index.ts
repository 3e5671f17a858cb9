export {
  MAGIC_COOKIE,
  HEADER_BYTES,
  TRANSACTION_ID_BYTES,
  FINGERPRINT_XOR,
  StunMethod,
  StunAttr,
  StunErrorCode,
  messageType,
  methodOf,
  classOf,
  BINDING_REQUEST,
  BINDING_SUCCESS,
  BINDING_ERROR,
  BINDING_INDICATION,
} from './constants.js'
export type { StunClass } from './constants.js'
export { StunMessage, looksLikeStun, DEFAULT_MAX_STUN_BYTES, DEFAULT_MAX_STUN_ATTRIBUTES } from './message.js'
export type { StunAttribute, StunParseLimits } from './message.js'
export { StunMessageBuilder, randomTransactionId } from './builder.js'
export type { BuildOptions } from './builder.js'
export { shortTermKey, longTermKey, computeIntegrity, computeFingerprint, verifyIntegrity, verifyFingerprint } from './integrity.js'
export { readAddress, readXorAddress, encodeAddress, encodeXorAddress, readErrorCode, encodeErrorCode, readUnknownAttributes, encodeUnknownAttributes } from './attributes.js'
export type { StunErrorValue } from './attributes.js'
export { crc32 } from './crc32.js'
export { ipToBytes, bytesToIp, ipFamily, normalizeIp, formatHostPort } from './ip.js'
export type { IpFamily, TransportAddress } from './ip.js'
