import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Packr } from 'msgpackr'
import {
  MsgpackRaw,
  MsgpackWriter,
  ValueField,
  ValueType,
  decodeValue,
  formatValue,
  msgpackDecode,
  msgpackEncode,
  packSignedBody,
  packValue,
  randomValueId,
  unpackValue,
  valueFieldValues,
  valueTypeExpirationMs,
  type DhtValue,
} from '../src/dht/value.js'
import { isDhtnetError } from '../src/errors.js'

/** Byte equality (msgpackr adds a `dataView` property to buffers it decoded, which deepEqual would compare). */
const sameBytes = (a: Uint8Array | undefined, b: Uint8Array | undefined, msg?: string) =>
  assert.equal(a === undefined ? 'undefined' : Buffer.from(a).toString('hex'), b === undefined ? 'undefined' : Buffer.from(b).toString('hex'), msg)
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const str = (s: string) => Buffer.concat([Buffer.from([0xa0 | s.length]), Buffer.from(s)]).toString('hex')

test('unsigned value: exact msgpack-c bytes', () => {
  const v: DhtValue = { id: 0xdbd7123456789abcn, type: 0, data: Buffer.from('hello'), userType: 'text/plain' }
  const expected = hex(
    '82' +
      str('id') +
      'cf dbd7123456789abc' +
      str('dat') +
      '81' +
      str('body') +
      '83' +
      str('type') +
      '00' +
      str('data') +
      'c405' +
      Buffer.from('hello').toString('hex') +
      str('utype') +
      'aa' +
      Buffer.from('text/plain').toString('hex'),
  )
  assert.deepEqual(packValue(v), expected)
})

test('signed body with recipient: key order seq, owner, to, type, data, utype and minimal headers', () => {
  const owner = Buffer.alloc(300, 7)
  const to = Buffer.alloc(20, 9)
  const v: DhtValue = { id: 5n, type: 300, data: Buffer.alloc(3, 1), seq: 200, owner, recipient: to, userType: 'x'.repeat(40), signature: Buffer.alloc(4, 2) }
  const expected = hex(
    '86' +
      str('seq') +
      'ccc8' +
      str('owner') +
      'c5012c' +
      owner.toString('hex') +
      str('to') +
      'c414' +
      to.toString('hex') +
      str('type') +
      'cd012c' +
      str('data') +
      'c403010101' +
      str('utype') +
      'd928' +
      Buffer.from('x'.repeat(40)).toString('hex'),
  )
  assert.deepEqual(packSignedBody(v), expected)
  // the full value: {id, dat:{body, sig}}
  assert.deepEqual(packValue(v), Buffer.concat([hex('82' + str('id') + '05' + str('dat') + '82' + str('body')), expected, hex(str('sig') + 'c40402020202')]))
})

test('signed body without recipient has 4 (+utype) entries; seq 0 is written', () => {
  const v: DhtValue = { id: 1n, type: 0, data: Buffer.alloc(0), owner: Buffer.from([1, 2]), seq: 0 }
  assert.deepEqual(packSignedBody(v), hex('84' + str('seq') + '00' + str('owner') + 'c4020102' + str('type') + '00' + str('data') + 'c400'))
})

test('encrypted value: {id, dat: bin(cypher), p, pt}', () => {
  const cypher = Buffer.alloc(70000, 0xab)
  const v: DhtValue = { id: 0xffffffffn, type: 0, cypher, priority: 1, pushType: 'ice' }
  const b = packValue(v)
  assert.deepEqual(b.subarray(0, 18), hex('84' + str('id') + 'ceffffffff' + str('dat') + 'c6' + '00011170'))
  assert.deepEqual(b.subarray(b.length - 10), hex(str('p') + '01' + str('pt') + str('ice')))
  const back = unpackValue(b)
  assert.equal(back.id, 0xffffffffn)
  sameBytes(back.cypher, cypher)
  assert.equal(back.priority, 1)
  assert.equal(back.pushType, 'ice')
  assert.equal(back.data, undefined)
})

