import { X509Certificate } from 'node:crypto'
import { DhtnetError } from '../errors.js'
import { chainLinkProblem, commonName, isIssuedBy, isSelfSigned, notAfter, notBefore, validityProblem } from './chain.js'
import { parsePeerId, publicKeyIds } from './ids.js'
import { issuerKeyProblem, rsaKeyProblem } from './key-policy.js'

export type TrustRefusalCode =
  'EMPTY_CHAIN' | 'CHAIN_TOO_LONG' | 'BANNED' | 'SELF_SIGNED_DEVICE' | 'EXPIRED' | 'NOT_YET_VALID' | 'BAD_SIGNATURE' | 'REJECTED_KEY' | 'NOT_CA' | 'UNKNOWN_ISSUER' | 'UNTRUSTED_CA'

export type TrustDecision = { readonly ok: true } | { readonly ok: false; readonly code: TrustRefusalCode; readonly reason: string }

export interface VerifyOptions {
  /** Accept any sound chain (signatures and dates check out, nothing banned); otherwise it must reach a trusted CA or an allowed certificate. */
  readonly anonymous?: boolean
  /** Point in time for the validity checks (default: now). */
  readonly now?: Date
}

/** Longest chain verified (leaf, intermediates, root): bounds the work a peer can make us do. */
export const MAX_CHAIN_LENGTH = 8

/** A certificate, or its public key id in either form (40 or 64 hex). */
export type IdOrCertificate = X509Certificate | string

/**
 * Trust decisions about peers' certificate chains (leaf first): trusted CAs, allowed and banned certificates.
 * Certificates are matched by their public key (both id forms). Pure and synchronous; no I/O, no clock except `now`.
 */
export class TrustStore {
  readonly #cas = new Map<string, X509Certificate>() // by fingerprint256
  readonly #allowed = new IdSet()
  readonly #banned = new IdSet()

  /** Trust every device whose chain ends at this CA. The certificate must be a CA (basicConstraints CA:TRUE). */
  addTrustedCa(cert: X509Certificate): void {
    if (!cert.ca) {
      throw new DhtnetError('NOT_CA', `CN=${commonName(cert)} is not a CA certificate and cannot be trusted as one`, {
        hint: 'to trust a single device, use allow() with its certificate or id',
      })
    }
    this.#cas.set(cert.fingerprint256, cert)
  }

  removeTrustedCa(cert: X509Certificate): boolean {
    return this.#cas.delete(cert.fingerprint256)
  }

