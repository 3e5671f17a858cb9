/**
 * Test identities for the DHT value/crypto tests: an RSA key from Node's crypto and a certificate made by a second
 * implementation (`openssl req -x509`), in the shape of the `Identity` contract. A CA-issued chain is made on demand.
 */
import { execFileSync } from 'node:child_process'
import { X509Certificate, createHash, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Identity } from '../src/identity/types.js'

export function identityFromKey(privateKey: KeyObject, chain: X509Certificate[]): Identity {
  const publicKey = chain[0]!.publicKey
  const publicKeyDer = publicKey.export({ type: 'spki', format: 'der' })
  return {
    privateKey,
    publicKey,
    certificate: chain[0]!,
    chain,
    publicKeyDer,
    id: createHash('sha1').update(publicKeyDer).digest('hex'),
    longId: createHash('sha256').update(publicKeyDer).digest('hex'),
  }
}

/** A self-signed identity (or one issued by `issuer` when given). */
export function makeTestIdentity(name: string, keySize = 2048, issuer?: Identity): Identity {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: keySize })
  const dir = mkdtempSync(join(tmpdir(), 'dhtnet-test-id-'))
  try {
    const keyFile = join(dir, 'key.pem')
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const crtFile = join(dir, 'cert.crt')
    if (!issuer) {
      execFileSync('openssl', ['req', '-x509', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-days', '30', '-sha256', '-out', crtFile], { stdio: 'pipe' })
      return identityFromKey(privateKey, [new X509Certificate(readFileSync(crtFile))])
    }
    const csr = join(dir, 'req.csr')
    execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-out', csr], { stdio: 'pipe' })
    const caKey = join(dir, 'ca.pem')
    const caCrt = join(dir, 'ca.crt')
    writeFileSync(caKey, issuer.privateKey.export({ type: 'pkcs8', format: 'pem' }))
    writeFileSync(caCrt, issuer.certificate.toString())
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', caCrt, '-CAkey', caKey, '-CAcreateserial', '-days', '30', '-sha256', '-out', crtFile], { stdio: 'pipe' })
    return identityFromKey(privateKey, [new X509Certificate(readFileSync(crtFile)), ...issuer.chain])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
