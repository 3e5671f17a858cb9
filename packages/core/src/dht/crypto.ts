/**
 * OpenDHT value cryptography (`value.cpp`, `crypto.cpp`): RSA PKCS#1 v1.5 SHA-512 signatures over the signed body,
 * `PublicKey::encrypt` (one RSA PKCS#1 v1.5 block, or RSA(AES key) ‖ IV12 ‖ AES-GCM ciphertext ‖ tag16), and the
 * certificate values (type 8, id 1, data = msgpack bin of the PEM chain).
 *
 * Node 20 refuses PKCS#1 v1.5 in `privateDecrypt` (CVE-2023-46809): we decrypt with RSA_NO_PADDING and remove the
 * padding here, without early exits that depend on the padding bytes.
 */
import {
  X509Certificate,
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  sign,
  verify,
  type CipherGCMTypes,
  type KeyObject,
} from 'node:crypto'
import { DhtnetError, type ErrorCode } from '../errors.js'
import type { Identity } from '../identity/types.js'
import { assertAcceptableRsaKey, issuerKeyProblem, rsaKeyProblem, rsaSpkiProblem } from '../identity/key-policy.js'
import { MAX_CHAIN_LENGTH } from '../identity/truststore.js'
import type { PublicKeyCache } from './key-cache.js'
import { type DhtValue, ValueType, decodeValueBody, isEncryptedValue, isSignedValue, msgpackDecode, msgpackEncode, packSignedBody, packToEncrypt } from './value.js'

const GCM_IV_SIZE = 12
const GCM_TAG_SIZE = 16
const AES_KEY_SIZES = [32, 24, 16] as const

export function sha1(data: string | Uint8Array): Buffer {
  return createHash('sha1').update(data).digest()
}

