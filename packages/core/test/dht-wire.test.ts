import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Packr } from 'msgpackr'
import { WireEncoder, decodeMessage, packNodes, unpackNodes, isMartian, ipToBytes, bytesToIp, WANT4, WANT6, Field } from '../src/dht/wire.js'
import { MsgWriter } from '../src/dht/msgpack-writer.js'
import { packValue, type DhtValue } from '../src/dht/value.js'

const ID = Buffer.from('7a59afb4' + '11'.repeat(16), 'hex')
const enc = (o: Partial<ConstructorParameters<typeof WireEncoder>[0]> = {}) => new WireEncoder({ myId: ID, userAgent: 'RNG1', network: 0, isClient: false, ...o })
const str = (s: string) => Buffer.concat([Buffer.from([0xa0 | s.length]), Buffer.from(s)]).toString('hex')

test('ping reply is byte-identical to dhtnode 2.4.12 (reference §4.2)', () => {
  const got = enc()
    .pong(795732665, Buffer.from([127, 0, 0, 1]))
    .toString('hex')
  const expected =
    '84' + str('r') + '82' + str('id') + 'c414' + ID.toString('hex') + str('sa') + 'c4047f000001' + str('t') + 'ce2f6deab9' + str('y') + str('r') + str('v') + str('RNG1')
  assert.equal(got, expected)
  assert.ok(got.startsWith('84a17282a26964c414'))
  assert.ok(got.endsWith('a176a4524e4731'))
})

test('ping query layout: a{id}, q, t, y, v (+ n when the network is not 0)', () => {
  const got = enc().ping(7).toString('hex')
  assert.equal(got, '85' + str('a') + '81' + str('id') + 'c414' + ID.toString('hex') + str('q') + str('ping') + str('t') + '07' + str('y') + str('q') + str('v') + str('RNG1'))
  const withNet = decodeMessage(enc({ network: 42, isClient: true }).ping(7))
  assert.equal(withNet.network, 42)
  assert.equal(withNet.isClient, true)
  assert.equal(decodeMessage(enc().ping(7)).network, 0)
  assert.ok(
    !enc()
      .ping(7)
      .includes(Buffer.from(str('n'), 'hex')),
  )
})

test('every query and reply decodes back to what was encoded', () => {
  const e = enc()
  const key = Buffer.alloc(20, 0xab)
  const tok = Buffer.alloc(32, 5)
  let m = decodeMessage(e.find(1, key, WANT4 | WANT6))
  assert.equal(m.kind, 'find')
  assert.deepEqual(m.target, key)
  assert.equal(m.want, WANT4 | WANT6)
  assert.deepEqual(m.id, ID)
  m = decodeMessage(e.get(2, key, { select: [Field.Id, Field.SeqNum], where: [{ field: Field.Id, value: 0xdbd7000000000001n }] }, WANT4))
  assert.equal(m.kind, 'get')
  assert.deepEqual(m.infoHash, key)
  assert.deepEqual(m.query?.select, [1, 4])
  assert.equal(m.query.where[0]?.value, 0xdbd7000000000001n)
  m = decodeMessage(e.listen(3, key, tok, 99, undefined))
  assert.equal(m.kind, 'listen')
  assert.equal(m.version, 1)
  assert.equal(m.socketId, 99)
  assert.deepEqual(m.token, tok)
  m = decodeMessage(e.refresh(4, key, 0xffffffffffffffffn, tok))
  assert.equal(m.kind, 'refresh')
  assert.equal(m.valueId, 0xffffffffffffffffn)
  m = decodeMessage(e.valueAnnounced(5, 1234567890123n, Buffer.from([127, 0, 0, 1])))
  assert.equal(m.kind, 'reply')
  assert.equal(m.valueId, 1234567890123n)
  assert.deepEqual(m.sa, Buffer.from([127, 0, 0, 1]))
  m = decodeMessage(e.error(6, 401, 'Put with wrong token'))
  assert.equal(m.kind, 'error')
  assert.equal(m.errorCode, 401)
  assert.equal(m.errorMessage, 'Put with wrong token')
  assert.deepEqual(m.id, ID)
  m = decodeMessage(e.listenConfirm(7, Buffer.from(ipToBytes('::1')!), tok))
  assert.equal(m.kind, 'reply')
  assert.equal(m.sa?.length, 16)
  assert.deepEqual(m.token, tok)
  m = decodeMessage(e.updateIds('exp', 77, tok, [1n, 2n], 1, 8))
  assert.equal(m.kind, 'update')
  assert.equal(m.socketId, 77)
  assert.deepEqual(m.expired, [1n, 2n])
  m = decodeMessage(e.updateIds('re', 77, tok, [3n], 0, 0))
  assert.equal(m.kind, 'valueUpdate')
  assert.equal(m.tid, 77)
  assert.deepEqual(m.refreshed, [3n])
})

