/**
 * The STUN messages of ICE connectivity checks, as pjnath writes them (see the captures):
 *  - request: PRIORITY, [USE-CANDIDATE], ICE-CONTROLLED | ICE-CONTROLLING, SOFTWARE, USERNAME (remote:local),
 *    MESSAGE-INTEGRITY (remote password), FINGERPRINT;
 *  - success: XOR-MAPPED-ADDRESS (the requester's address as we see it), SOFTWARE, MESSAGE-INTEGRITY (our password),
 *    FINGERPRINT;
 *  - error (487 role conflict, 400): ERROR-CODE, SOFTWARE, MESSAGE-INTEGRITY, FINGERPRINT.
 * Validation is strict (FINGERPRINT, USERNAME, MESSAGE-INTEGRITY, PRIORITY, exactly one role attribute) and costs one
 * HMAC-SHA1 over at most a few hundred bytes.
 */
import { StunAttr, StunMethod, BINDING_REQUEST } from '../stun/constants.js'
import { StunMessageBuilder } from '../stun/builder.js'
import { shortTermKey, verifyFingerprint, verifyIntegrity } from '../stun/integrity.js'
import type { StunMessage } from '../stun/message.js'

export type IceRole = 'controlling' | 'controlled'

export interface CheckRequestParams {
  readonly localUfrag: string
  readonly remoteUfrag: string
  readonly remotePwd: string
  readonly priority: number
  readonly role: IceRole
  readonly tieBreaker: bigint
  readonly useCandidate?: boolean
  /** SOFTWARE value (raw bytes kept as given); none when undefined. */
  readonly software?: Uint8Array | undefined
  readonly transactionId?: Buffer
}

export function buildCheckRequest(p: CheckRequestParams): Buffer {
  const b = new StunMessageBuilder(BINDING_REQUEST, p.transactionId).addUint32(StunAttr.PRIORITY, p.priority)
  if (p.useCandidate) b.addEmpty(StunAttr.USE_CANDIDATE)
  b.addUint64(p.role === 'controlling' ? StunAttr.ICE_CONTROLLING : StunAttr.ICE_CONTROLLED, p.tieBreaker)
  if (p.software) b.addText(StunAttr.SOFTWARE, p.software)
  b.addText(StunAttr.USERNAME, `${p.remoteUfrag}:${p.localUfrag}`)
  return b.build({ integrityKey: shortTermKey(p.remotePwd), fingerprint: true })
}

export function buildCheckSuccess(request: StunMessage, mapped: { address: string; port: number }, localPwd: string, software: Uint8Array | undefined): Buffer {
  const b = StunMessageBuilder.responseTo(request, 'success').addXorAddress(StunAttr.XOR_MAPPED_ADDRESS, mapped)
  if (software) b.addText(StunAttr.SOFTWARE, software)
  return b.build({ integrityKey: shortTermKey(localPwd), fingerprint: true })
}

export function buildCheckError(request: StunMessage, code: number, reason: string, localPwd: string, software: Uint8Array | undefined): Buffer {
  const b = StunMessageBuilder.responseTo(request, 'error').addErrorCode(code, reason)
  if (software) b.addText(StunAttr.SOFTWARE, software)
  return b.build({ integrityKey: shortTermKey(localPwd), fingerprint: true })
}

export interface ValidCheck {
  readonly remoteUfrag: string
  readonly priority: number
  readonly useCandidate: boolean
  /** The peer's role and tie-breaker. */
  readonly peerRole: IceRole
  readonly peerTieBreaker: bigint
}

/** `<localUfrag>:<remote ufrag>` → the remote ufrag, when the USERNAME is for us. */
export function remoteUfragOf(msg: StunMessage, localUfrag: string): string | undefined {
  const username = msg.get(StunAttr.USERNAME)?.value
  if (!username || username.length > 513) return undefined
  const text = username.toString('latin1')
  const colon = text.indexOf(':')
  if (colon < 0 || text.slice(0, colon) !== localUfrag) return undefined
  return text.slice(colon + 1)
}

/** The local ufrag a check is addressed to (the part of USERNAME before ':'), for routing inbound connections. */
export function targetUfragOf(msg: StunMessage): string | undefined {
  const username = msg.get(StunAttr.USERNAME)?.value
  if (!username || username.length > 513) return undefined
  const colon = username.indexOf(0x3a)
  return colon > 0 ? username.subarray(0, colon).toString('latin1') : undefined
}

/**
 * A connectivity check addressed to us: Binding request, FINGERPRINT, USERNAME `<localUfrag>:<remote>` (and
 * `<remote>` = expectedRemoteUfrag when known), MESSAGE-INTEGRITY with our password, PRIORITY, one role attribute.
 * Returns a reason string when it is not.
 */
export function validateCheckRequest(msg: StunMessage, localUfrag: string, localPwd: string, expectedRemoteUfrag: string | undefined): ValidCheck | string {
  if (msg.method !== StunMethod.BINDING || msg.class !== 'request') return 'not a Binding request'
  if (!verifyFingerprint(msg)) return 'no valid FINGERPRINT'
  const remoteUfrag = remoteUfragOf(msg, localUfrag)
  if (remoteUfrag === undefined) return 'USERNAME is not for this session'
  if (expectedRemoteUfrag !== undefined && remoteUfrag !== expectedRemoteUfrag) return 'USERNAME names another peer'
  if (!verifyIntegrity(msg, shortTermKey(localPwd))) return 'MESSAGE-INTEGRITY does not verify'
  const prio = msg.get(StunAttr.PRIORITY)
  if (!prio || prio.value.length !== 4) return 'no PRIORITY'
  const controlling = msg.get(StunAttr.ICE_CONTROLLING)
  const controlled = msg.get(StunAttr.ICE_CONTROLLED)
  if ((controlling ? 1 : 0) + (controlled ? 1 : 0) !== 1) return 'not exactly one of ICE-CONTROLLING / ICE-CONTROLLED'
  const role = (controlling ?? controlled)!
  if (role.value.length !== 8) return 'bad ICE role attribute'
  return {
    remoteUfrag,
    priority: prio.value.readUInt32BE(0),
    useCandidate: msg.has(StunAttr.USE_CANDIDATE),
    peerRole: controlling ? 'controlling' : 'controlled',
    peerTieBreaker: role.value.readBigUInt64BE(0),
  }
}

/** A response to one of our checks: FINGERPRINT and MESSAGE-INTEGRITY with the peer's password. */
export function validateCheckResponse(msg: StunMessage, remotePwd: string): boolean {
  return msg.method === StunMethod.BINDING && verifyFingerprint(msg) && verifyIntegrity(msg, shortTermKey(remotePwd))
}