export function sha256(data: string | Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

/** DER SubjectPublicKeyInfo of a public key (or of a certificate's key). */
export function publicKeyDer(key: KeyObject | X509Certificate): Buffer {
  const k = key instanceof X509Certificate ? key.publicKey : key
  return k.export({ type: 'spki', format: 'der' })
}

/** OpenDHT `PublicKey::getId()`: SHA-1 of the DER SPKI (20 bytes). */
export function keyId(spkiDer: Uint8Array): Buffer {
  return sha1(spkiDer)
}

/** OpenDHT `PublicKey::getLongId()` (PkId): SHA-256 of the DER SPKI (32 bytes). */
export function longKeyId(spkiDer: Uint8Array): Buffer {
  return sha256(spkiDer)
}

/**
 * The two DHT keys where a certificate for this public key is published: the SHA-1 key id (OpenDHT 2.4 – 3.7.1) and
 * SHA1(PkId raw bytes) (OpenDHT 3.5 and later, DHTNet).
 */
export function certificateLocations(spkiDer: Uint8Array): { keyIdKey: Buffer; longIdKey: Buffer } {
  return { keyIdKey: keyId(spkiDer), longIdKey: sha1(longKeyId(spkiDer)) }
}

function cryptoError(code: ErrorCode, message: string, cause?: unknown): DhtnetError {
  return new DhtnetError(code, message, cause === undefined ? {} : { cause })
}

function rsaKeyBytes(key: KeyObject, what: string): number {
  if (key.asymmetricKeyType !== 'rsa') {
    throw cryptoError('BAD_KEY', `${what} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; OpenDHT values need RSA`)
  }
  const bits = key.asymmetricKeyDetails?.modulusLength
  if (!bits) throw cryptoError('BAD_KEY', `cannot read the modulus length of ${what}`)
  return Math.ceil(bits / 8)
}

// ---------------------------------------------------------------------------------------------------------------
// Signatures

/**
 * A signed copy of `v`: owner = our public key, signature = RSA-SHA512 over the signed body. Keeps `seq` (0 when
 * unset) and `recipient`; drops any cypher.
 */
export function signValue(v: DhtValue, identity: Pick<Identity, 'privateKey' | 'publicKeyDer'>): DhtValue {
  const signed: DhtValue = { ...v, owner: Buffer.from(identity.publicKeyDer), seq: v.seq ?? 0 }
  delete signed.cypher
  delete signed.signature
  signed.signature = sign('sha512', packSignedBody(signed), identity.privateKey)
  return signed
}

/** The outcome of checking a signed value: its owner key is refused by the key policy, or the signature is wrong. */
export type SignatureCheck = 'ok' | 'rejected-key' | 'bad-signature'

/**
 * Check a signed value: the owner key against the RSA key policy first (e = 65537, 2048–4096 bits; microseconds,
 * before OpenSSL parses anything), then the RSA-SHA512 signature. `keys` caches parsed owner keys. Never throws.
 */
export function checkValueSignature(v: DhtValue, keys?: PublicKeyCache): SignatureCheck {
  if (!isSignedValue(v) || !v.signature || v.signature.length === 0 || isEncryptedValue(v)) return 'bad-signature'
  let key: KeyObject
  if (keys) {
    const k = keys.get(v.owner!)
    if (!k.ok) return 'rejected-key'
    key = k.key
  } else {
    if (rsaSpkiProblem(v.owner!)) return 'rejected-key'
    try {
      key = createPublicKey({ key: v.owner!, format: 'der', type: 'spki' })
    } catch {
      return 'rejected-key'
    }
  }
  try {
    return verify('sha512', packSignedBody(v), key, v.signature) ? 'ok' : 'bad-signature'
  } catch {
    return 'bad-signature'
  }
}

/** True when `v` is signed by an acceptable key and its signature verifies. Never throws. */
export function verifyValueSignature(v: DhtValue, keys?: PublicKeyCache): boolean {
  return checkValueSignature(v, keys) === 'ok'
}

// ---------------------------------------------------------------------------------------------------------------
// OpenDHT PublicKey::encrypt / PrivateKey::decrypt

/** OpenDHT `PublicKey::encrypt`. */
export function rsaEncrypt(toPublicKey: KeyObject, plaintext: Uint8Array): Buffer {
  const k = rsaKeyBytes(toPublicKey, 'the recipient key')
  assertAcceptableRsaKey(toPublicKey, 'the recipient key')
  const maxBlock = k - 11
  const rsa = (data: Uint8Array) => publicEncrypt({ key: toPublicKey, padding: constants.RSA_PKCS1_PADDING }, data)
  if (plaintext.length <= maxBlock) return rsa(plaintext)
  const aesKeySize = AES_KEY_SIZES.find((s) => s <= maxBlock)
  if (aesKeySize === undefined) throw cryptoError('BAD_KEY', 'the recipient key is too short for AES-128')
  const aesKey = randomBytes(aesKeySize)
  const iv = randomBytes(GCM_IV_SIZE)
  const cipher = createCipheriv(`aes-${aesKeySize * 8}-gcm` as CipherGCMTypes, aesKey, iv)
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return Buffer.concat([rsa(aesKey), iv, body, cipher.getAuthTag()])
}

/** Remove PKCS#1 v1.5 type-2 padding from a raw RSA block; null when malformed. No data-dependent early exit. */
export function unpadPkcs1Type2(em: Buffer): Buffer | null {
  const k = em.length
  let bad = (em[0]! ^ 0x00) | (em[1]! ^ 0x02)
  let zeroIndex = 0
  let found = 0
  for (let i = 2; i < k; i++) {
    const isZero = ((em[i]! - 1) >>> 31) & 1 // 1 when em[i] === 0
    const take = isZero & (found ^ 1)
    zeroIndex = (zeroIndex & (take - 1)) | (i & -take)
    found |= isZero
  }
  bad |= found ^ 1
  // at least 8 non-zero padding bytes: the separator is at index >= 10
  bad |= ((zeroIndex - 10) >>> 31) & 1
  return bad === 0 ? em.subarray(zeroIndex + 1) : null
}

/** Bytes of one RSA block of our private key (the size of the private-key operation's input). */
export function rsaBlockBytes(privateKey: KeyObject): number {
  return rsaKeyBytes(privateKey, 'our private key')
}

/** The raw RSA private-key operation (no padding) on one block: the only costly step of a decryption. */
export function rsaRawDecrypt(privateKey: KeyObject, block: Uint8Array): Buffer {
  try {
    return privateDecrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, block)
  } catch (err) {
    throw cryptoError('DECRYPT_FAILED', 'RSA decryption failed', err)
  }
}

