import type { KeyObject, X509Certificate } from 'node:crypto'
import { publicKeyIds } from './ids.js'
import type { Identity } from './types.js'

/** Assembles an Identity from a private key and its chain (leaf first). Does not validate: see validateIdentity. */
export function makeIdentity(privateKey: KeyObject, chain: readonly X509Certificate[]): Identity {
  const certificate = chain[0]
  if (!certificate) throw new TypeError('makeIdentity: empty certificate chain')
  const publicKey = certificate.publicKey
  const publicKeyDer = publicKey.export({ type: 'spki', format: 'der' })
  const { id, longId } = publicKeyIds(publicKeyDer)
  return Object.freeze({ privateKey, publicKey, certificate, chain: Object.freeze([...chain]), publicKeyDer, id, longId })
}
