import { createPublicKey, KeyObject } from 'node:crypto'
import type forgeTypes from 'node-forge'
import { forge as loadForge } from './forge.js'
import { DhtnetError, errorMessage } from '../errors.js'
import { requireRsa } from './certificate.js'
import { parsePrivateKey, pemBlocks } from './pem.js'

/** What `dhtnet-crtmgr --sign` can sign: the public key, and the subject name a CSR asked for. */
export interface SigningRequest {
  readonly publicKey: KeyObject
  /** CN of a CSR's subject, when the input was a CSR that has one. */
  readonly name?: string
  readonly kind: 'csr' | 'public-key' | 'private-key'
}

/**
 * Reads a PEM certificate signing request (PKCS#10, its self-signature is checked), a public key
 * (SubjectPublicKeyInfo or PKCS#1) or a private key (its public half is used). RSA only.
 */
export function readSigningRequest(pem: string | Buffer, what = 'input'): SigningRequest {
  const text = typeof pem === 'string' ? pem : pem.toString('latin1')
  const block = pemBlocks(text, what).find((b) => /^(NEW )?CERTIFICATE REQUEST$|PUBLIC KEY$|PRIVATE KEY$/.test(b.label))
  if (!block) {
    throw new DhtnetError('NOT_PEM', `${what} holds no PEM certificate request, public key or private key`, {
      hint: 'make a request with: openssl req -new -key KEY.pem -subj /CN=NAME -out REQ.csr',
    })
  }
  if (block.label.endsWith('PRIVATE KEY')) {
    const publicKey = createPublicKey(parsePrivateKey(block.text, { what }))
    requireRsa(publicKey, what)
    return { publicKey, kind: 'private-key' }
  }
  if (block.label.endsWith('PUBLIC KEY')) {
    let publicKey: KeyObject
    try {
      publicKey = createPublicKey(block.text)
    } catch (cause) {
      throw new DhtnetError('NOT_PEM', `${what} is not a readable public key (${errorMessage(cause)})`, { cause })
    }
    requireRsa(publicKey, what)
    return { publicKey, kind: 'public-key' }
  }
  const forge = loadForge()
  let csr: forgeTypes.pki.CertificateSigningRequest
  try {
    csr = forge.pki.certificationRequestFromPem(block.text.replace('NEW CERTIFICATE REQUEST', 'CERTIFICATE REQUEST'))
  } catch (cause) {
    const msg = errorMessage(cause)
    if (/OID is not RSA/i.test(msg)) {
      throw new DhtnetError('NOT_RSA', `${what} is a request for a non-RSA key, but DHTNet identities use RSA keys`, {
        cause,
        hint: 'make the request with an RSA key: openssl req -new -newkey rsa:4096 -nodes -keyout KEY.pem -subj /CN=NAME -out REQ.csr',
      })
    }
    throw new DhtnetError('BAD_CSR', `${what} is not a readable certificate request (${msg})`, { cause })
  }
  let signed: boolean
  try {
    signed = csr.verify()
  } catch {
    signed = false
  }
  if (!signed) {
    throw new DhtnetError('BAD_CSR', `the signature of the certificate request in ${what} does not verify`, {
      hint: 'the request was altered or damaged; make a new one',
    })
  }
  const publicKey = createPublicKey(forge.pki.publicKeyToPem(csr.publicKey as forgeTypes.pki.rsa.PublicKey))
  const cn = csr.subject.getField('CN') as { value?: string } | null
  return { publicKey, kind: 'csr', ...(cn?.value ? { name: forge.util.decodeUtf8(cn.value) } : {}) }
}