/** The rest of `PrivateKey::decrypt` once the first block went through the raw RSA operation (`rawBlock`). */
export function finishRsaDecrypt(rawBlock: Buffer, cypher: Uint8Array, k: number): Buffer {
  let block = rawBlock
  if (block.length < k) block = Buffer.concat([Buffer.alloc(k - block.length), block])
  const message = unpadPkcs1Type2(block)
  if (message === null) throw cryptoError('DECRYPT_FAILED', 'bad RSA PKCS#1 v1.5 padding (not encrypted to our key?)')
  if (cypher.length === k) return Buffer.from(message)
  const aesKey = message
  if (!AES_KEY_SIZES.includes(aesKey.length as 16 | 24 | 32)) {
    throw cryptoError('DECRYPT_FAILED', `bad AES key size ${aesKey.length}`)
  }
  const rest = cypher.subarray(k)
  if (rest.length <= GCM_IV_SIZE + GCM_TAG_SIZE) throw cryptoError('DECRYPT_FAILED', 'AES-GCM part too short')
  const iv = rest.subarray(0, GCM_IV_SIZE)
  const tag = rest.subarray(rest.length - GCM_TAG_SIZE)
  const body = rest.subarray(GCM_IV_SIZE, rest.length - GCM_TAG_SIZE)
  try {
    const decipher = createDecipheriv(`aes-${aesKey.length * 8}-gcm` as CipherGCMTypes, aesKey, iv)
    decipher.setAuthTag(tag)
    return Buffer.concat([decipher.update(body), decipher.final()])
  } catch (err) {
    throw cryptoError('DECRYPT_FAILED', 'AES-GCM authentication failed (tampered or truncated value)', err)
  }
}

/**
 * Why a cypher cannot be ours before any RSA work (undefined when it may be): shorter than one block, or a
 * multi-block cypher too short for the AES-GCM part. Costs nothing; run it before queueing a decryption.
 */
export function cypherShapeProblem(cypher: Uint8Array, k: number): string | undefined {
  if (cypher.length < k) return `cypher of ${cypher.length} bytes is shorter than one RSA block (${k})`
  if (cypher.length !== k && cypher.length - k <= GCM_IV_SIZE + GCM_TAG_SIZE) return 'AES-GCM part too short'
  return undefined
}

/** OpenDHT `PrivateKey::decrypt`. Throws DhtnetError('DECRYPT_FAILED'). */
export function rsaDecrypt(privateKey: KeyObject, cypher: Uint8Array): Buffer {
  const k = rsaKeyBytes(privateKey, 'our private key')
  const shape = cypherShapeProblem(cypher, k)
  if (shape) throw cryptoError('DECRYPT_FAILED', shape)
  return finishRsaDecrypt(rsaRawDecrypt(privateKey, cypher.subarray(0, k)), cypher, k)
}

// ---------------------------------------------------------------------------------------------------------------
// Encrypted values

/**
 * OpenDHT `Value::encrypt`: set `to` = the recipient's SHA-1 key id, sign with our key, encrypt `{body, sig}` to
 * the recipient. The result carries only id, cypher, priority and pushType.
 */
export function encryptValue(v: DhtValue, to: KeyObject | X509Certificate, identity: Pick<Identity, 'privateKey' | 'publicKeyDer'>): DhtValue {
  if (isEncryptedValue(v)) throw cryptoError('BAD_VALUE', 'value is already encrypted')
  const toKey = to instanceof X509Certificate ? to.publicKey : to
  rsaKeyBytes(toKey, 'the recipient key')
  const signed = signValue({ ...v, recipient: keyId(publicKeyDer(toKey)) }, identity)
  const out: DhtValue = { id: v.id, type: 0, cypher: rsaEncrypt(toKey, packToEncrypt(signed)) }
  if (v.priority) out.priority = v.priority
  if (v.pushType) out.pushType = v.pushType
  return out
}

/**
 * OpenDHT `Value::decrypt`: decrypt with our key, then require `to` == our key id and a valid owner signature.
 * Returns the signed plaintext value (owner, recipient, signature, data, ...). Throws DhtnetError('DECRYPT_FAILED').
 */
