/**
 * The RSA key policy (identity/key-policy.ts): e = 65537 and 2048–4096-bit moduli, checked on the DER before
 * OpenSSL parses anything. Keys from OpenSSL (Node's generator and the `openssl` CLI) of every interesting shape,
 * hand-made DER, and a fuzz of the DER reader (random and mutated inputs: it never throws, and whatever it accepts
 * OpenSSL parses as an RSA key the policy also accepts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { rsaSpkiProblem, rsaKeyProblem, issuerKeyProblem, assertAcceptableRsaKey, RSA_KEY_POLICY } from '../src/identity/key-policy.js'
import { isDhtnetError } from '../src/errors.js'
import { rsaSpki, rsaSpkiFromIntegers, hugeExponentKey } from './helpers/dht-attack.js'

const spki = (bits: number, publicExponent = 65537) => generateKeyPairSync('rsa', { modulusLength: bits, publicExponent }).publicKey.export({ type: 'spki', format: 'der' })

test('OpenSSL RSA keys of 2048, 3072 and 4096 bits with e = 65537 are accepted, on the DER and parsed', () => {
  for (const bits of [2048, 3072, 4096]) {
    const der = spki(bits)
    assert.equal(rsaSpkiProblem(der), undefined, `${bits} bits`)
    assert.equal(rsaKeyProblem(createPublicKey({ key: der, format: 'der', type: 'spki' })), undefined)
  }
  // a key written by the openssl CLI (another encoder) too
  const pem = execFileSync('sh', ['-c', 'openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null | openssl pkey -pubout -outform DER'])
  assert.equal(rsaSpkiProblem(pem), undefined)
})

test('small and large moduli, other exponents, other key types and a huge exponent are refused with a reason', () => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['1024 bits', spki(1024), /1024 bits/],
    ['2047 bits', spki(2047), /2047 bits/],
    ['4104 bits', spki(4104), /4104 bits/],
    ['e = 3', spki(2048, 3), /exponent 3\b/],
    ['e = 17', spki(2048, 17), /exponent 17\b/],
    ['huge e', hugeExponentKey(), /exponent of 3071 bits/],
    ['EC', generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }), /not an RSA/],
    ['Ed25519', generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' }), /not an RSA/],
  ]
  for (const [what, der, reason] of cases) {
    const p = rsaSpkiProblem(der)
    assert.match(p ?? 'accepted', reason, what)
    // the parsed-key check agrees (where OpenSSL parses it)
    let parsed
    try {
      parsed = createPublicKey({ key: der, format: 'der', type: 'spki' })
    } catch {
      continue
    }
    assert.ok(rsaKeyProblem(parsed), `${what}: rsaKeyProblem accepted it`)
  }
  const small = createPublicKey({ key: spki(1024), format: 'der', type: 'spki' })
  assert.throws(
    () => assertAcceptableRsaKey(small, 'the peer key'),
    (e) => isDhtnetError(e, 'REJECTED_KEY') && /1024 bits/.test(e.message),
  )
})

test('the DER reader is strict: non-minimal lengths and integers, trailing bytes, negative or even moduli', () => {
  const good = spki(2048)
  assert.equal(rsaSpkiProblem(Buffer.concat([good, Buffer.from([0])])), 'not a DER SubjectPublicKeyInfo')
  assert.ok(rsaSpkiProblem(good.subarray(0, good.length - 1)))
  const n = Buffer.alloc(256, 0xab)
  n[255] = 0xab
  const e = Buffer.from([1, 0, 1])
  assert.equal(rsaSpki(n, e).length, good.length)
  assert.equal(rsaSpkiProblem(rsaSpki(n, e)), undefined)
  const even = Buffer.from(n)
  even[255] = 0xaa
  assert.equal(rsaSpkiProblem(rsaSpki(even, e)), 'even RSA modulus')
  const nInteger = Buffer.concat([Buffer.from([0x02, 0x82, 0x01, 0x01, 0x00]), n])
  assert.equal(rsaSpkiProblem(rsaSpkiFromIntegers(nInteger, Buffer.from('0203010001', 'hex'))), undefined)
  // exponent with a useless leading zero byte: not minimal DER
  assert.match(rsaSpkiProblem(rsaSpkiFromIntegers(nInteger, Buffer.from('020400010001', 'hex'))) ?? '', /exponent of \? bits/)
  // modulus with a useless leading zero, a negative modulus, a long-form length that fits the short form
  assert.equal(rsaSpkiProblem(rsaSpkiFromIntegers(Buffer.concat([Buffer.from([0x02, 0x82, 0x01, 0x02, 0x00, 0x00]), n]), Buffer.from('0203010001', 'hex'))), 'bad RSA modulus')
  assert.equal(rsaSpkiProblem(rsaSpkiFromIntegers(Buffer.concat([Buffer.from([0x02, 0x82, 0x01, 0x00]), n]), Buffer.from('0203010001', 'hex'))), 'bad RSA modulus')
  assert.equal(rsaSpkiProblem(rsaSpkiFromIntegers(nInteger, Buffer.from('02810301000 1'.replace(' ', ''), 'hex'))), 'bad RSA exponent')
  // the NULL parameters may be absent (some encoders leave them out)
  const noNull = Buffer.from('300b06092a864886f70d010101', 'hex')
  const bitString = good.subarray(4 + 15) // after outer header (30 82 xx xx) and the 15-byte algorithm
  const body = Buffer.concat([noNull, bitString])
  const withoutNull = Buffer.concat([Buffer.from([0x30, 0x82, body.length >> 8, body.length & 0xff]), body])
  assert.equal(rsaSpkiProblem(withoutNull), undefined)
})

test('issuer keys: RSA within the policy, named NIST curves and EdDSA; not RSA outside it', () => {
  const pub = (k: ReturnType<typeof generateKeyPairSync>) => k.publicKey
  assert.equal(issuerKeyProblem(pub(generateKeyPairSync('ec', { namedCurve: 'P-521' }))), undefined)
  assert.equal(issuerKeyProblem(pub(generateKeyPairSync('ed25519'))), undefined)
  assert.equal(issuerKeyProblem(pub(generateKeyPairSync('rsa', { modulusLength: 2048 }))), undefined)
  assert.ok(issuerKeyProblem(pub(generateKeyPairSync('rsa', { modulusLength: 1024 }))))
  assert.ok(issuerKeyProblem(pub(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }))))
})

test('fuzz: 50,000 random and mutated SPKIs; the reader never throws, and what it accepts is an acceptable RSA key', () => {
  const seeds = [spki(2048), spki(4096), spki(2048, 3), hugeExponentKey(), generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' })]
  let seed = 42
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  let accepted = 0
  const t0 = Date.now()
  for (let i = 0; i < 50_000 && Date.now() - t0 < 60_000; i++) {
    let b: Buffer
    const base = seeds[rnd(seeds.length)]!
    switch (i % 4) {
      case 0:
        b = randomBytes(rnd(600))
        break
      case 1:
        b = Buffer.from(base)
        for (let k = 0; k < 1 + rnd(3); k++) b[rnd(b.length)]! ^= 1 << rnd(8)
        break
      case 2:
        b = base.subarray(0, rnd(base.length + 1))
        break
      default: {
        b = Buffer.from(base)
        const at = rnd(b.length)
        b[at] = [0x00, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0xff][rnd(8)]!
      }
    }
    const p = rsaSpkiProblem(b)
    if (p !== undefined) continue
    accepted++
    const key = createPublicKey({ key: b, format: 'der', type: 'spki' }) // must parse
    assert.equal(rsaKeyProblem(key), undefined)
    const d = key.asymmetricKeyDetails!
    assert.ok(d.modulusLength! >= RSA_KEY_POLICY.minModulusBits && d.modulusLength! <= RSA_KEY_POLICY.maxModulusBits)
  }
  // bit flips inside the modulus of the two good seeds are (correctly) accepted: the accepting branch ran
  assert.ok(accepted > 100, `accepted ${accepted}`)
})
