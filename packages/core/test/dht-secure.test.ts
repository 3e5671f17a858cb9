/**
 * SecureDht's own logic over an in-memory key → values table (the engine contract: get/put/listen). The same class
 * runs over real DhtNodes in dht-secure-network.test.ts and against Debian's dhtnode in dht-interop.test.ts.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { SecureDht, type SecureDhtEngine } from '../src/dht/secure-dht.js'
import { certificateValue, encryptValue, keyId, signValue } from '../src/dht/crypto.js'
import type { DhtValue } from '../src/dht/value.js'
import { isDhtnetError } from '../src/errors.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

class MemoryEngine implements SecureDhtEngine {
  readonly table = new Map<string, Map<bigint, DhtValue>>()
  readonly listeners = new Map<string, Set<(v: DhtValue[], expired: boolean) => void>>()
  readonly puts: Array<{ key: string; value: DhtValue; permanent: boolean }> = []
  get(key: Buffer, o: { filter?: (v: DhtValue) => boolean }): Promise<DhtValue[]> {
    const vals = [...(this.table.get(key.toString('hex'))?.values() ?? [])]
    return Promise.resolve(o.filter ? vals.filter(o.filter) : vals)
  }
  put(key: Buffer, value: DhtValue, o: { permanent?: boolean }): Promise<boolean> {
    const k = key.toString('hex')
    this.puts.push({ key: k, value, permanent: o.permanent ?? false })
    if (!this.table.has(k)) this.table.set(k, new Map())
    this.table.get(k)!.set(value.id, value)
    for (const cb of this.listeners.get(k) ?? []) cb([value], false)
    return Promise.resolve(true)
  }
  listen(key: Buffer, cb: (v: DhtValue[], expired: boolean) => void) {
    const k = key.toString('hex')
    if (!this.listeners.has(k)) this.listeners.set(k, new Set())
    this.listeners.get(k)!.add(cb)
    return { cancel: () => this.listeners.get(k)!.delete(cb) }
  }
}

const ca = makeTestIdentity('ca', 2048)
const alice = makeTestIdentity('alice', 2048, ca)
const bob = makeTestIdentity('bob', 2048)
const mallory = makeTestIdentity('mallory', 2048)
const sha1hex = (b: Uint8Array | string) => createHash('sha1').update(b).digest('hex')

test('start publishes the certificate chain at the key id and at SHA1(PkId), permanently', async () => {
  const engine = new MemoryEngine()
  const sd = new SecureDht(engine, alice)
  assert.deepEqual(await sd.start(), { keyIdKey: true, longIdKey: true })
  const keys = engine.puts.map((p) => p.key).sort()
  assert.deepEqual(keys, [alice.id, sha1hex(Buffer.from(alice.longId, 'hex'))].sort())
  for (const p of engine.puts) {
    assert.equal(p.permanent, true)
    assert.equal(p.value.type, 8)
    assert.equal(p.value.id, 1n)
  }
  // another node finds it by both id forms, as a chain
  const other = new SecureDht(engine, bob)
  for (const id of [alice.id, alice.longId, alice.longId.toUpperCase()]) {
    const chain = await other.findCertificate(id)
    assert.ok(chain)
    assert.equal(chain.length, 2)
    assert.equal(chain[0]!.fingerprint256, alice.certificate.fingerprint256)
    assert.equal(chain[1]!.fingerprint256, ca.certificate.fingerprint256)
  }
  assert.equal(await other.findCertificate(mallory.id), null)
  assert.throws(
    () => SecureDht.peerKey('xyz'),
    (e) => isDhtnetError(e, 'BAD_PEER_ID'),
  )
  await assert.rejects(other.findCertificate('not-an-id'), (e) => isDhtnetError(e, 'BAD_PEER_ID'))
})

test('a certificate found once is known locally: knownCertificate and findCertificate ask the network no more', async () => {
  const engine = new MemoryEngine()
  await new SecureDht(engine, alice).start()
  const other = new SecureDht(engine, bob)
  assert.equal(other.knownCertificate(alice.longId), undefined, 'not known before a lookup')
  let gets = 0
  const get = engine.get.bind(engine)
  engine.get = (key, o) => {
    gets++
    return get(key, o)
  }
  assert.ok(await other.findCertificate(alice.id))
  assert.equal(gets, 1)
  for (const id of [alice.id, alice.longId]) {
    assert.equal(other.knownCertificate(id)?.[0]?.fingerprint256, alice.certificate.fingerprint256)
    assert.equal((await other.findCertificate(id))?.[0]?.fingerprint256, alice.certificate.fingerprint256)
  }
  assert.equal(gets, 1, 'served from the cache')
  // a copy: the caller cannot change the cached chain
  other.knownCertificate(alice.id)!.pop()
  assert.equal(other.knownCertificate(alice.id)!.length, 2)
})

test('findCertificate refuses a certificate whose key does not match the asked id', async () => {
  const engine = new MemoryEngine()
  // mallory plants her certificate at alice's keys
  await engine.put(Buffer.from(alice.id, 'hex'), certificateValue(mallory.chain), {})
  await engine.put(createHash('sha1').update(Buffer.from(alice.longId, 'hex')).digest(), certificateValue(mallory.chain), {})
  await engine.put(Buffer.from(alice.id, 'hex'), { id: 2n, type: 8, data: Buffer.from('junk') }, {})
  const sd = new SecureDht(engine, bob)
  assert.equal(await sd.findCertificate(alice.id), null)
  assert.equal(await sd.findCertificate(alice.longId), null)
  assert.equal(await sd.findPublicKey(alice.id), null)
  await assert.rejects(sd.putEncrypted('k', alice.id, { data: Buffer.from('x') }), (e) => isDhtnetError(e, 'CERT_NOT_FOUND'))
  // the local lookup hook is used, and also checked
  const withLocal = new SecureDht(engine, bob, { localCertificateLookup: (id) => (id === alice.longId ? alice.chain : id === alice.id ? mallory.chain : null) })
  assert.equal((await withLocal.findCertificate(alice.longId))![0]!.fingerprint256, alice.certificate.fingerprint256)
})

test('get and listen: verified, decrypted and plain values pass; forged and foreign ones are dropped and counted', async () => {
  const engine = new MemoryEngine()
  const a = new SecureDht(engine, alice)
  const b = new SecureDht(engine, bob)
  await a.start()
  await b.start()
  const heard: DhtValue[][] = []
  const l = b.listen('box', (vals) => heard.push(vals))
  await a.put('box', { data: Buffer.from('plain'), userType: 'text/plain' })
  await a.putSigned('box', { data: Buffer.from('signed') })
  await a.putEncrypted('box', bob.id, { data: Buffer.from('secret'), userType: 'peer_request' })
  await a.putEncrypted('box', bob.longId, { data: Buffer.from('secret2') })
  // forged: alice's signed value with changed data; encrypted to mallory; garbage cypher
  const forged = signValue({ id: 99n, type: 0, data: Buffer.from('orig') }, alice)
  forged.data = Buffer.from('evil')
  await engine.put(Buffer.from(sha1hex('box'), 'hex'), forged, {})
  await engine.put(Buffer.from(sha1hex('box'), 'hex'), encryptValue({ id: 100n, type: 0, data: Buffer.from('x') }, mallory.publicKey, alice), {})
  await engine.put(Buffer.from(sha1hex('box'), 'hex'), { id: 101n, type: 0, cypher: Buffer.alloc(300, 1) }, {})
  const got = await b.get('box')
  const texts = got.map((v) => v.data!.toString()).sort()
  assert.deepEqual(texts, ['plain', 'secret', 'secret2', 'signed'])
  const secret = got.find((v) => v.data!.toString() === 'secret')!
  assert.equal(secret.userType, 'peer_request')
  assert.equal(keyId(secret.owner!).toString('hex'), alice.id)
  assert.equal(secret.recipient!.toString('hex'), bob.id)
  const st = b.stats()
  assert.equal(st.droppedForged, 2) // one from the listen, one from the get
  assert.equal(st.droppedUndecryptable, 4)
  assert.deepEqual(
    heard.flat().map((v) => v.data!.toString()),
    ['plain', 'signed', 'secret', 'secret2'],
  )
  // filters see checked values
  const onlySecret = await b.get('box', { filter: (v) => v.userType === 'peer_request' })
  assert.equal(onlySecret.length, 1)
  l.cancel()
  await a.put('box', { data: Buffer.from('after cancel') })
  assert.equal(heard.length, 4)
  // after decrypting, bob knows alice's key without a lookup
  assert.ok(await b.findPublicKey(alice.longId))
  a.close()
  b.close()
})

test('putSigned bumps seq past versions already on the DHT and its own previous puts', async () => {
  const engine = new MemoryEngine()
  const a = new SecureDht(engine, alice)
  const r1 = await a.putSigned('k', { id: 7n, data: Buffer.from('v1') })
  assert.equal(r1.value.seq, 0)
  const r2 = await a.putSigned('k', { id: 7n, data: Buffer.from('v2') })
  assert.equal(r2.value.seq, 1)
  // a fresh SecureDht (restart) learns seq from the network
  const a2 = new SecureDht(engine, alice)
  const r3 = await a2.putSigned('k', { id: 7n, data: Buffer.from('v3') })
  assert.equal(r3.value.seq, 2)
  // someone else's value with the same id does not count
  const engine2 = new MemoryEngine()
  await engine2.put(Buffer.from(sha1hex('k'), 'hex'), signValue({ id: 7n, type: 0, data: Buffer.from('m'), seq: 50 }, mallory), {})
  const r4 = await new SecureDht(engine2, alice).putSigned('k', { id: 7n, data: Buffer.from('a') })
  assert.equal(r4.value.seq, 0)
  await assert.rejects(new SecureDht(engine2, alice).putSigned('k', { id: 8n, seq: 70000 }), (e) => isDhtnetError(e, 'SEQ_EXHAUSTED'))
})

test('peerKey is SHA1("peer:" + lowercase hex id)', () => {
  assert.equal(SecureDht.peerKey(alice.longId.toUpperCase()).toString('hex'), sha1hex('peer:' + alice.longId))
  assert.equal(SecureDht.peerKey(alice.id).toString('hex'), sha1hex('peer:' + alice.id))
})
