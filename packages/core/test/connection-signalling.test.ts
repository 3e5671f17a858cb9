import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Unpackr } from 'msgpackr'
import { decodeRequest, encodeRequest, newRequestId, TreatedIds, ID_MAX } from '../src/connection/signalling.js'
import { msgpackEncode } from '../src/dht/value.js'
import { isDhtnetError } from '../src/errors.js'

test('request encoding: DHTNet map keys, 64-bit id as an integer (not a float), round trip', () => {
  const id = (1n << 52n) + 12345n
  const bytes = encodeRequest({ id, iceMsg: 'v=0\r\n', isAnswer: false, connType: 'dnc' })
  // a generic msgpack decoder sees exactly DHTNet's four keys with the right types
  const plain = new Unpackr({ int64AsType: 'bigint', mapsAsObjects: true, useRecords: false }).unpack(bytes) as Record<string, unknown>
  assert.deepEqual(Object.keys(plain).sort(), ['connType', 'ice_msg', 'id', 'isAnswer'])
  assert.equal(typeof plain.id === 'bigint' ? plain.id : BigInt(plain.id as number), id)
  assert.equal(bytes[bytes.indexOf(Buffer.from('id')) + 2], 0xcf, 'id is written as uint64')
  assert.deepEqual(decodeRequest(bytes), { id, iceMsg: 'v=0\r\n', isAnswer: false, connType: 'dnc' })
  const answer = decodeRequest(encodeRequest({ id: 7n, iceMsg: '', isAnswer: true, connType: '', refused: 'UNTRUSTED' }))
  assert.equal(answer.refused, 'UNTRUSTED')
  const withCert = decodeRequest(encodeRequest({ id: 8n, iceMsg: 'x', isAnswer: false, connType: '', certificate: '-----BEGIN CERTIFICATE-----' }))
  assert.equal(withCert.certificate, '-----BEGIN CERTIFICATE-----')
})

test('a request as msgpack-c writes it (small id as positive fixint, no extension keys) decodes', () => {
  const bytes = msgpackEncode({ id: 5, ice_msg: 'ufrag\npwd\n', isAnswer: true, connType: '' })
  assert.deepEqual(decodeRequest(bytes), { id: 5n, iceMsg: 'ufrag\npwd\n', isAnswer: true, connType: '' })
})

test('malformed requests are refused with BAD_REQUEST naming the problem', () => {
  const bad = (x: unknown, re: RegExp) =>
    assert.throws(
      () => decodeRequest(x instanceof Uint8Array ? x : msgpackEncode(x)),
      (e: unknown) => isDhtnetError(e, 'BAD_REQUEST') && re.test(e.message),
    )
  bad(Buffer.alloc(0), /no data/)
  bad(Buffer.from([0x85, 0xa2, 0x69]), /not msgpack/) // truncated
  bad([1, 2, 3], /not a map/)
  bad({ ice_msg: 'x' }, /id is not an integer/)
  bad({ id: 0, ice_msg: 'x' }, /out of range/)
  bad({ id: 1, ice_msg: 5 }, /ice_msg/)
  bad({ id: 1, ice_msg: 'x', isAnswer: 'yes' }, /isAnswer/)
  bad({ id: 1, ice_msg: 'x', connType: 'c'.repeat(1000) }, /connType/)
  bad({ id: 1, ice_msg: 'x'.repeat(70 * 1024) }, /too large/)
  // an unknown refusal code is still a refusal
  assert.equal(decodeRequest(msgpackEncode({ id: 1, ice_msg: '', isAnswer: true, refused: 'WHATEVER' })).refused, 'REFUSED')
})

test('request ids are in [1, 2^53] and distinct', () => {
  const seen = new Set<bigint>()
  for (let i = 0; i < 1000; i++) {
    const id = newRequestId()
    assert.ok(id >= 1n && id <= ID_MAX)
    seen.add(id)
  }
  assert.equal(seen.size, 1000)
})

test('treated ids: replay detected per signer, expire after the TTL, bounded in size', () => {
  const t = new TreatedIds(100, 1000)
  assert.equal(t.checkAndAdd('alice', 1n, 0), false)
  assert.equal(t.checkAndAdd('alice', 1n, 10), true)
  assert.equal(t.checkAndAdd('bob', 1n, 10), false, 'another signer may use the same id')
  assert.equal(t.checkAndAdd('alice', 1n, 2000), false, 'forgotten after the TTL')
  for (let i = 0; i < 1000; i++) t.checkAndAdd('x', BigInt(i), 2000)
  assert.ok(t.size <= 100)
})
