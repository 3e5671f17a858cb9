import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import forge from 'node-forge'
import {
  generateIdentity,
  generateCaAndDevice,
  issueCertificate,
  saveIdentity,
  loadIdentity,
  parsePeerId,
  matchesPeerId,
  publicKeyIds,
  parseCertificateChain,
  isDhtnetError,
  type Identity,
} from '../src/index.js'

let dir: string
let ca: Identity
let device: Identity

function openssl(args: string[], input?: Buffer): Buffer {
  return execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'] })
}
function text(file: string): string {
  return openssl(['x509', '-in', file, '-text', '-noout']).toString()
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dhtnet-identity-'))
  ;({ ca, device } = await generateCaAndDevice({ caName: 'my-ca', deviceName: 'my-device', keySize: 2048 }))
  await saveIdentity(ca, dir, 'ca')
  await saveIdentity(device, dir, 'device')
  writeFileSync(join(dir, 'device-leaf.crt'), device.certificate.toString())
})
after(() => rmSync(dir, { recursive: true, force: true }))

test('openssl verifies the device certificate against the CA (chain file and leaf-only file)', () => {
  assert.match(openssl(['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'device.crt')]).toString(), /device\.crt: OK/)
  assert.match(openssl(['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'device-leaf.crt')]).toString(), /OK/)
  // and does not verify it against an unrelated CA
  assert.throws(() => openssl(['verify', '-CAfile', join(dir, 'device-leaf.crt'), join(dir, 'ca.crt')]))
})

test('CA certificate has the fields OpenDHT writes', () => {
  const t = text(join(dir, 'ca.crt'))
  assert.match(t, /Version: 3 \(0x2\)/)
  assert.match(t, /Signature Algorithm: sha256WithRSAEncryption/)
  assert.match(t, new RegExp(`Subject: CN = my-ca, UID = ${ca.id}`))
  assert.match(t, new RegExp(`Issuer: CN = my-ca, UID = ${ca.id}`))
  assert.match(t, /X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/)
  assert.match(t, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/)
  const ski = ca.id.toUpperCase().match(/../g)!.join(':')
  assert.match(t, new RegExp(`X509v3 Subject Key Identifier: *\\n\\s+${ski}\\n`))
  assert.match(t, /Public-Key: \(2048 bit\)/)
  // random positive 64-bit serial
  const serial = BigInt('0x' + ca.certificate.serialNumber)
  assert.ok(serial > 0n && serial < 2n ** 63n, `serial ${serial}`)
  assert.ok(ca.certificate.serialNumber.length <= 16)
  // valid 10 × 365 days from now
  const from = Date.parse(ca.certificate.validFrom)
  const to = Date.parse(ca.certificate.validTo)
  assert.equal(to - from, 3650 * 24 * 3600 * 1000)
  assert.ok(Math.abs(from - Date.now()) < 120_000)
  assert.equal(ca.certificate.ca, true)
})

test('device certificate is signed by the CA, has device key usage and no CA flag', () => {
  const t = text(join(dir, 'device-leaf.crt'))
  assert.match(t, new RegExp(`Subject: CN = my-device, UID = ${device.id}`))
  assert.match(t, new RegExp(`Issuer: CN = my-ca, UID = ${ca.id}`))
  assert.match(t, /X509v3 Key Usage: critical\n\s+Digital Signature, Data Encipherment\n/)
  assert.doesNotMatch(t, /CA:TRUE/)
  assert.doesNotMatch(t, /Basic Constraints/)
  assert.equal(device.certificate.ca, false)
  assert.equal(device.chain.length, 2)
  assert.equal(device.chain[1]!.fingerprint256, ca.certificate.fingerprint256)
})

test('ids equal SHA-1 / SHA-256 of the DER public key computed by openssl', () => {
  for (const name of ['ca', 'device']) {
    const der = openssl(['pkey', '-in', join(dir, `${name}.pem`), '-pubout', '-outform', 'DER'])
    const sha1 = execFileSync('sha1sum', { input: der }).toString().split(' ')[0]
    const sha256 = execFileSync('sha256sum', { input: der }).toString().split(' ')[0]
    const identity = name === 'ca' ? ca : device
    assert.equal(identity.id, sha1)
    assert.equal(identity.longId, sha256)
    assert.match(identity.id, /^[0-9a-f]{40}$/)
    assert.match(identity.longId, /^[0-9a-f]{64}$/)
    assert.deepEqual(publicKeyIds(identity.certificate), { id: sha1, longId: sha256 })
    assert.deepEqual(publicKeyIds(identity.privateKey), { id: sha1, longId: sha256 })
  }
})

test('files: PKCS#8 key with mode 0600, certificate then issuer chain, no temp files left', () => {
  const keyPem = readFileSync(join(dir, 'device.pem'), 'utf8')
  assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/)
  assert.equal(statSync(join(dir, 'device.pem')).mode & 0o777, 0o600)
  assert.equal(statSync(join(dir, 'ca.pem')).mode & 0o777, 0o600)
  const chain = parseCertificateChain(readFileSync(join(dir, 'device.crt')))
  assert.deepEqual(
    chain.map((c) => c.fingerprint256),
    [device.certificate.fingerprint256, ca.certificate.fingerprint256],
  )
  assert.deepEqual(readdirSync(dir).sort(), ['ca.crt', 'ca.pem', 'device-leaf.crt', 'device.crt', 'device.pem'])
})

test('saveIdentity refuses to overwrite unless told to', async () => {
  const before = readFileSync(join(dir, 'device.pem'), 'utf8')
  await assert.rejects(saveIdentity(ca, dir, 'device'), (err: unknown) => {
    assert.ok(isDhtnetError(err, 'FILE_EXISTS'))
    assert.match(err.message, /device\.pem already exists/)
    return true
  })
  assert.equal(readFileSync(join(dir, 'device.pem'), 'utf8'), before)
  const sub = join(dir, 'over')
  await saveIdentity(ca, sub, 'x')
  const paths = await saveIdentity(device, sub, 'x', { overwrite: true })
  const loaded = await loadIdentity({ key: paths.keyPath, certificate: paths.certPath })
  assert.equal(loaded.id, device.id)
  assert.equal(statSync(paths.keyPath).mode & 0o777, 0o600)
  assert.deepEqual(readdirSync(sub).sort(), ['x.crt', 'x.pem'])
})

test('saveIdentity into a folder that cannot exist fails (no endless mkdir under /proc)', async () => {
  await assert.rejects(saveIdentity(device, '/proc/dhtnet-no-such-dir/x', 'd'), (err: unknown) => {
    assert.ok(isDhtnetError(err, 'WRITE_FAILED'))
    assert.match(err.message, /cannot create folder \/proc\/dhtnet-no-such-dir\/x/)
    return true
  })
})

test('the signature is byte-identical to node-forge signing the same certificate', () => {
  const fcert = forge.pki.certificateFromPem(device.certificate.toString())
  const fca = forge.pki.certificateFromPem(ca.certificate.toString())
  assert.ok(fca.verify(fcert))
  const fkey = forge.pki.privateKeyFromPem(ca.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
  const md = forge.md.sha256.create()
  const pki = forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }
  md.update(forge.asn1.toDer(pki.getTBSCertificate(fcert)).getBytes())
  assert.equal(fkey.sign(md), fcert.signature)
})

test('intermediate CA chain org → account → device verifies with openssl', async () => {
  const org = await generateIdentity({ name: 'org', keySize: 2048 })
  const account = await generateIdentity({ name: 'account', issuer: org, ca: true, keySize: 2048 })
  const dev = await generateIdentity({ name: 'dev', issuer: account, keySize: 2048 })
  assert.equal(account.certificate.ca, true)
  assert.deepEqual(
    dev.chain.map((c) => c.subject.split('\n')[0]),
    ['CN=dev', 'CN=account', 'CN=org'],
  )
  const sub = join(dir, 'inter')
  await saveIdentity(org, sub, 'org')
  await saveIdentity(account, sub, 'account')
  await saveIdentity(dev, sub, 'dev')
  writeFileSync(join(sub, 'account-leaf.crt'), account.certificate.toString())
  const out = openssl(['verify', '-CAfile', join(sub, 'org.crt'), '-untrusted', join(sub, 'account-leaf.crt'), join(sub, 'dev.crt')])
  assert.match(out.toString(), /dev\.crt: OK/)
  const loaded = await loadIdentity({ key: join(sub, 'dev.pem'), certificate: join(sub, 'dev.crt'), role: 'device' })
  assert.equal(loaded.chain.length, 3)
})

test('default key size is RSA-4096', async () => {
  const big = await generateIdentity({ name: 'big' })
  assert.equal(big.privateKey.asymmetricKeyDetails?.modulusLength, 4096)
  assert.match(text(await saveIdentity(big, join(dir, 'big'), 'big').then((p) => p.certPath)), /Public-Key: \(4096 bit\)/)
})

test('generateIdentity refuses a device without issuer and odd key sizes', async () => {
  await assert.rejects(generateIdentity({ name: 'd', ca: false }), (e: unknown) => isDhtnetError(e, 'NEEDS_ISSUER'))
  await assert.rejects(generateIdentity({ name: 'd', keySize: 1024 as 2048 }), (e: unknown) => isDhtnetError(e, 'BAD_KEY_SIZE') && /2048, 3072 or 4096/.test((e as Error).message))
  await assert.rejects(generateIdentity({ name: 'd', issuer: device, keySize: 2048 }), (e: unknown) => isDhtnetError(e, 'NOT_CA'))
  assert.throws(
    () => issueCertificate({ publicKey: device.publicKey, name: 'x', ca: false, signer: { privateKey: device.privateKey, certificate: ca.certificate } }),
    (e: unknown) => isDhtnetError(e, 'KEY_MISMATCH'),
  )
})

test('parsePeerId accepts both forms, any case, trimmed', () => {
  assert.deepEqual(parsePeerId(`  ${device.id.toUpperCase()}\n`), { hex: device.id, kind: 'id' })
  assert.deepEqual(parsePeerId(device.longId), { hex: device.longId, kind: 'longId' })
  assert.equal(matchesPeerId(device.certificate, parsePeerId(device.id)), true)
  assert.equal(matchesPeerId(device.certificate, device.longId.toUpperCase()), true)
  assert.equal(matchesPeerId(device.publicKey, ca.id), false)
  assert.equal(matchesPeerId(ca.certificate, parsePeerId(device.longId)), false)
})

test('parsePeerId rejects anything else, naming what was given and what is expected', () => {
  const cases: [string, RegExp][] = [
    [device.id.slice(0, 39), /got 39 hex characters/],
    [device.longId + 'a', /got 65 hex characters/],
    ['z'.repeat(40), /'z', which is not hex/],
    ['', /empty/],
    ['dnc/' + device.id, /44 characters including 'n', which is not hex/],
  ]
  for (const [input, detail] of cases) {
    assert.throws(
      () => parsePeerId(input),
      (err: unknown) => {
        assert.ok(isDhtnetError(err, 'BAD_PEER_ID'))
        assert.match(err.message, /expected 40 hex characters \(public key id\) or 64 hex characters \(long id\)/)
        assert.match(err.message, detail)
        assert.ok(err.message.includes(`"${input}"`))
        return true
      },
    )
  }
})
