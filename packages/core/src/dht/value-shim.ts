/**
 * The DHT engine's single entry into the value layer (dht/value.ts, dht/crypto.ts): everything the engine needs
 * from values goes through here, so the engine does not depend on the rest of the value layer's surface.
 */
import { createHash } from 'node:crypto'
import { type DhtValue } from './value.js'
import { verifyValueSignature as verifySig } from './crypto.js'
import type { PublicKeyCache } from './key-cache.js'

export { type DhtValue, packValue, decodeValue, valueTypeExpirationMs } from './value.js'

export { checkValueSignature, type SignatureCheck } from './crypto.js'

/**
 * RSA-SHA512 signature check of a signed value's body, its owner key checked against the key policy first (false
 * for unsigned or malformed values, or a refused key; never throws).
 */
export function verifyValueSignature(v: DhtValue, keys?: PublicKeyCache): boolean {
  try {
    return verifySig(v, keys)
  } catch {
    return false
  }
}

/** SHA-1 of the owner's DER SPKI (OpenDHT key id), used by OwnerPk query filters. */
export function ownerKeyId(v: DhtValue): Buffer | undefined {
  return v.owner && v.owner.length > 0 ? createHash('sha1').update(v.owner).digest() : undefined
}