test('values: inline below 50 values / 600 bytes, otherwise sizes in the header + fragments of <= 1280 bytes', () => {
  const e = enc()
  const small: DhtValue = { id: 0x6f37fa803326af69n, type: 0, data: Buffer.from('hello-from-typescript'), userType: 'text/plain' }
  const p = packValue(small)
  const out = e.put(9, Buffer.alloc(20, 1), p, undefined, Buffer.alloc(32))
  assert.equal(out.parts.length, 0)
  assert.ok(out.msg.includes(p), 'packed value spliced as is')
  const m = decodeMessage(out.msg)
  assert.equal(m.values.length, 1)
  assert.equal(m.values[0]!.id, small.id)
  assert.equal(m.values[0]!.data!.toString(), 'hello-from-typescript')

  const big: DhtValue = { id: 5n, type: 0, data: Buffer.alloc(3000, 7) }
  const bp = packValue(big)
  const out2 = e.put(10, Buffer.alloc(20, 1), bp, 1700000000, Buffer.alloc(32))
  assert.equal(out2.parts.length, 3)
  const h = decodeMessage(out2.msg)
  assert.equal(h.created, 1700000000)
  assert.deepEqual([...h.valueSizes], [[0, bp.length]])
  let total = 0
  for (const part of out2.parts) {
    const f = decodeMessage(part)
    assert.equal(f.kind, 'fragment')
    assert.equal(f.tid, 10)
    const frag = f.fragments!.get(0)!
    assert.ok(frag.data.length <= 1280)
    assert.equal(frag.offset, total)
    total += frag.data.length
  }
  assert.equal(total, bp.length)
  // fragment datagram layout: {y:"p", t, p:{0:{o, d}}}
  assert.ok(out2.parts[0]!.toString('hex').startsWith('83' + str('y') + str('p') + str('t') + '0a' + str('p') + '81' + '00' + '82' + str('o') + '00' + str('d') + 'c505'))
})

test('get reply with fields (fileds) and node lists', () => {
  const e = enc()
  const nodes = [{ id: Buffer.from('b76091e9' + '00'.repeat(16), 'hex'), host: '127.0.0.1', port: 4223, family: 4 as const }]
  const n4 = packNodes(nodes, 4)
  assert.equal(n4.toString('hex'), 'b76091e9' + '00'.repeat(16) + '7f000001107f')
  const out = e.nodesValues(11, Buffer.from([127, 0, 0, 1]), n4, Buffer.alloc(0), Buffer.alloc(32, 1), undefined, {
    fields: [1, 4, 5],
    values: [
      (w: MsgWriter) => {
        w.uint(0xdbd7000000000000n).uint(0).str('text/plain')
      },
    ],
  })
  const m = decodeMessage(out.msg)
  assert.equal(m.fields?.length, 1)
  assert.equal(m.fields[0]!.get(1), 0xdbd7000000000000n)
  assert.equal(m.fields[0]!.get(5), 'text/plain')
  assert.deepEqual(unpackNodes(m.nodes4!, 4), nodes)
})

test('messages as a C++ node writes them (legacy bin tid, values from msgpack-c) are understood', () => {
  const packr = new Packr({ useRecords: false, variableMapSize: true })
  const tidBin = Buffer.from([0, 0, 1, 2])
  const m = decodeMessage(packr.pack({ r: { id: ID, sa: Buffer.from([127, 0, 0, 1]), token: Buffer.alloc(32) }, t: tidBin, y: 'r', v: 'o2' }))
  assert.equal(m.tid, 258)
  assert.equal(m.ua, 'o2')
  const unknownQ = packr.pack({ a: { id: ID }, q: 'bogus', t: 1, y: 'q' })
  assert.throws(() => decodeMessage(unknownQ))
})

test('malformed messages throw instead of being half-read', () => {
  const packr = new Packr({ useRecords: false })
  const bad = [
    packr.pack([1, 2, 3]),
    packr.pack({ a: { id: Buffer.alloc(19) }, q: 'ping', t: 1, y: 'q' }),
    packr.pack({ a: { id: 'x'.repeat(20) }, q: 'ping', t: 1, y: 'q' }),
    packr.pack({ a: { id: ID, h: Buffer.alloc(20), values: 'nope' }, q: 'put', t: 1, y: 'q' }),
    packr.pack({ r: { id: ID, n4: Buffer.alloc(27) }, t: 1, y: 'r' }),
    packr.pack({ a: 5, q: 'ping', t: 1, y: 'q' }),
    packr.pack({ q: 'ping', t: -1, y: 'q', a: { id: ID } }),
    packr.pack({ e: 'oops', t: 1, y: 'e' }),
    Buffer.from([0x85]),
  ]
  for (const b of bad) assert.throws(() => decodeMessage(b))
})

test('martian filter and address helpers', () => {
  assert.ok(isMartian('0.1.2.3', 5))
  assert.ok(isMartian('224.0.0.1', 5))
  assert.ok(isMartian('127.0.0.1', 0))
  assert.ok(isMartian('::', 5))
  assert.ok(isMartian('ff02::1', 5))
  assert.ok(isMartian('::ffff:1.2.3.4', 5))
  assert.ok(!isMartian('127.0.0.1', 4222))
  assert.ok(!isMartian('::1', 4222))
  for (const ip of ['::1', '2001:db8::1', 'fe80::1:2', '1:2:3:4:5:6:7:8', '10.0.0.1']) assert.equal(bytesToIp(ipToBytes(ip)!), ip)
})