export function decryptValue(v: DhtValue, identity: Pick<Identity, 'privateKey' | 'publicKeyDer'>, keys?: PublicKeyCache): DhtValue {
  if (!isEncryptedValue(v)) throw cryptoError('DECRYPT_FAILED', 'value is not encrypted')
  return openDecryptedValue(v, rsaDecrypt(identity.privateKey, v.cypher!), identity, keys)
}

/**
 * The checks of `Value::decrypt` on the plaintext of an encrypted value: a value body (not another cypher),
 * addressed to our key id, signed by an acceptable key with a valid signature. Throws DhtnetError('DECRYPT_FAILED').
 */
export function openDecryptedValue(v: DhtValue, plain: Uint8Array, identity: Pick<Identity, 'publicKeyDer'>, keys?: PublicKeyCache): DhtValue {
  let dv: DhtValue
  try {
    dv = decodeValueBody(v.id, msgpackDecode(plain, 'decrypted value'))
  } catch (err) {
    throw cryptoError('DECRYPT_FAILED', 'decrypted data is not a value body', err)
  }
  if (isEncryptedValue(dv)) throw cryptoError('DECRYPT_FAILED', 'decrypted data is another cypher')
  if (!dv.recipient || !dv.recipient.equals(keyId(identity.publicKeyDer))) {
    throw cryptoError('DECRYPT_FAILED', 'recipient mismatch: the value is not addressed to our key')
  }
  const sig = checkValueSignature(dv, keys)
  if (sig === 'rejected-key') throw cryptoError('DECRYPT_FAILED', 'the decrypted value is signed by a key outside the key policy')
  if (sig !== 'ok') throw cryptoError('DECRYPT_FAILED', 'signature mismatch in the decrypted value')
  if (v.priority) dv.priority = v.priority
  if (v.pushType) dv.pushType = v.pushType
  return dv
}

// ---------------------------------------------------------------------------------------------------------------
// Certificate values

/** PEM of a chain, leaf first, as gnutls exports it (`Certificate::pack`). */
export function pemChain(chain: readonly X509Certificate[]): string {
  return chain.map((c) => (c.toString().endsWith('\n') ? c.toString() : c.toString() + '\n')).join('')
}

/** The certificate value OpenDHT publishes: type 8, id 1, data = msgpack bin(PEM chain). */
export function certificateValue(chain: readonly X509Certificate[]): DhtValue {
  if (chain.length === 0) throw cryptoError('BAD_CERTIFICATE', 'empty certificate chain')
  return { id: 1n, type: ValueType.CERTIFICATE, data: msgpackEncode(Buffer.from(pemChain(chain), 'ascii')) }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** The chain (leaf first) held by a certificate value. Throws DhtnetError('BAD_CERTIFICATE'). */
export function certificatesFromValue(v: DhtValue): X509Certificate[] {
  if (!v.data) throw cryptoError('BAD_CERTIFICATE', 'certificate value has no data')
  let blob: Buffer
  try {
    const x = msgpackDecode(v.data, 'certificate data')
    if (x instanceof Uint8Array) blob = Buffer.from(x)
    else if (typeof x === 'string') blob = Buffer.from(x, 'utf8')
    else throw new Error('not bin')
  } catch (err) {
    throw cryptoError('BAD_CERTIFICATE', 'certificate value data is not a msgpack bin', err)
  }
  const text = blob.toString('latin1')
  const pems = text.match(PEM_CERT)
  let chain: X509Certificate[]
  try {
    if (pems && pems.length > 0) chain = pems.slice(0, MAX_CHAIN_LENGTH + 1).map((p) => new X509Certificate(p))
    else chain = [new X509Certificate(blob)] // DER, as gnutls also accepts
  } catch (err) {
    throw cryptoError('BAD_CERTIFICATE', 'certificate value holds no parsable X.509 certificate', err)
  }
  if (chain.length > MAX_CHAIN_LENGTH) throw cryptoError('BAD_CERTIFICATE', `certificate value holds more than ${MAX_CHAIN_LENGTH} certificates`)
  // every key of the chain is used (to encrypt to the leaf, to verify the links): all must be acceptable
  chain.forEach((c, i) => {
    const problem = i === 0 ? rsaKeyProblem(c.publicKey) : issuerKeyProblem(c.publicKey)
    if (problem) throw cryptoError('REJECTED_KEY', `certificate #${i + 1} of the value has an unacceptable key: ${problem}`)
  })
  return chain
}