test('integers: minimal encodings for every width, as msgpack-c', () => {
  const enc = (n: number | bigint) => new MsgpackWriter().int(n).finish().toString('hex')
  assert.equal(enc(0), '00')
  assert.equal(enc(127), '7f')
  assert.equal(enc(128), 'cc80')
  assert.equal(enc(255), 'ccff')
  assert.equal(enc(256), 'cd0100')
  assert.equal(enc(65535), 'cdffff')
  assert.equal(enc(65536), 'ce00010000')
  assert.equal(enc(0xffffffff), 'ceffffffff')
  assert.equal(enc(2 ** 32), 'cf0000000100000000')
  assert.equal(enc(2n ** 64n - 1n), 'cfffffffffffffffff')
  assert.equal(enc(-1), 'ff')
  assert.equal(enc(-32), 'e0')
  assert.equal(enc(-33), 'd0df')
  assert.equal(enc(-129), 'd1ff7f')
  assert.equal(enc(-32769), 'd2ffff7fff')
  assert.equal(enc(-(2 ** 31) - 1), 'd3ffffffff7fffffff')
  assert.throws(() => enc(2n ** 64n), RangeError)
  assert.throws(() => new MsgpackWriter().uint(-1), RangeError)
})

test('strings, bins, arrays and maps: header sizes', () => {
  const w = (x: unknown) => msgpackEncode(x)
  assert.equal(w('a'.repeat(31))[0], 0xbf)
  assert.deepEqual(w('a'.repeat(32)).subarray(0, 2), hex('d920'))
  assert.deepEqual(w('a'.repeat(256)).subarray(0, 3), hex('da0100'))
  assert.deepEqual(w(Buffer.alloc(65536)).subarray(0, 5), hex('c600010000'))
  assert.deepEqual(w(new Array(16).fill(0)).subarray(0, 3), hex('dc0010'))
  assert.deepEqual(w({ a: 1, b: undefined, c: true, d: null, e: 1.5 }), hex('84' + str('a') + '01' + str('c') + 'c3' + str('d') + 'c0' + str('e') + 'cb3ff8000000000000'))
  assert.deepEqual(w([new MsgpackRaw(hex('c0c0'))]), hex('91c0c0'))
  assert.deepEqual(w(new Map<unknown, unknown>([[1, 'x']])), hex('8101' + str('x')))
})

test('writer output decodes with msgpackr to the same data', () => {
  const obj = { y: 'q', t: 123456, a: { id: Buffer.alloc(20, 1), vid: 2n ** 63n + 5n, n: -7, list: [1, 'two', Buffer.from([3])] } }
  const back = msgpackDecode(msgpackEncode(obj)) as typeof obj
  assert.equal(back.t, 123456)
  assert.equal(back.a.vid, 2n ** 63n + 5n)
  assert.equal(back.a.n, -7)
  sameBytes(back.a.id, Buffer.alloc(20, 1))
  assert.deepEqual(back.a.list, [1, 'two', Buffer.from([3])])
})

test('round trip of many shapes of values', () => {
  const shapes: DhtValue[] = [
    { id: 1n, type: 0, data: Buffer.alloc(0) },
    { id: 2n ** 64n - 1n, type: 65535, data: Buffer.alloc(1000, 3), userType: 'peer_request' },
    { id: 77n, type: 8, data: Buffer.from('pem'), seq: 65535, owner: Buffer.alloc(550, 4), signature: Buffer.alloc(512, 5) },
    { id: 78n, type: 0, data: Buffer.from('x'), seq: 3, owner: Buffer.alloc(294, 4), recipient: Buffer.alloc(20, 6), signature: Buffer.alloc(256, 5), priority: 7, pushType: 'p' },
    { id: 79n, type: 0, cypher: Buffer.alloc(600, 8) },
  ]
  for (const v of shapes) {
    const b = packValue(v)
    const back = unpackValue(b)
    sameBytes(packValue(back), b)
    assert.equal(back.id, v.id)
    assert.equal(back.type, v.type)
    sameBytes(back.owner, v.owner)
    sameBytes(back.signature, v.signature)
    sameBytes(back.recipient, v.recipient)
    assert.equal(back.seq, v.seq)
    if (!v.cypher) sameBytes(back.data, v.data)
  }
})

