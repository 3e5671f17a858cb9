import { X509Certificate } from 'node:crypto'

/** Checks on certificate chains shared by identity loading and the trust store. Pure and synchronous. */

export function notBefore(cert: X509Certificate): Date {
  return new Date(cert.validFrom)
}

export function notAfter(cert: X509Certificate): Date {
  return new Date(cert.validTo)
}

/** 'expired' / 'not-yet-valid' / undefined when `now` is inside the validity period. */
export function validityProblem(cert: X509Certificate, now: Date): 'expired' | 'not-yet-valid' | undefined {
  if (now.getTime() > notAfter(cert).getTime()) return 'expired'
  if (now.getTime() < notBefore(cert).getTime()) return 'not-yet-valid'
  return undefined
}

/** Self-signed: issued by itself (names match) and its signature verifies with its own key. */
export function isSelfSigned(cert: X509Certificate): boolean {
  return namesIssuer(cert, cert) && safeVerify(cert, cert)
}

/**
 * True when `issuer` issued `cert`: issuer name matches and the signature verifies with the issuer's key.
 * (Not X509Certificate.checkIssued, which also requires keyCertSign and so hides a self-signed device.)
 */
export function isIssuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return namesIssuer(cert, issuer) && safeVerify(cert, issuer)
}

function namesIssuer(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.issuer === issuer.subject
}

function safeVerify(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.verify(issuer.publicKey)
  } catch {
    return false
  }
}

/** Common name of a certificate's subject, for messages. */
export function commonName(cert: X509Certificate): string {
  const m = cert.subject.match(/(?:^|\n)CN=([^\n]*)/)
  return m ? m[1]! : cert.subject.replace(/\n/g, ', ')
}

export type ChainLinkProblem = { kind: 'bad-signature'; index: number } | { kind: 'not-ca'; index: number }

/**
 * Checks that every certificate of the chain is issued by the next one (names match, signature verifies,
 * and the issuer is a CA) and that a self-signed last certificate verifies with its own key.
 * Returns the first broken link, or undefined when the chain is sound.
 */
export function chainLinkProblem(chain: readonly X509Certificate[]): ChainLinkProblem | undefined {
  for (let i = 0; i + 1 < chain.length; i++) {
    const cert = chain[i]!
    const issuer = chain[i + 1]!
    if (!isIssuedBy(cert, issuer)) return { kind: 'bad-signature', index: i }
    if (!issuer.ca) return { kind: 'not-ca', index: i + 1 }
  }
  const last = chain[chain.length - 1]
  if (last && namesIssuer(last, last) && !safeVerify(last, last)) return { kind: 'bad-signature', index: chain.length - 1 }
  return undefined
}
