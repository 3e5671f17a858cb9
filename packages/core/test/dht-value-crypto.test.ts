import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { constants, createHash, generateKeyPairSync, privateDecrypt, publicEncrypt } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  certificateLocations,
  certificateValue,
  certificatesFromValue,
  decryptValue,
  encryptValue,
  keyId,
  rsaDecrypt,
  rsaEncrypt,
  signValue,
  unpadPkcs1Type2,
  verifyValueSignature,
} from '../src/dht/crypto.js'
import { packSignedBody, packToEncrypt, packValue, unpackValue, msgpackEncode, type DhtValue } from '../src/dht/value.js'
import { isDhtnetError } from '../src/errors.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

const alice = makeTestIdentity('alice', 2048)
const bob = makeTestIdentity('bob', 2048)
const carol4096 = makeTestIdentity('carol', 4096)
const hexOf = (b: Uint8Array | undefined) => (b === undefined ? 'undefined' : Buffer.from(b).toString('hex'))

const plain = (text: string, extra: Partial<DhtValue> = {}): DhtValue => ({ id: 0x1234567890abcdefn, type: 0, data: Buffer.from(text), userType: 'text/plain', ...extra })

test('signValue: owner, seq and an RSA-SHA512 signature over the exact body', () => {
  const s = signValue(plain('hello', { seq: 3 }), alice)
  assert.equal(hexOf(s.owner), hexOf(alice.publicKeyDer))
  assert.equal(s.seq, 3)
  assert.equal(s.signature!.length, 256)
  assert.ok(verifyValueSignature(s))
  // a second implementation checks the signature: openssl over the body bytes
  const dir = mkdtempSync(join(tmpdir(), 'dht-sig-'))
  try {
    writeFileSync(join(dir, 'body'), packSignedBody(s))
    writeFileSync(join(dir, 'sig'), s.signature!)
    writeFileSync(join(dir, 'pub.pem'), alice.publicKey.export({ type: 'spki', format: 'pem' }))
    const out = execFileSync('openssl', ['dgst', '-sha512', '-verify', join(dir, 'pub.pem'), '-signature', join(dir, 'sig'), join(dir, 'body')]).toString()
    assert.match(out, /Verified OK/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  assert.equal(signValue(plain('x'), alice).seq, 0)
})

test('a signed value survives the wire: decoded and re-encoded body is byte-identical and verifies', () => {
  const s = signValue(plain('x'.repeat(700), { seq: 65535, userType: 'peer_request' }), alice)
  const back = unpackValue(packValue(s))
  assert.equal(hexOf(packSignedBody(back)), hexOf(packSignedBody(s)))
  assert.ok(verifyValueSignature(back))
})

test('tampered signed values are rejected', () => {
  const s = signValue(plain('hello', { seq: 1 }), alice)
  const tampered: DhtValue[] = [
    { ...s, data: Buffer.from('hellO') },
    { ...s, seq: 2 },
    { ...s, type: 1 },
    { ...s, userType: 'text/html' },
    { ...s, userType: undefined },
    { ...s, recipient: Buffer.alloc(20) },
    { ...s, owner: Buffer.from(bob.publicKeyDer) },
    { ...s, owner: Buffer.from('not a key') },
    { ...s, signature: Buffer.alloc(256) },
    { ...s, signature: Buffer.alloc(0) },
    { ...s, signature: undefined },
    { ...s, owner: undefined },
  ]
  for (const t of tampered) assert.equal(verifyValueSignature(t), false)
  assert.equal(verifyValueSignature(plain('unsigned')), false)
  // an EC owner key is refused (OpenDHT values are RSA only)
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const ecDer = ec.publicKey.export({ type: 'spki', format: 'der' })
  assert.equal(verifyValueSignature({ ...s, owner: ecDer }), false)
})

for (const [name, recipient] of [
  ['2048', bob],
  ['4096', carol4096],
] as const) {
  test(`encrypt/decrypt to a ${name}-bit key: single RSA block and RSA+AES-GCM`, () => {
    const k = recipient.publicKey.asymmetricKeyDetails!.modulusLength! / 8
    for (const size of [1, 50, 600, 5000]) {
      const v = plain('s'.repeat(size), { priority: 2, pushType: 'connType' })
      const e = encryptValue(v, recipient.certificate, alice)
      assert.equal(e.id, v.id)
      assert.equal(e.data, undefined)
      assert.equal(e.owner, undefined)
      assert.equal(e.pushType, 'connType')
      // the plaintext is {body, sig}: one RSA block if it fits k-11, else RSA(key) + IV + GCM + tag
      const inner = packToEncrypt(signValue({ ...v, recipient: keyId(recipient.publicKeyDer) }, alice))
      if (inner.length <= k - 11) assert.equal(e.cypher!.length, k)
      else assert.equal(e.cypher!.length, k + 12 + inner.length + 16)
      const wire = unpackValue(packValue(e))
      const d = decryptValue(wire, recipient)
      assert.equal(d.data!.toString(), 's'.repeat(size))
      assert.equal(d.userType, 'text/plain')
      assert.equal(hexOf(d.owner), hexOf(alice.publicKeyDer))
      assert.equal(hexOf(d.recipient), hexOf(keyId(recipient.publicKeyDer)))
      assert.equal(d.priority, 2)
      assert.ok(verifyValueSignature(d))
    }
  })
}

test('decryption failures: wrong key, tampered cypher, recipient mismatch, forged signature', () => {
  const expectFail = (fn: () => unknown) => assert.throws(fn, (e) => isDhtnetError(e, 'DECRYPT_FAILED'))
  const small = encryptValue(plain('tiny'), bob.publicKey, alice)
  const large = encryptValue(plain('L'.repeat(2000)), bob.publicKey, alice)
  expectFail(() => decryptValue(small, carol4096))
  expectFail(() => decryptValue(large, alice))
  for (const e of [small, large]) {
    for (const pos of [0, 100, e.cypher!.length - 1, 256 + 5]) {
      if (pos >= e.cypher!.length) continue
      const c = Buffer.from(e.cypher!)
      c[pos]! ^= 0x01
      expectFail(() => decryptValue({ ...e, cypher: c }, bob))
    }
    expectFail(() => decryptValue({ ...e, cypher: e.cypher!.subarray(0, 255) }, bob))
    expectFail(() => decryptValue({ ...e, cypher: e.cypher!.subarray(0, e.cypher!.length - 1) }, bob))
  }
  // encrypted to bob but addressed to carol inside: bob refuses it
  const misaddressed = signValue({ ...plain('x'), recipient: keyId(carol4096.publicKeyDer) }, alice)
  expectFail(() => decryptValue({ id: 1n, type: 0, cypher: rsaEncrypt(bob.publicKey, packToEncrypt(misaddressed)) }, bob))
  // signature of another body
  const forged = signValue({ ...plain('x'), recipient: keyId(bob.publicKeyDer) }, alice)
  forged.data = Buffer.from('y')
  expectFail(() => decryptValue({ id: 1n, type: 0, cypher: rsaEncrypt(bob.publicKey, packToEncrypt(forged)) }, bob))
  // unsigned body
  const unsigned = { ...plain('x') }
  expectFail(() => decryptValue({ id: 1n, type: 0, cypher: rsaEncrypt(bob.publicKey, packToEncrypt(unsigned)) }, bob))
  // not msgpack inside
  expectFail(() => decryptValue({ id: 1n, type: 0, cypher: rsaEncrypt(bob.publicKey, Buffer.from([0xc1])) }, bob))
  expectFail(() => decryptValue(plain('not encrypted'), bob))
  assert.throws(
    () => encryptValue(small, bob.publicKey, alice),
    (e) => isDhtnetError(e, 'BAD_VALUE'),
  )
})

test('Node 20 path: PKCS#1 v1.5 blocks from Node and from openssl decrypt via RSA_NO_PADDING + our unpadding', () => {
  let nodeRefuses = false
  const block = publicEncrypt({ key: bob.publicKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.from('abc'))
  try {
    privateDecrypt({ key: bob.privateKey, padding: constants.RSA_PKCS1_PADDING }, block)
  } catch {
    nodeRefuses = true
  }
  // whatever this Node does with PKCS#1 v1.5, our path works
  assert.equal(rsaDecrypt(bob.privateKey, block).toString(), 'abc', `node refuses pkcs1: ${nodeRefuses}`)
  const dir = mkdtempSync(join(tmpdir(), 'dht-rsa-'))
  try {
    writeFileSync(join(dir, 'pub.pem'), bob.publicKey.export({ type: 'spki', format: 'pem' }))
    writeFileSync(join(dir, 'key.pem'), bob.privateKey.export({ type: 'pkcs8', format: 'pem' }))
    writeFileSync(join(dir, 'msg'), 'from-openssl')
    execFileSync('openssl', [
      'pkeyutl',
      '-encrypt',
      '-pubin',
      '-inkey',
      join(dir, 'pub.pem'),
      '-pkeyopt',
      'rsa_padding_mode:pkcs1',
      '-in',
      join(dir, 'msg'),
      '-out',
      join(dir, 'enc'),
    ])
    assert.equal(rsaDecrypt(bob.privateKey, readFileSync(join(dir, 'enc'))).toString(), 'from-openssl')
    // and openssl decrypts our single-block encryption
    writeFileSync(join(dir, 'ours'), rsaEncrypt(bob.publicKey, Buffer.from('from-node')))
    const out = execFileSync('openssl', ['pkeyutl', '-decrypt', '-inkey', join(dir, 'key.pem'), '-pkeyopt', 'rsa_padding_mode:pkcs1', '-in', join(dir, 'ours')])
    assert.equal(out.toString(), 'from-node')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('unpadPkcs1Type2 accepts only well-formed type 2 blocks', () => {
  const mk = (bytes: number[]) => Buffer.from(bytes)
  const ps = new Array<number>(8).fill(0x11)
  assert.equal(unpadPkcs1Type2(mk([0, 2, ...ps, 0, 0x41, 0x42]))!.toString(), 'AB')
  assert.equal(unpadPkcs1Type2(mk([0, 2, ...ps, 0]))!.length, 0)
  assert.equal(unpadPkcs1Type2(mk([0, 1, ...ps, 0, 0x41])), null)
  assert.equal(unpadPkcs1Type2(mk([1, 2, ...ps, 0, 0x41])), null)
  assert.equal(unpadPkcs1Type2(mk([0, 2, ...ps.slice(1), 0, 0x41])), null) // 7 padding bytes
  assert.equal(unpadPkcs1Type2(mk([0, 2, ...ps, 0x41])), null) // no separator
})

test('certificate values: type 8, id 1, msgpack bin of the PEM chain; both publication keys', () => {
  const ca = makeTestIdentity('ca', 2048)
  const dev = makeTestIdentity('device', 2048, ca)
  const v = certificateValue(dev.chain)
  assert.equal(v.id, 1n)
  assert.equal(v.type, 8)
  assert.equal(v.data![0], 0xc5) // bin16 header: two PEMs are > 255 bytes
  const chain = certificatesFromValue(unpackValue(packValue(v)))
  assert.equal(chain.length, 2)
  assert.equal(chain[0]!.fingerprint256, dev.certificate.fingerprint256)
  assert.equal(chain[1]!.fingerprint256, ca.certificate.fingerprint256)
  const { keyIdKey, longIdKey } = certificateLocations(dev.publicKeyDer)
  assert.equal(keyIdKey.toString('hex'), dev.id)
  assert.equal(longIdKey.toString('hex'), createHash('sha1').update(Buffer.from(dev.longId, 'hex')).digest('hex'))
  // DER inside the bin is accepted too; garbage is refused with BAD_CERTIFICATE
  assert.equal(certificatesFromValue({ id: 1n, type: 8, data: msgpackEncode(dev.certificate.raw) })[0]!.fingerprint256, dev.certificate.fingerprint256)
  for (const data of [msgpackEncode(Buffer.from('junk')), Buffer.from([0xc1]), msgpackEncode(5), undefined]) {
    assert.throws(
      () => certificatesFromValue({ id: 1n, type: 8, data }),
      (e) => isDhtnetError(e, 'BAD_CERTIFICATE'),
    )
  }
})
