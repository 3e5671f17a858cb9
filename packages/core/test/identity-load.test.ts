import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import forge from 'node-forge'
import { generateCaAndDevice, generateIdentity, issueCertificate, saveIdentity, loadIdentity, identityFromPem, isDhtnetError, DhtnetError, type Identity } from '../src/index.js'

let dir: string
let ca: Identity
let device: Identity
let other: Identity
const p = (name: string) => join(dir, name)

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dhtnet-identity-load-'))
  ;({ ca, device } = await generateCaAndDevice({ keySize: 2048 }))
  other = await generateIdentity({ name: 'other-ca', keySize: 2048 })
  await saveIdentity(ca, dir, 'ca')
  await saveIdentity(device, dir, 'device')
  await saveIdentity(other, dir, 'other')
})
after(() => rmSync(dir, { recursive: true, force: true }))

/** Asserts that loading rejects with `code`, a message matching `message`, and a hint. */
async function rejectsWith(options: Parameters<typeof loadIdentity>[0], code: string, message: RegExp, hint?: RegExp): Promise<void> {
  await assert.rejects(loadIdentity(options), (err: unknown) => {
    assert.ok(err instanceof DhtnetError, `expected a DhtnetError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    assert.match(err.message, message)
    assert.ok(err.hint, 'every loading error carries a hint')
    if (hint) assert.match(err.hint, hint)
    return true
  })
}

test('a valid device identity loads, with the same ids', async () => {
  const loaded = await loadIdentity({ key: p('device.pem'), certificate: p('device.crt'), role: 'device' })
  assert.equal(loaded.id, device.id)
  assert.equal(loaded.longId, device.longId)
  assert.equal(loaded.chain.length, 2)
  const ca2 = await loadIdentity({ key: p('ca.pem'), certificate: p('ca.crt'), role: 'ca' })
  assert.equal(ca2.id, ca.id)
})

test('IDENTITY_FILE_MISSING names the file and suggests dhtnet-crtmgr --interactive', async () => {
  await rejectsWith({ key: p('nope.pem'), certificate: p('device.crt') }, 'IDENTITY_FILE_MISSING', /private key file .*nope\.pem does not exist/, /dhtnet-crtmgr --interactive/)
  await rejectsWith({ key: p('device.pem'), certificate: p('nope.crt') }, 'IDENTITY_FILE_MISSING', /certificate file .*nope\.crt does not exist/, /dhtnet-crtmgr/)
  await rejectsWith({ key: '', certificate: p('device.crt') }, 'IDENTITY_FILE_MISSING', /no private key file given/)
})

test('NOT_PEM: garbage, truncated PEM, DER instead of PEM, key and certificate swapped', async () => {
  writeFileSync(p('garbage.crt'), 'hello, world\n')
  await rejectsWith({ key: p('device.pem'), certificate: p('garbage.crt') }, 'NOT_PEM', /garbage\.crt contains no PEM certificate/)
  const keyPem = readFileSync(p('device.pem'), 'utf8')
  writeFileSync(p('truncated.pem'), keyPem.slice(0, keyPem.length / 2))
  await rejectsWith({ key: p('truncated.pem'), certificate: p('device.crt') }, 'NOT_PEM', /truncated\.pem is truncated/)
  const crt = readFileSync(p('device.crt'), 'utf8')
  writeFileSync(p('truncated.crt'), crt.slice(0, 700))
  await rejectsWith({ key: p('device.pem'), certificate: p('truncated.crt') }, 'NOT_PEM', /truncated\.crt is truncated/)
  // a PEM whose base64 body lost lines in the middle
  const lines = keyPem.split('\n')
  writeFileSync(p('holed.pem'), [...lines.slice(0, 5), ...lines.slice(12)].join('\n'))
  await rejectsWith({ key: p('holed.pem'), certificate: p('device.crt') }, 'NOT_PEM', /holed\.pem is not a readable private key/)
  writeFileSync(p('device.der'), device.certificate.raw)
  await rejectsWith({ key: p('device.pem'), certificate: p('device.der') }, 'NOT_PEM', /contains no PEM certificate/)
  await rejectsWith({ key: p('device.crt'), certificate: p('device.pem') }, 'NOT_PEM', /device\.crt contains no PEM private key/)
})

test('NOT_PEM without hanging: endless device, FIFO, oversized file, folder', async () => {
  await rejectsWith({ key: p('device.pem'), certificate: '/dev/zero' }, 'NOT_PEM', /\/dev\/zero is not a regular file/)
  execFileSync('mkfifo', [p('fifo.crt')])
  await rejectsWith({ key: p('device.pem'), certificate: p('fifo.crt') }, 'NOT_PEM', /fifo\.crt is not a regular file/)
  writeFileSync(p('huge.crt'), Buffer.alloc(2 * 1024 * 1024, 0x41))
  await rejectsWith({ key: p('device.pem'), certificate: p('huge.crt') }, 'NOT_PEM', /too large/)
  await rejectsWith({ key: dir, certificate: p('device.crt') }, 'IDENTITY_FILE_MISSING', /is a folder, not a file/)
})

test('KEY_MISMATCH: key of another identity', async () => {
  await rejectsWith({ key: p('other.pem'), certificate: p('device.crt') }, 'KEY_MISMATCH', /other\.pem does not match .*device\.crt/)
})

test('CERT_EXPIRED: a certificate made by node-forge with a validity in the past', async () => {
  const forgeCaKey = forge.pki.privateKeyFromPem(readFileSync(p('ca.pem'), 'utf8'))
  const forgeCa = forge.pki.certificateFromPem(ca.certificate.toString())
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(device.publicKey.export({ type: 'spki', format: 'pem' }).toString())
  cert.serialNumber = '01'
  cert.validity.notBefore = new Date('2020-01-01T00:00:00Z')
  cert.validity.notAfter = new Date('2021-01-01T00:00:00Z')
  cert.setSubject([{ name: 'commonName', value: 'old-device' }])
  cert.setIssuer(forgeCa.subject.attributes)
  cert.setExtensions([{ name: 'keyUsage', critical: true, digitalSignature: true, dataEncipherment: true }])
  cert.sign(forgeCaKey, forge.md.sha256.create())
  writeFileSync(p('expired.crt'), forge.pki.certificateToPem(cert) + ca.certificate.toString())
  await rejectsWith({ key: p('device.pem'), certificate: p('expired.crt') }, 'CERT_EXPIRED', /CN=old-device\) expired on 2021-01-01T00:00:00\.000Z/)
})

test('CERT_NOT_YET_VALID', async () => {
  const future = issueCertificate({
    publicKey: device.publicKey,
    name: 'future',
    ca: false,
    signer: ca,
    notBefore: new Date(Date.now() + 86400_000),
  })
  writeFileSync(p('future.crt'), future.toString() + ca.certificate.toString())
  await rejectsWith({ key: p('device.pem'), certificate: p('future.crt') }, 'CERT_NOT_YET_VALID', /is not valid before/, /clock/)
})

test('NOT_RSA: an EC key and certificate made by openssl', async () => {
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('ec.pem'), '-out', p('ec.crt'), '-subj', '/CN=ec', '-days', '1'],
    { stdio: 'ignore' },
  )
  await rejectsWith({ key: p('ec.pem'), certificate: p('ec.crt') }, 'NOT_RSA', /ec\.pem is ec, but DHTNet identities use RSA keys/)
})

test('SELF_SIGNED_DEVICE: only when loading a device identity', async () => {
  const selfSigned = issueCertificate({ publicKey: device.publicKey, name: 'lonely', ca: false, signer: { privateKey: device.privateKey } })
  writeFileSync(p('self.crt'), selfSigned.toString())
  await rejectsWith({ key: p('device.pem'), certificate: p('self.crt'), role: 'device' }, 'SELF_SIGNED_DEVICE', /CN=lonely\) is self-signed/, /-c CA\.crt -p CA\.pem/)
  await rejectsWith({ key: p('ca.pem'), certificate: p('ca.crt'), role: 'device' }, 'SELF_SIGNED_DEVICE', /is self-signed/)
  // not a device: loads
  const loaded = await loadIdentity({ key: p('device.pem'), certificate: p('self.crt') })
  assert.equal(loaded.id, device.id)
})

test('NOT_CA when a device identity is loaded as a CA', async () => {
  await rejectsWith({ key: p('device.pem'), certificate: p('device.crt'), role: 'ca' }, 'NOT_CA', /is not a CA certificate/)
})

test('CHAIN_INVALID: leaf followed by a CA that did not sign it', async () => {
  writeFileSync(p('wrongchain.crt'), device.certificate.toString() + other.certificate.toString())
  await rejectsWith({ key: p('device.pem'), certificate: p('wrongchain.crt') }, 'CHAIN_INVALID', /does not verify against its own chain/)
  // a signature byte flipped in the CA certificate itself
  const raw = Buffer.from(ca.certificate.raw)
  raw[raw.length - 5]! ^= 0xff
  const pem = `-----BEGIN CERTIFICATE-----\n${raw
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END CERTIFICATE-----\n`
  writeFileSync(p('badsig.crt'), pem)
  await rejectsWith({ key: p('ca.pem'), certificate: p('badsig.crt') }, 'CHAIN_INVALID', /does not verify with its own key/)
})

test('KEY_PASSWORD: encrypted PKCS#8 without or with a wrong password; the right one loads', async () => {
  execFileSync('openssl', ['pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', p('device.pem'), '-out', p('enc.pem'), '-passout', 'pass:s3cret'])
  assert.match(readFileSync(p('enc.pem'), 'utf8'), /BEGIN ENCRYPTED PRIVATE KEY/)
  await rejectsWith({ key: p('enc.pem'), certificate: p('device.crt') }, 'KEY_PASSWORD', /enc\.pem is encrypted and no password was given/)
  await rejectsWith({ key: p('enc.pem'), certificate: p('device.crt'), password: 'wrong' }, 'KEY_PASSWORD', /wrong password/)
  const loaded = await loadIdentity({ key: p('enc.pem'), certificate: p('device.crt'), password: 's3cret', role: 'device' })
  assert.equal(loaded.id, device.id)
})

test('identityFromPem validates like loadIdentity', () => {
  const id = identityFromPem(readFileSync(p('device.pem')), readFileSync(p('device.crt'), 'utf8'), { role: 'device' })
  assert.equal(id.longId, device.longId)
  assert.throws(
    () => identityFromPem(readFileSync(p('other.pem')), readFileSync(p('device.crt'))),
    (e: unknown) => isDhtnetError(e, 'KEY_MISMATCH'),
  )
})