test('decodeValue accepts what another encoder writes (numbers, bigints, str data, byte arrays)', () => {
  const packr = new Packr({ useRecords: false })
  const fromMsgpackr = packr.pack({ id: 12345, dat: { body: { type: 3, data: 'text', utype: 'text/plain' } }, p: 2 })
  const v = unpackValue(fromMsgpackr)
  assert.equal(v.id, 12345n)
  assert.equal(v.type, 3)
  sameBytes(v.data, Buffer.from('text'))
  assert.equal(v.priority, 2)
  const arr = decodeValue({ id: 9n, dat: { body: { type: 0, data: [1, 2, 255] } } })
  sameBytes(arr.data, Buffer.from([1, 2, 255]))
  const u8 = decodeValue({ id: 9, dat: new Uint8Array([1, 2]) })
  sameBytes(u8.cypher, Buffer.from([1, 2]))
})

test('decodeValue rejects malformed values with BAD_VALUE', () => {
  const body = { type: 0, data: Buffer.from('x') }
  const signedBody = { seq: 1, owner: Buffer.alloc(10), type: 0, data: Buffer.from('x') }
  const bad: unknown[] = [
    null,
    5,
    'str',
    [1, 2],
    Buffer.from('x'),
    { dat: { body } },
    { id: 0, dat: { body } },
    { id: -1, dat: { body } },
    { id: 1.5, dat: { body } },
    { id: 'x', dat: { body } },
    { id: 2n ** 64n, dat: { body } },
    { id: 1 },
    { id: 1, dat: 5 },
    { id: 1, dat: {} },
    { id: 1, dat: { body: { type: 0 } } },
    { id: 1, dat: { body: { data: Buffer.from('x') } } },
    { id: 1, dat: { body: { type: 65536, data: Buffer.from('x') } } },
    { id: 1, dat: { body: { type: 'x', data: Buffer.from('x') } } },
    { id: 1, dat: { body: { type: 0, data: 5 } } },
    { id: 1, dat: { body: { type: 0, data: [256] } } },
    { id: 1, dat: { body: { type: 0, data: Buffer.from('x'), utype: 5 } } },
    { id: 1, dat: { body: signedBody } }, // no sig
    { id: 1, dat: { body: { ...signedBody, seq: undefined }, sig: Buffer.alloc(1) } },
    { id: 1, dat: { body: { ...signedBody, seq: 70000 }, sig: Buffer.alloc(1) } },
    { id: 1, dat: { body: { ...signedBody, to: Buffer.alloc(19) }, sig: Buffer.alloc(1) } },
    { id: 1, dat: { body: { ...signedBody, owner: Buffer.alloc(0) }, sig: Buffer.alloc(1) } },
    { id: 1, dat: { body }, p: -1 },
    { id: 1, dat: { body }, pt: 7 },
  ]
  for (const b of bad) {
    assert.throws(
      () => decodeValue(b),
      (e) => isDhtnetError(e, 'BAD_VALUE'),
      `accepted ${String(JSON.stringify(b, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : x)))}`,
    )
  }
  const good = packValue({ id: 1n, type: 0, data: Buffer.alloc(100) })
  for (let cut = 0; cut < good.length; cut++) {
    assert.throws(
      () => unpackValue(good.subarray(0, cut)),
      (e) => isDhtnetError(e, 'BAD_VALUE'),
    )
  }
})

