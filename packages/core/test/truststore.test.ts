import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate, generateKeyPairSync } from 'node:crypto'
import forge from 'node-forge'
import { generateCaAndDevice, generateIdentity, issueCertificate, TrustStore, isDhtnetError, type Identity, type TrustDecision } from '../src/index.js'

let caA: Identity, devA: Identity, caB: Identity, devB: Identity
let org: Identity, account: Identity, orgDev: Identity

before(async () => {
  ;[{ ca: caA, device: devA }, { ca: caB, device: devB }] = await Promise.all([
    generateCaAndDevice({ caName: 'ca-a', deviceName: 'dev-a', keySize: 2048 }),
    generateCaAndDevice({ caName: 'ca-b', deviceName: 'dev-b', keySize: 2048 }),
  ])
  org = await generateIdentity({ name: 'org', keySize: 2048 })
  account = await generateIdentity({ name: 'account', issuer: org, ca: true, keySize: 2048 })
  orgDev = await generateIdentity({ name: 'org-dev', issuer: account, keySize: 2048 })
})

function refused(decision: TrustDecision, code: string, reason?: RegExp): void {
  assert.equal(decision.ok, false, 'expected a refusal')
  assert.equal(decision.code, code, decision.reason)
  if (reason) assert.match(decision.reason, reason)
}

test('anonymous: any sound chain is accepted', () => {
  const store = new TrustStore()
  assert.deepEqual(store.verify(devA.chain, { anonymous: true }), { ok: true })
  assert.deepEqual(store.verify(devB.chain, { anonymous: true }), { ok: true })
  assert.deepEqual(store.verify(orgDev.chain, { anonymous: true }), { ok: true })
})

test('non-anonymous: the chain must end at a trusted CA', () => {
  const store = new TrustStore()
  refused(store.verify(devA.chain), 'UNTRUSTED_CA', /ends at certificate CN=ca-a .* which is not a trusted CA/)
  store.addTrustedCa(caA.certificate)
  assert.deepEqual(store.verify(devA.chain), { ok: true })
  refused(store.verify(devB.chain), 'UNTRUSTED_CA')
  assert.equal(store.trustedCas().length, 1)
  assert.equal(store.removeTrustedCa(caA.certificate), true)
  refused(store.verify(devA.chain), 'UNTRUSTED_CA')
})

test('a leaf-only chain is completed by a trusted CA; unknown issuer otherwise', () => {
  const store = new TrustStore()
  refused(store.verify([devA.certificate], { anonymous: true }), 'UNKNOWN_ISSUER', /neither in the chain nor a trusted CA/)
  refused(store.verify([devA.certificate]), 'UNTRUSTED_CA')
  store.addTrustedCa(caA.certificate)
  assert.deepEqual(store.verify([devA.certificate]), { ok: true })
  assert.deepEqual(store.verify([devA.certificate], { anonymous: true }), { ok: true })
})

test('allowed certificates and ids pass without a trusted CA', () => {
  const store = new TrustStore()
  store.allow(devB.id)
  assert.deepEqual(store.verify(devB.chain), { ok: true })
  const store2 = new TrustStore()
  store2.allow(devB.longId.toUpperCase())
  assert.deepEqual(store2.verify(devB.chain), { ok: true })
  assert.equal(store2.isAllowed(devB.certificate), true)
  const store3 = new TrustStore()
  store3.allow(caB.certificate)
  assert.deepEqual(store3.verify(devB.chain), { ok: true })
  refused(store3.verify(devA.chain), 'UNTRUSTED_CA')
  store3.forget(caB.certificate)
  refused(store3.verify(devB.chain), 'UNTRUSTED_CA')
})

test('banned: by certificate, 40-hex id or 64-hex id, anywhere in the chain, in every mode', () => {
  const byId = new TrustStore()
  byId.addTrustedCa(caA.certificate)
  byId.ban(devA.id)
  refused(byId.verify(devA.chain), 'BANNED', new RegExp(`CN=dev-a \\(id ${devA.id}\\) is banned`))
  refused(byId.verify(devA.chain, { anonymous: true }), 'BANNED')
  const byLong = new TrustStore()
  byLong.ban(devA.longId)
  refused(byLong.verify(devA.chain, { anonymous: true }), 'BANNED')
  const byCa = new TrustStore()
  byCa.addTrustedCa(caA.certificate)
  byCa.ban(caA.certificate)
  refused(byCa.verify(devA.chain), 'BANNED', /CN=ca-a/)
  refused(byCa.verify([devA.certificate]), 'BANNED', /CN=ca-a/) // the trusted CA completing the chain is banned
  // a ban wins over an allow given before it, and allow() lifts a ban
  const s = new TrustStore()
  s.allow(devA.certificate)
  s.ban(devA.certificate)
  refused(s.verify(devA.chain), 'BANNED')
  s.allow(devA.id)
  assert.equal(s.isBanned(devA.id), false)
  assert.deepEqual(s.verify(devA.chain), { ok: true })
})

test('empty chain and self-signed device are refused', () => {
  const store = new TrustStore()
  refused(store.verify([], { anonymous: true }), 'EMPTY_CHAIN')
  refused(store.verify([...devA.chain, ...Array.from({ length: 8 }, () => caA.certificate)], { anonymous: true }), 'CHAIN_TOO_LONG', /10 certificates; at most 8/)
  const lonely = issueCertificate({ publicKey: devA.publicKey, name: 'lonely', ca: false, signer: { privateKey: devA.privateKey } })
  refused(store.verify([lonely], { anonymous: true }), 'SELF_SIGNED_DEVICE', /CN=lonely .* is self-signed/)
  store.allow(lonely)
  refused(store.verify([lonely]), 'SELF_SIGNED_DEVICE')
  refused(store.verify([caA.certificate], { anonymous: true }), 'SELF_SIGNED_DEVICE')
})