  trustedCas(): X509Certificate[] {
    return [...this.#cas.values()]
  }

  /** Trust this certificate (or key id) even without a trusted CA. Clears a ban on it. */
  allow(idOrCert: IdOrCertificate): void {
    const keys = keysOf(idOrCert)
    this.#banned.delete(keys)
    this.#allowed.add(keys)
  }

  /** Refuse every chain that contains this certificate (or key id), whatever else is trusted. */
  ban(idOrCert: IdOrCertificate): void {
    const keys = keysOf(idOrCert)
    this.#allowed.delete(keys)
    this.#banned.add(keys)
  }

  /** Forget an allow or a ban. */
  forget(idOrCert: IdOrCertificate): void {
    const keys = keysOf(idOrCert)
    this.#allowed.delete(keys)
    this.#banned.delete(keys)
  }

  isBanned(idOrCert: IdOrCertificate): boolean {
    return this.#banned.has(keysOf(idOrCert))
  }

  isAllowed(idOrCert: IdOrCertificate): boolean {
    return this.#allowed.has(keysOf(idOrCert))
  }

  verify(chain: readonly X509Certificate[], options: VerifyOptions = {}): TrustDecision {
    if (chain.length === 0) return refuse('EMPTY_CHAIN', 'no certificate was presented')
    if (chain.length > MAX_CHAIN_LENGTH) return refuse('CHAIN_TOO_LONG', `the chain has ${chain.length} certificates; at most ${MAX_CHAIN_LENGTH} are accepted`)
    const now = options.now ?? new Date()
    const leaf = chain[0]!

    const banned = chain.find((c) => this.isBanned(c))
    if (banned) return refuse('BANNED', `${describe(banned)} is banned`)

    if (isSelfSigned(leaf)) {
      return refuse('SELF_SIGNED_DEVICE', `${describe(leaf)} is self-signed; a device certificate must be signed by a CA`)
    }

    for (const cert of chain) {
      const problem = validityProblem(cert, now)
      if (problem === 'expired') return refuse('EXPIRED', `${describe(cert)} expired on ${notAfter(cert).toISOString()}`)
      if (problem === 'not-yet-valid') return refuse('NOT_YET_VALID', `${describe(cert)} is not valid before ${notBefore(cert).toISOString()}`)
    }

    // keys outside the policy are refused before any signature is checked with them (a huge RSA exponent makes one
    // verification cost a private-key operation): the leaf's must be RSA within RSA_KEY_POLICY, issuers' may also be EC/EdDSA
    for (let i = 0; i < chain.length; i++) {
      const problem = i === 0 ? rsaKeyProblem(chain[i]!.publicKey) : issuerKeyProblem(chain[i]!.publicKey)
      if (problem) return refuse('REJECTED_KEY', `the key of ${describe(chain[i]!)} is refused: ${problem}`)
    }

    const link = chainLinkProblem(chain)
    if (link?.kind === 'bad-signature') {
      const cert = chain[link.index]!
      const by = link.index + 1 < chain.length ? `by ${describe(chain[link.index + 1]!)}` : 'by its own key'
      return refuse('BAD_SIGNATURE', `the signature of ${describe(cert)} does not verify ${by}`)
    }
    if (link?.kind === 'not-ca') return refuse('NOT_CA', `${describe(chain[link.index]!)} signs another certificate but is not a CA`)

    // The chain's root: its last certificate when self-signed, else the trusted CA that issued it.
    const last = chain[chain.length - 1]!
    let root: X509Certificate | undefined = isSelfSigned(last) ? last : undefined
    if (!root) {
      root = this.trustedCas().find((ca) => isIssuedBy(last, ca))
      if (!root) {
        if (this.#someAllowed(chain)) return { ok: true }
        return options.anonymous
          ? refuse('UNKNOWN_ISSUER', `${describe(last)} is signed by an issuer that is neither in the chain nor a trusted CA`)
          : refuse('UNTRUSTED_CA', `the chain of ${describe(leaf)} does not end at a trusted CA (the issuer of ${describe(last)} is unknown)`)
      }
      if (this.isBanned(root)) return refuse('BANNED', `${describe(root)} is banned`)
      const problem = validityProblem(root, now)
      if (problem) return refuse(problem === 'expired' ? 'EXPIRED' : 'NOT_YET_VALID', `the trusted CA ${describe(root)} is ${problem.replace(/-/g, ' ')}`)
    }

    if (options.anonymous) return { ok: true }
    if (this.#someAllowed(chain)) return { ok: true }
    if ([...chain, root].some((c) => this.#isTrustedCa(c))) return { ok: true }
    return refuse('UNTRUSTED_CA', `the chain of ${describe(leaf)} ends at ${describe(root)}, which is not a trusted CA`)
  }

  #someAllowed(chain: readonly X509Certificate[]): boolean {
    return chain.some((c) => this.isAllowed(c))
  }

  #isTrustedCa(cert: X509Certificate): boolean {
    if (this.#cas.has(cert.fingerprint256)) return true
    // the same CA key and name re-issued (e.g. renewed) is the same CA
    const { id } = publicKeyIds(cert)
    return this.trustedCas().some((ca) => ca.subject === cert.subject && publicKeyIds(ca).id === id)
  }
}

/** The key ids of a certificate (both forms) or of a typed id (the one form given). */
function keysOf(idOrCert: IdOrCertificate): string[] {
  if (typeof idOrCert === 'string') return [parsePeerId(idOrCert).hex]
  const { id, longId } = publicKeyIds(idOrCert)
  return [id, longId]
}

/**
 * A set of public keys known by one or both id forms. Entries added together (a certificate's id and long id)
 * stay linked, so removing either form removes the key.
 */
class IdSet {
  readonly #entries = new Map<string, readonly string[]>()

  add(keys: readonly string[]): void {
    for (const k of keys) this.#entries.set(k, keys)
  }

  delete(keys: readonly string[]): void {
    for (const k of keys) {
      for (const linked of this.#entries.get(k) ?? []) this.#entries.delete(linked)
      this.#entries.delete(k)
    }
  }

  has(keys: readonly string[]): boolean {
    return this.#entries.size > 0 && keys.some((k) => this.#entries.has(k))
  }
}

function describe(cert: X509Certificate): string {
  return `certificate CN=${commonName(cert)} (id ${publicKeyIds(cert).id})`
}

function refuse(code: TrustRefusalCode, reason: string): TrustDecision {
  return { ok: false, code, reason }
}