test('packValue refuses values it cannot encode', () => {
  for (const v of [
    { id: 0n, type: 0 },
    { id: 1 as unknown as bigint, type: 0 },
    { id: 1n, type: 70000 },
    { id: 1n, type: 0, seq: -1, owner: Buffer.alloc(1) },
    { id: 1n, type: 0, recipient: Buffer.alloc(3) },
  ]) {
    assert.throws(
      () => packValue(v),
      (e) => isDhtnetError(e, 'BAD_VALUE'),
    )
  }
})

test('value types and expirations', () => {
  assert.equal(valueTypeExpirationMs(ValueType.USER_DATA), 10 * 60_000)
  assert.equal(valueTypeExpirationMs(1), 5 * 60_000)
  assert.equal(valueTypeExpirationMs(2), 15 * 60_000)
  assert.equal(valueTypeExpirationMs(3), 5 * 60_000)
  assert.equal(valueTypeExpirationMs(4), 7 * 24 * 3600_000)
  assert.equal(valueTypeExpirationMs(5), 60_000)
  assert.equal(valueTypeExpirationMs(ValueType.CERTIFICATE), 7 * 24 * 3600_000)
  assert.equal(valueTypeExpirationMs(1234), 10 * 60_000)
})

test('randomValueId: non-zero uint64 bigints, distinct', () => {
  const ids = new Set<bigint>()
  for (let i = 0; i < 1000; i++) {
    const id = randomValueId()
    assert.equal(typeof id, 'bigint')
    assert.ok(id > 0n && id < 2n ** 64n)
    ids.add(id)
  }
  assert.equal(ids.size, 1000)
})

test('field values for SELECT replies follow field order and types', () => {
  const v: DhtValue = { id: 2n ** 60n, type: 3, data: Buffer.alloc(1), seq: 4, owner: Buffer.from([1]), userType: 'u' }
  assert.deepEqual(valueFieldValues(v, [ValueField.USER_TYPE, ValueField.ID, ValueField.SEQ_NUM]), [2n ** 60n, 4, 'u'])
  assert.deepEqual(valueFieldValues({ id: 1n, type: 0 }, [3, 2, 9]), [0, Buffer.alloc(20)])
})

test('formatValue looks like dhtnode output', () => {
  assert.equal(formatValue({ id: 0x6f37n, type: 0, data: Buffer.from('hi'), userType: 'text/plain' }), 'Value[id:6f37 data(text/plain):"hi"]')
  assert.equal(formatValue({ id: 1n, type: 0, cypher: Buffer.alloc(3) }), 'Value[id:1 encrypted ]')
})

test('fuzz: mutated and truncated packed values decode or fail with BAD_VALUE, never anything else', () => {
  const seeds = [
    packValue({ id: 0x1234567890n, type: 0, data: Buffer.from('hello world'), userType: 'text/plain' }),
    packValue({
      id: 5n,
      type: 3,
      data: Buffer.alloc(300, 1),
      seq: 9,
      owner: Buffer.alloc(40, 2),
      recipient: Buffer.alloc(20, 3),
      signature: Buffer.alloc(64, 4),
      priority: 2,
      pushType: 'x',
    }),
    packValue({ id: 2n ** 64n - 1n, type: 0, cypher: Buffer.alloc(100, 5) }),
  ]
  let seed = 12345
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  let decoded = 0
  for (let i = 0; i < 20_000; i++) {
    const b = Buffer.from(seeds[i % seeds.length]!)
    const flips = 1 + rnd(4)
    for (let f = 0; f < flips; f++) b[rnd(b.length)] = rnd(256)
    const cut = rnd(4) === 0 ? b.subarray(0, rnd(b.length)) : b
    try {
      const v = unpackValue(cut)
      decoded++
      // whatever decodes can be encoded again
      packValue(v)
    } catch (e) {
      assert.ok(isDhtnetError(e, 'BAD_VALUE'), `unexpected error ${(e as Error | undefined)?.name}: ${(e as Error | undefined)?.message}`)
    }
  }
  assert.ok(decoded > 0)
})