test('bad signatures: leaf with a foreign CA, and a tampered signature', () => {
  const store = new TrustStore()
  refused(store.verify([devA.certificate, caB.certificate], { anonymous: true }), 'BAD_SIGNATURE', /CN=dev-a .* does not verify by certificate CN=ca-b/)
  const raw = Buffer.from(devA.certificate.raw)
  raw[raw.length - 3]! ^= 0x01
  const tampered = new X509Certificate(raw)
  refused(store.verify([tampered, caA.certificate], { anonymous: true }), 'BAD_SIGNATURE')
  store.addTrustedCa(caA.certificate)
  refused(store.verify([tampered]), 'UNTRUSTED_CA') // no trusted CA verifies it
})

test('expired and not-yet-valid certificates are refused (time given by `now`)', () => {
  const store = new TrustStore()
  store.addTrustedCa(caA.certificate)
  refused(store.verify(devA.chain, { now: new Date(Date.now() + 11 * 365 * 86400_000) }), 'EXPIRED', /expired on/)
  refused(store.verify(devA.chain, { now: new Date(Date.now() - 86400_000) }), 'NOT_YET_VALID', /not valid before/)
  const short = issueCertificate({ publicKey: devB.publicKey, name: 'short', ca: false, signer: caA, notBefore: new Date('2020-01-01'), notAfter: new Date('2021-01-01') })
  refused(store.verify([short, caA.certificate], { anonymous: true }), 'EXPIRED', /CN=short/)
})

test('issuer that is not a CA is refused (NOT_CA); a non-CA cannot be a trusted CA', () => {
  // node-forge signs a certificate with a device key, as a broken or malicious peer could
  const fkey = forge.pki.privateKeyFromPem(devA.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
  const fdev = forge.pki.certificateFromPem(devA.certificate.toString())
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(devB.publicKey.export({ type: 'spki', format: 'pem' }).toString())
  cert.serialNumber = '05'
  cert.validity.notBefore = new Date(Date.now() - 60_000)
  cert.validity.notAfter = new Date(Date.now() + 86400_000)
  cert.setSubject([{ name: 'commonName', value: 'sub' }])
  cert.setIssuer(fdev.subject.attributes)
  cert.sign(fkey, forge.md.sha256.create())
  const sub = new X509Certificate(forge.pki.certificateToPem(cert))
  const store = new TrustStore()
  refused(store.verify([sub, ...devA.chain], { anonymous: true }), 'NOT_CA', /CN=dev-a .* signs another certificate but is not a CA/)
  assert.throws(
    () => store.addTrustedCa(devA.certificate),
    (e: unknown) => isDhtnetError(e, 'NOT_CA'),
  )
})

test('intermediate CAs: trusting the root or the intermediate both work', () => {
  const byRoot = new TrustStore()
  byRoot.addTrustedCa(org.certificate)
  assert.deepEqual(byRoot.verify(orgDev.chain), { ok: true })
  const byIntermediate = new TrustStore()
  byIntermediate.addTrustedCa(account.certificate)
  assert.deepEqual(byIntermediate.verify(orgDev.chain), { ok: true })
  assert.deepEqual(byIntermediate.verify(orgDev.chain.slice(0, 1)), { ok: true })
  refused(byIntermediate.verify(devA.chain), 'UNTRUSTED_CA')
})

test('bad ids given to allow/ban are errors, not silent no-ops', () => {
  const store = new TrustStore()
  assert.throws(
    () => store.ban('1234'),
    (e: unknown) => isDhtnetError(e, 'BAD_PEER_ID'),
  )
})

test('keys outside the policy are refused before any signature is checked with them (REJECTED_KEY)', () => {
  const store = new TrustStore()
  store.addTrustedCa(caA.certificate)
  // a device key of 1024 bits, and one with e = 3, both properly signed by a trusted CA
  for (const [opts, reason] of [
    [{ modulusLength: 1024 }, /1024 bits/],
    [{ modulusLength: 2048, publicExponent: 3 }, /exponent 3\b/],
  ] as const) {
    const { publicKey } = generateKeyPairSync('rsa', opts)
    const cert = issueCertificate({ publicKey, name: 'weak-dev', ca: false, signer: caA })
    refused(store.verify([cert, caA.certificate]), 'REJECTED_KEY', reason)
    refused(store.verify([cert, caA.certificate], { anonymous: true }), 'REJECTED_KEY', reason)
  }
  // an issuer whose key is outside the policy
  const { privateKey: weakCaKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 })
  const weakCa = issueCertificate({ publicKey: weakCaKey, name: 'weak-ca', ca: true, signer: { privateKey: weakCaKey } })
  const dev = issueCertificate({ publicKey: devA.publicKey, name: 'dev-of-weak-ca', ca: false, signer: { privateKey: weakCaKey, certificate: weakCa } })
  refused(store.verify([dev, weakCa], { anonymous: true }), 'REJECTED_KEY', /CN=weak-ca/)
  // (EC issuers, as dhtnode -i makes them, are accepted: tested with a real dhtnode's certificate in dht-interop.test.ts)
  assert.deepEqual(store.verify(devA.chain), { ok: true })
})
