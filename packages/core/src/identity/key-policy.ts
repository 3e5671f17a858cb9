/**
 * Which RSA public keys we accept from others before any verification or encryption: e = 65537 and a modulus of
 * 2048 to 4096 bits, as every OpenDHT and DHTNet implementation generates them. Anything else either costs far more
 * than a normal key (a huge public exponent turns a 0.1 ms verification into a 10 ms exponentiation; a 16,384-bit
 * modulus costs 60× a 2048-bit one) or is too weak to trust.
 *
 * `rsaSpkiProblem` checks the DER SubjectPublicKeyInfo with a strict hand-written reader (a few microseconds, no
 * OpenSSL call, no allocation), so a key can be refused before it is parsed (parsing alone costs ~0.2 ms at 4096
 * bits); `rsaKeyProblem` checks a parsed KeyObject.
 */
import type { KeyObject } from 'node:crypto'
import { DhtnetError } from '../errors.js'

export interface RsaKeyPolicy {
  readonly minModulusBits: number
  readonly maxModulusBits: number
  /** the only public exponent accepted */
  readonly exponent: number
}

export const RSA_KEY_POLICY: RsaKeyPolicy = Object.freeze({ minModulusBits: 2048, maxModulusBits: 4096, exponent: 65537 })

/** OID 1.2.840.113549.1.1.1 (rsaEncryption), DER body */
const RSA_ENCRYPTION_OID = Buffer.from('2a864886f70d010101', 'hex')

/** A DER element's value span, or undefined when the tag differs or the length is not minimal DER / overflows. */
function element(b: Uint8Array, pos: number, end: number, tag: number): { start: number; end: number } | undefined {
  if (pos + 2 > end || b[pos] !== tag) return undefined
  let len = b[pos + 1]!
  let start = pos + 2
  if (len & 0x80) {
    const n = len & 0x7f
    if (n === 0 || n > 3 || start + n > end || b[start] === 0) return undefined
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + b[start + i]!
    if (len < 0x80) return undefined
    start += n
  }
  if (start + len > end) return undefined
  return { start, end: start + len }
}

/** Bits of a positive DER INTEGER's value, or undefined when it is negative or not minimal. */
function positiveIntegerBits(b: Uint8Array, start: number, end: number): number | undefined {
  if (start >= end) return undefined
  let s = start
  if (b[s] === 0) {
    if (s + 1 < end && !(b[s + 1]! & 0x80)) return undefined // not minimal
    s++
    if (s === end) return 0
  } else if (b[s]! & 0x80) return undefined // negative
  return (end - s - 1) * 8 + (32 - Math.clz32(b[s]!))
}

/**
 * Why a DER SubjectPublicKeyInfo is not an acceptable RSA key (undefined when it is). Strict: one SPKI exactly,
 * rsaEncryption (with or without the NULL parameter), a minimal positive modulus of the allowed size, exponent 65537.
 */
export function rsaSpkiProblem(der: Uint8Array, policy: RsaKeyPolicy = RSA_KEY_POLICY): string | undefined {
  const outer = element(der, 0, der.length, 0x30)
  if (!outer || outer.end !== der.length) return 'not a DER SubjectPublicKeyInfo'
  const alg = element(der, outer.start, outer.end, 0x30)
  if (!alg) return 'not a DER SubjectPublicKeyInfo'
  const oid = element(der, alg.start, alg.end, 0x06)
  if (!oid || oid.end - oid.start !== RSA_ENCRYPTION_OID.length || !RSA_ENCRYPTION_OID.equals(der.subarray(oid.start, oid.end))) {
    return 'not an RSA (rsaEncryption) key'
  }
  if (oid.end !== alg.end && !(alg.end - oid.end === 2 && der[oid.end] === 0x05 && der[oid.end + 1] === 0)) return 'bad RSA algorithm parameters'
  const bits = element(der, alg.end, outer.end, 0x03)
  if (!bits || bits.end !== outer.end || der[bits.start] !== 0) return 'bad public key bit string'
  const rsa = element(der, bits.start + 1, bits.end, 0x30)
  if (!rsa || rsa.end !== bits.end) return 'bad RSA public key'
  const n = element(der, rsa.start, rsa.end, 0x02)
  if (!n) return 'bad RSA modulus'
  const e = element(der, n.end, rsa.end, 0x02)
  if (!e || e.end !== rsa.end) return 'bad RSA exponent'
  const nBits = positiveIntegerBits(der, n.start, n.end)
  if (nBits === undefined) return 'bad RSA modulus'
  if (nBits < policy.minModulusBits || nBits > policy.maxModulusBits) {
    return `RSA modulus of ${nBits} bits (accepted: ${policy.minModulusBits}–${policy.maxModulusBits})`
  }
  if (!(der[n.end - 1]! & 1)) return 'even RSA modulus'
  const eBits = positiveIntegerBits(der, e.start, e.end)
  if (eBits === undefined || eBits > 53) return `RSA public exponent of ${eBits ?? '?'} bits (accepted: ${policy.exponent})`
  let ev = 0
  for (let i = e.start; i < e.end; i++) ev = ev * 256 + der[i]!
  if (ev !== policy.exponent) return `RSA public exponent ${ev} (accepted: ${policy.exponent})`
  return undefined
}

/** Why a parsed public (or private) key is not an acceptable RSA key (undefined when it is). */
export function rsaKeyProblem(key: KeyObject, policy: RsaKeyPolicy = RSA_KEY_POLICY): string | undefined {
  if (key.asymmetricKeyType !== 'rsa') return `a ${key.asymmetricKeyType ?? 'non-asymmetric'} key, not RSA`
  const d = key.asymmetricKeyDetails
  const bits = d?.modulusLength
  if (!bits || bits < policy.minModulusBits || bits > policy.maxModulusBits) {
    return `RSA modulus of ${bits ?? '?'} bits (accepted: ${policy.minModulusBits}–${policy.maxModulusBits})`
  }
  if (d.publicExponent !== BigInt(policy.exponent)) return `RSA public exponent ${String(d.publicExponent)} (accepted: ${policy.exponent})`
  return undefined
}

const ISSUER_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1'])

/**
 * Why a certificate issuer's key is not acceptable (undefined when it is): an RSA key within the policy, or a
 * named NIST curve (OpenDHT's `dhtnode -i` makes its CA on P-521) or Ed25519/Ed448 — keys whose verification
 * costs a bounded, small amount. Anything else (explicit curve parameters, DSA...) is refused.
 */
export function issuerKeyProblem(key: KeyObject, policy: RsaKeyPolicy = RSA_KEY_POLICY): string | undefined {
  const type = key.asymmetricKeyType
  if (type === 'rsa') return rsaKeyProblem(key, policy)
  if (type === 'ed25519' || type === 'ed448') return undefined
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve
    return curve && ISSUER_CURVES.has(curve) ? undefined : `an EC key on ${curve ?? 'explicit parameters'}, not a named NIST curve`
  }
  return `a ${type ?? 'non-asymmetric'} key`
}

/** Throws DhtnetError('REJECTED_KEY') when `key` is outside the policy. */
export function assertAcceptableRsaKey(key: KeyObject, what: string, policy: RsaKeyPolicy = RSA_KEY_POLICY): void {
  const problem = rsaKeyProblem(key, policy)
  if (problem) {
    throw new DhtnetError('REJECTED_KEY', `${what} is refused: ${problem}`, {
      hint: `DHTNet peers use RSA keys of ${policy.minModulusBits}–${policy.maxModulusBits} bits with e = ${policy.exponent} (dhtnet-crtmgr makes RSA-4096)`,
    })
  }
}
