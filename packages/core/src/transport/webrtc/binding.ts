/**
 * Binding the two device identities into a WebRTC connection (against identity misbinding, the "unknown key share":
 * a device M trusted by both A and B re-signs A's request as its own for B and B's answer for A; A and B then
 * connect directly, each believing the other is M).
 *
 * The DTLS certificates are libdatachannel's own, so DTLS alone proves nothing about the devices: only that the
 * peer holds the certificate whose fingerprint came in the signed signalling, which M relayed unchanged. So once DTLS
 * is up, each side sends one message on the reliable channel before anything else:
 *
 *   "DXB1" || RSA-SHA256 signature, by the sender's device key, over
 *   "dhtnet-webrtc-binding-v1" || connection id (u64 BE) || sender role (1 = requester, 2 = responder)
 *   || sender's DTLS fingerprint (32 bytes) || receiver's DTLS fingerprint (32 bytes)
 *   || sender's long id (32 bytes) || receiver's long id (32 bytes)
 *
 * and checks the peer's with the public key of the device the signalling named. In the relay above, A receives B's
 * signature and checks it with M's key: it fails, on both sides, and the connection is closed (IDENTITY_MISMATCH).
 * The fingerprints bind the signature to this DTLS session: it cannot be replayed into another one.
 */
import { type KeyObject, type X509Certificate, createHash, sign, verify } from 'node:crypto'
import { DhtnetError } from '../../errors.js'

const MAGIC = Buffer.from('DXB1', 'ascii')
const CONTEXT = Buffer.from('dhtnet-webrtc-binding-v1', 'ascii')
/** A 4096-bit RSA signature is 512 bytes; 8192-bit keys would be 1024. */
const MAX_SIGNATURE_BYTES = 1024

export interface BindingParties {
  readonly connectionId: bigint
  readonly signerRole: 'requester' | 'responder'
  /** SHA-256 fingerprints as in SDP (AA:BB:...). */
  readonly signerFingerprint: string
  readonly receiverFingerprint: string
  /** 64-hex long ids. */
  readonly signerLongId: string
  readonly receiverLongId: string
}

function fingerprintBytes(fp: string): Buffer {
  const b = Buffer.from(fp.replace(/:/g, ''), 'hex')
  if (b.length !== 32) throw new DhtnetError('INTERNAL_ERROR', `a DTLS fingerprint of ${b.length} bytes`)
  return b
}

function payload(p: BindingParties): Buffer {
  const id = Buffer.alloc(8)
  id.writeBigUInt64BE(p.connectionId)
  return Buffer.concat([
    CONTEXT,
    id,
    Buffer.from([p.signerRole === 'requester' ? 1 : 2]),
    fingerprintBytes(p.signerFingerprint),
    fingerprintBytes(p.receiverFingerprint),
    Buffer.from(p.signerLongId, 'hex'),
    Buffer.from(p.receiverLongId, 'hex'),
  ])
}

/** Our binding message. */
export function bindingMessage(privateKey: KeyObject, parties: BindingParties): Buffer {
  return Buffer.concat([MAGIC, sign('sha256', payload(parties), privateKey)])
}

/** Check the peer's binding message; throws IDENTITY_MISMATCH (or PROTOCOL_ERROR for a malformed one). */
export function checkBindingMessage(message: Buffer, peerCertificate: X509Certificate, parties: BindingParties): void {
  if (message.length <= MAGIC.length || message.length > MAGIC.length + MAX_SIGNATURE_BYTES || !message.subarray(0, 4).equals(MAGIC)) {
    throw new DhtnetError('PROTOCOL_ERROR', `the peer's first message is not an identity binding (${message.length} bytes)`)
  }
  const ok = verify('sha256', payload(parties), peerCertificate.publicKey, message.subarray(MAGIC.length))
  if (!ok) {
    const expected = createHash('sha256')
      .update(peerCertificate.publicKey.export({ type: 'spki', format: 'der' }))
      .digest('hex')
    throw new DhtnetError(
      'IDENTITY_MISMATCH',
      `the device at the other end of this connection is not ${expected.slice(0, 16)}…, the device that signed the signalling: ` +
        'its identity binding does not verify (a device relaying between two others?)',
      { hint: 'this is an attack or a bug: the connection was closed' },
    )
  }
}
