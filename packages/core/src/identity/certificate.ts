import { constants, createPublicKey, KeyObject, privateEncrypt, randomBytes, X509Certificate } from 'node:crypto'
import type forgeTypes from 'node-forge'
import { forge as loadForge } from './forge.js'
import { DhtnetError } from '../errors.js'
import { publicKeyIds } from './ids.js'

/** LDAP UID attribute, where OpenDHT puts the 40-hex key id in the subject DN. */
export const UID_OID = '0.9.2342.19200300.100.1.1'
/** 10 × 365 days, as OpenDHT's Certificate::generate. */
export const CERTIFICATE_LIFETIME_MS = 10 * 365 * 24 * 3600 * 1000

/** Who signs a certificate: a CA (its key and certificate) or, without a certificate, the subject itself. */
export interface CertificateSigner {
  readonly privateKey: KeyObject
  /** The signer's certificate; absent for a self-signed certificate. */
  readonly certificate?: X509Certificate
}

export interface IssueCertificateOptions {
  /** Public key the certificate is for (a private key is accepted and its public half used). */
  readonly publicKey: KeyObject
  /** Subject common name. */
  readonly name: string
  /** CA certificate (basicConstraints CA:TRUE, keyCertSign|cRLSign) or device certificate. */
  readonly ca: boolean
  readonly signer: CertificateSigner
  /** Validity; defaults to now .. now + 10 × 365 days. */
  readonly notBefore?: Date
  readonly notAfter?: Date
}

/**
 * Builds and signs an X.509 v3 certificate the way OpenDHT does: subject CN=<name>, UID=<key id>,
 * subjectKeyIdentifier = SHA-1 of the DER SubjectPublicKeyInfo, random positive 64-bit serial, SHA-256 with RSA.
 * The certificate is built and signed by node-forge; the RSA private-key operation itself runs in OpenSSL
 * (PKCS#1 v1.5 is deterministic, so the bytes are those forge would produce, ~30× faster for RSA-4096).
 */
export function issueCertificate(options: IssueCertificateOptions): X509Certificate {
  const forge = loadForge()
  const { signer } = options
  const subjectKey = options.publicKey.type === 'private' ? createPublicKey(options.publicKey) : options.publicKey
  requireRsa(subjectKey, 'the certificate subject key')
  requireRsa(signer.privateKey, 'the signing key')
  if (signer.certificate) {
    if (!signer.certificate.ca) {
      throw new DhtnetError('NOT_CA', `the signing certificate (${signer.certificate.subject.replace(/\n/g, ', ')}) is not a CA`, {
        hint: 'sign with a CA certificate, e.g. one made by: dhtnet-crtmgr --generate -o DIR',
      })
    }
    if (!signer.certificate.checkPrivateKey(signer.privateKey)) {
      throw new DhtnetError('KEY_MISMATCH', 'the signing private key does not match the signing certificate', {
        hint: 'give the .pem and .crt of the same CA',
      })
    }
  } else if (subjectKey.export({ type: 'spki', format: 'der' }).compare(createPublicKey(signer.privateKey).export({ type: 'spki', format: 'der' })) !== 0) {
    throw new DhtnetError('KEY_MISMATCH', 'a self-signed certificate must be signed by its own key')
  }

  const { id } = publicKeyIds(subjectKey)
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(subjectKey.export({ type: 'spki', format: 'pem' }).toString())
  cert.serialNumber = randomSerialHex()
  const now = new Date(Math.floor(Date.now() / 1000) * 1000)
  cert.validity.notBefore = options.notBefore ?? now
  cert.validity.notAfter = options.notAfter ?? new Date(now.getTime() + CERTIFICATE_LIFETIME_MS)
  const subject: forgeTypes.pki.CertificateField[] = [
    { name: 'commonName', value: options.name, valueTagClass: forge.asn1.Type.UTF8 as unknown as forgeTypes.asn1.Class },
    { type: UID_OID, value: id, valueTagClass: forge.asn1.Type.UTF8 as unknown as forgeTypes.asn1.Class },
  ]
  cert.setSubject(subject)

  const extensions: object[] = []
  if (options.ca) {
    extensions.push({ name: 'basicConstraints', critical: true, cA: true })
    extensions.push({ name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true })
  } else {
    extensions.push({ name: 'keyUsage', critical: true, digitalSignature: true, dataEncipherment: true })
  }
  extensions.push({ name: 'subjectKeyIdentifier', value: octetString(Buffer.from(id, 'hex')) })
  if (signer.certificate) {
    const issuer = forge.pki.certificateFromPem(signer.certificate.toString())
    cert.setIssuer(issuer.subject.attributes)
    const issuerSki = (issuer.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | null)?.subjectKeyIdentifier
    const keyIdentifier = issuerSki ?? publicKeyIds(signer.certificate).id
    extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: forge.util.hexToBytes(keyIdentifier) })
  } else {
    cert.setIssuer(subject)
  }
  cert.setExtensions(extensions)
  cert.sign(opensslSigner(signer.privateKey) as unknown as forgeTypes.pki.rsa.PrivateKey, forge.md.sha256.create())
  return new X509Certificate(forge.pki.certificateToPem(cert))
}

/** 8 random bytes, positive (top bit clear) and minimally encoded (first byte non-zero). */
function randomSerialHex(): string {
  const b = randomBytes(8)
  b[0] = b[0]! & 0x7f || 0x01
  return b.toString('hex')
}

function octetString(bytes: Buffer): forgeTypes.asn1.Asn1 {
  const forge = loadForge()
  return forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.OCTETSTRING, false, bytes.toString('binary'))
}

// DER prefix of DigestInfo { sha256, NULL } followed by the 32-byte digest (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO_PREFIX = Buffer.from('3031300d060960864801650304020105000420', 'hex')

/** A forge-compatible signer: forge hands over the finished SHA-256 digest, OpenSSL does RSASSA-PKCS1-v1_5. */
function opensslSigner(privateKey: KeyObject): { sign(md: forgeTypes.md.MessageDigest): string } {
  return {
    sign(md) {
      if (md.algorithm !== 'sha256') throw new Error(`unexpected digest ${md.algorithm}`)
      const digest = Buffer.from(md.digest().getBytes(), 'binary')
      const digestInfo = Buffer.concat([SHA256_DIGEST_INFO_PREFIX, digest])
      return privateEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_PADDING }, digestInfo).toString('binary')
    },
  }
}

export function requireRsa(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'rsa') {
    throw new DhtnetError('NOT_RSA', `${what} is ${key.asymmetricKeyType ?? 'not an asymmetric key'}, but DHTNet identities use RSA keys`, {
      hint: 'generate an RSA identity with: dhtnet-crtmgr --generate -o DIR',
    })
  }
}
