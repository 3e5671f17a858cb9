/**
 * STUN numbers (RFC 8489, RFC 8445 for ICE, RFC 8656 for TURN): message classes and methods, attribute types.
 */

/** The fixed magic cookie of every RFC 5389/8489 message (bytes 4-7). */
export const MAGIC_COOKIE = 0x2112a442
/** Header size: type (2), length (2), cookie (4), transaction id (12). */
export const HEADER_BYTES = 20
export const TRANSACTION_ID_BYTES = 12

export type StunClass = 'request' | 'indication' | 'success' | 'error'

/** Methods (12 bits). TURN ones are listed so a TURN client can use the same names. */
export const StunMethod = {
  BINDING: 0x001,
  ALLOCATE: 0x003,
  REFRESH: 0x004,
  SEND: 0x006,
  DATA: 0x007,
  CREATE_PERMISSION: 0x008,
  CHANNEL_BIND: 0x009,
  CONNECT: 0x00a,
  CONNECTION_BIND: 0x00b,
  CONNECTION_ATTEMPT: 0x00c,
} as const

/** Attribute types. Below 0x8000: comprehension-required; 0x8000 and up: comprehension-optional. */
export const StunAttr = {
  MAPPED_ADDRESS: 0x0001,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  CHANNEL_NUMBER: 0x000c,
  LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012,
  DATA: 0x0013,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_ADDRESS_FAMILY: 0x0017,
  EVEN_PORT: 0x0018,
  REQUESTED_TRANSPORT: 0x0019,
  DONT_FRAGMENT: 0x001a,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  PASSWORD_ALGORITHM: 0x001d,
  USERHASH: 0x001e,
  XOR_MAPPED_ADDRESS: 0x0020,
  RESERVATION_TOKEN: 0x0022,
  PRIORITY: 0x0024,
  USE_CANDIDATE: 0x0025,
  CONNECTION_ID: 0x002a,
  PASSWORD_ALGORITHMS: 0x8002,
  ALTERNATE_DOMAIN: 0x8003,
  SOFTWARE: 0x8022,
  ALTERNATE_SERVER: 0x8023,
  FINGERPRINT: 0x8028,
  ICE_CONTROLLED: 0x8029,
  ICE_CONTROLLING: 0x802a,
} as const

/** Error codes used by ICE and TURN (the reason phrases are RFC 8489's recommended ones). */
export const StunErrorCode = {
  TRY_ALTERNATE: 300,
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  UNKNOWN_ATTRIBUTE: 420,
  ALLOCATION_MISMATCH: 437,
  STALE_NONCE: 438,
  ROLE_CONFLICT: 487,
  SERVER_ERROR: 500,
  INSUFFICIENT_CAPACITY: 508,
} as const

/** XOR of the CRC-32 in FINGERPRINT ("STUN"). */
export const FINGERPRINT_XOR = 0x5354554e

const CLASS_BITS: Record<StunClass, number> = { request: 0x0000, indication: 0x0010, success: 0x0100, error: 0x0110 }

/** The 16-bit message type of a method and a class (RFC 8489 §5: class bits interleaved with the method bits). */
export function messageType(method: number, cls: StunClass): number {
  const m = method & 0x0fff
  return ((m & 0x0f80) << 2) | ((m & 0x0070) << 1) | (m & 0x000f) | CLASS_BITS[cls]
}

export function methodOf(type: number): number {
  return ((type & 0x3e00) >> 2) | ((type & 0x00e0) >> 1) | (type & 0x000f)
}

export function classOf(type: number): StunClass {
  switch (type & 0x0110) {
    case 0x0000:
      return 'request'
    case 0x0010:
      return 'indication'
    case 0x0100:
      return 'success'
    default:
      return 'error'
  }
}

/** Frequently used types. */
export const BINDING_REQUEST = messageType(StunMethod.BINDING, 'request')
export const BINDING_SUCCESS = messageType(StunMethod.BINDING, 'success')
export const BINDING_ERROR = messageType(StunMethod.BINDING, 'error')
export const BINDING_INDICATION = messageType(StunMethod.BINDING, 'indication')
