/**
 * Parsed owner keys of signed values, checked against the RSA key policy (identity/key-policy.ts) before OpenSSL
 * ever sees them. Parsing an RSA-4096 SubjectPublicKeyInfo costs about twice a signature verification, and the
 * same owners come back again and again (certificates, edits, every value of a device): parsed keys are kept in a
 * bounded LRU keyed by the SHA-1 of their DER. Refused keys are counted, not cached (refusing costs microseconds).
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto'
import { rsaSpkiProblem, RSA_KEY_POLICY, type RsaKeyPolicy } from '../identity/key-policy.js'

export type OwnerKey = { ok: true; key: KeyObject } | { ok: false; reason: string }

export class PublicKeyCache {
  private readonly keys = new Map<string, KeyObject>()
  /** keys refused by the policy (or unparsable) */
  rejected = 0

  constructor(
    private readonly max = 4096,
    private readonly policy: RsaKeyPolicy = RSA_KEY_POLICY,
  ) {}

  /** The parsed key of a DER SPKI, or why it is refused. */
  get(der: Uint8Array): OwnerKey {
    const problem = rsaSpkiProblem(der, this.policy)
    if (problem) {
      this.rejected++
      return { ok: false, reason: problem }
    }
    const k = createHash('sha1').update(der).digest('base64')
    const hit = this.keys.get(k)
    if (hit) {
      this.keys.delete(k)
      this.keys.set(k, hit)
      return { ok: true, key: hit }
    }
    let key: KeyObject
    try {
      key = createPublicKey({ key: Buffer.from(der.buffer, der.byteOffset, der.byteLength), format: 'der', type: 'spki' })
    } catch {
      this.rejected++
      return { ok: false, reason: 'unparsable public key' }
    }
    this.keys.set(k, key)
    if (this.keys.size > this.max) this.keys.delete(this.keys.keys().next().value as string)
    return { ok: true, key }
  }

  get size(): number {
    return this.keys.size
  }
}
