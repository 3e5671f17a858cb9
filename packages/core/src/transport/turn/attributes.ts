/**
 * TURN numbers and attribute values the STUN codec does not type (RFC 8656, RFC 6062 for TCP relays):
 * REQUESTED-TRANSPORT, CONNECTION-ID, the TURN error codes, and what each error means for the caller.
 */
import { DhtnetError } from '../../errors.js'
import { StunAttr } from '../stun/constants.js'
import type { StunMessage } from '../stun/message.js'

/** IANA protocol number of TCP, the REQUESTED-TRANSPORT of an RFC 6062 allocation. */
export const PROTOCOL_TCP = 6

/** Error codes a TURN server answers with (RFC 8656 §19, RFC 6062 §6.3). */
export const TurnErrorCode = {
  TRY_ALTERNATE: 300,
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  ALLOCATION_MISMATCH: 437,
  STALE_NONCE: 438,
  ADDRESS_FAMILY_NOT_SUPPORTED: 440,
  WRONG_CREDENTIALS: 441,
  UNSUPPORTED_TRANSPORT_PROTOCOL: 442,
  PEER_ADDRESS_FAMILY_MISMATCH: 443,
  CONNECTION_ALREADY_EXISTS: 446,
  CONNECTION_TIMEOUT_OR_FAILURE: 447,
  ALLOCATION_QUOTA_REACHED: 486,
  SERVER_ERROR: 500,
  INSUFFICIENT_CAPACITY: 508,
} as const

/** REQUESTED-TRANSPORT value: the protocol number, then 3 reserved bytes (RFFU). */
export function encodeRequestedTransport(protocol: number = PROTOCOL_TCP): Buffer {
  const out = Buffer.alloc(4)
  out[0] = protocol & 0xff
  return out
}

/** CONNECTION-ID value (RFC 6062 §6.2.1): a 32-bit number chosen by the server. */
export function encodeConnectionId(id: number): Buffer {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new DhtnetError('INVALID_ARGUMENT', `CONNECTION-ID ${id} is not a 32-bit number`)
  const out = Buffer.alloc(4)
  out.writeUInt32BE(id, 0)
  return out
}

/** The CONNECTION-ID of a message; undefined when absent or not 4 bytes (a malformed one is treated as absent). */
export function readConnectionId(msg: StunMessage): number | undefined {
  const a = msg.get(StunAttr.CONNECTION_ID)
  if (!a || a.value.length !== 4) return undefined
  return a.value.readUInt32BE(0)
}

/** A server's error answer turned into what it means for us. */
export type ErrorVerdict =
  /** 401 without credentials yet, or 438: take REALM/NONCE and try again */
  'challenge' | 'auth-failed' | 'refused' | 'peer-unreachable' | 'allocation-gone' | 'other'

export function classifyTurnError(code: number): ErrorVerdict {
  switch (code) {
    case TurnErrorCode.UNAUTHORIZED:
    case TurnErrorCode.STALE_NONCE:
      return 'challenge'
    case TurnErrorCode.WRONG_CREDENTIALS:
      return 'auth-failed'
    case TurnErrorCode.FORBIDDEN:
    case TurnErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL:
    case TurnErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED:
    case TurnErrorCode.PEER_ADDRESS_FAMILY_MISMATCH:
    case TurnErrorCode.ALLOCATION_QUOTA_REACHED:
    case TurnErrorCode.INSUFFICIENT_CAPACITY:
    case TurnErrorCode.CONNECTION_ALREADY_EXISTS:
    case TurnErrorCode.TRY_ALTERNATE:
      return 'refused'
    case TurnErrorCode.CONNECTION_TIMEOUT_OR_FAILURE:
      return 'peer-unreachable'
    case TurnErrorCode.ALLOCATION_MISMATCH:
      return 'allocation-gone'
    default:
      return 'other'
  }
}

/** Printable reason phrase of an error response: bounded and stripped of control characters (it comes from the
 *  network and ends up in logs and error messages). */
export function reasonOf(msg: StunMessage): string {
  let value: { code: number; reason: string } | undefined
  try {
    value = msg.errorCode
  } catch {
    value = undefined
  }
  if (!value) return 'error response without a valid ERROR-CODE'
  // eslint-disable-next-line no-control-regex -- control characters are exactly what this removes from text a server sent
  const reason = value.reason.replace(/[\x00-\x1f\x7f]/g, '').slice(0, 80)
  return reason ? `${value.code} ${reason}` : String(value.code)
}

/** ERROR-CODE number of an error response, 0 when it has none or a malformed one. */
export function errorCodeOf(msg: StunMessage): number {
  try {
    return msg.errorCode?.code ?? 0
  } catch {
    return 0
  }
}
