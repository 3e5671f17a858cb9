import type { KeyObject, X509Certificate } from 'node:crypto'

/**
 * A loaded identity: an RSA private key and its certificate chain (leaf first, then issuers).
 * This is the contract every layer uses (DHT signing/encryption, DTLS binding, trust checks).
 */
export interface Identity {
  /** RSA private key. */
  readonly privateKey: KeyObject
  /** RSA public key of the leaf certificate. */
  readonly publicKey: KeyObject
  /** The leaf certificate. */
  readonly certificate: X509Certificate
  /** The full chain, leaf first, then issuers (as written in the .crt file). */
  readonly chain: readonly X509Certificate[]
  /** DER SubjectPublicKeyInfo of the leaf's public key. */
  readonly publicKeyDer: Buffer
  /** 40 lowercase hex: SHA-1 of the DER SubjectPublicKeyInfo (OpenDHT InfoHash / getId). */
  readonly id: string
  /** 64 lowercase hex: SHA-256 of the DER SubjectPublicKeyInfo (OpenDHT PkId / getLongId). */
  readonly longId: string
}
