/**
 * SecureDht over real DhtNodes on loopback (6 nodes, one process): certificates found by both id forms, a
 * DHTNet-shaped encrypted request heard by a listen at SHA1("peer:" + long id), signed edits with seq bumps accepted
 * by the storage nodes, and values for someone else never surfacing.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { DhtNode } from '../src/dht/node.js'
import { SecureDht } from '../src/dht/secure-dht.js'
import { keyId } from '../src/dht/crypto.js'
import { msgpackEncode, type DhtValue } from '../src/dht/value.js'
import type { Identity } from '../src/identity/types.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

const nodes: DhtNode[] = []
const secures: SecureDht[] = []
const ca = makeTestIdentity('net-ca', 2048)
const ids: Identity[] = [makeTestIdentity('alice', 2048, ca), makeTestIdentity('bob', 2048, ca), makeTestIdentity('carol', 2048)]

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const r = await fn()
    if (r) return r
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`)
    await new Promise((res) => setTimeout(res, 50))
  }
}

before(async () => {
  for (let i = 0; i < 6; i++) {
    const n = new DhtNode({
      port: 0,
      bindIpv4: '127.0.0.1',
      bindIpv6: false,
      discovery: false,
      bootstrap: i === 0 ? [] : [`127.0.0.1:${nodes[0]!.port}`],
      ...(i < 3 ? { identityId: ids[i]!.id } : {}),
    })
    await n.start()
    nodes.push(n)
  }
  await until('every node knows 4+ others', () => nodes.every((n) => n.stats().nodes4 >= 4), 15_000)
  for (let i = 0; i < 3; i++) secures.push(new SecureDht(nodes[i]!, ids[i]!))
  await Promise.all(secures.map((s) => s.start()))
})

after(async () => {
  for (const s of secures) s.close()
  await Promise.all(nodes.map((n) => n.stop()))
})

test('node ids derive from the identity as OpenDHT does: SHA1("node:" + key id)', () => {
  assert.equal(nodes[0]!.nodeId, DhtNode.infoHash('node:' + ids[0]!.id).toString('hex'))
})

test('certificates are found across the network by key id and by long id, as chains', async () => {
  const [alice, bob] = secures
  const byLong = await bob!.findCertificate(ids[0]!.longId)
  assert.ok(byLong)
  assert.equal(byLong.length, 2)
  assert.equal(byLong[0]!.fingerprint256, ids[0]!.certificate.fingerprint256)
  assert.equal(byLong[1]!.fingerprint256, ca.certificate.fingerprint256)
  const byShort = await alice!.findCertificate(ids[2]!.id)
  assert.equal(byShort![0]!.fingerprint256, ids[2]!.certificate.fingerprint256)
  // a node without identity gets the values too, at both keys
  const raw = await nodes[5]!.get(DhtNode.infoHash(Buffer.from(ids[1]!.longId, 'hex')))
  assert.ok(raw.some((v) => v.type === 8 && v.id === 1n))
  assert.ok((await nodes[5]!.get(ids[1]!.id)).some((v) => v.type === 8))
  assert.equal(await alice!.findCertificate('00'.repeat(20)), null)
})

test('a DHTNet-shaped encrypted request reaches the peer listening at SHA1("peer:" + long id)', async () => {
  const [alice, bob, carol] = secures
  const heard: DhtValue[] = []
  const carolHeard: DhtValue[] = []
  const key = SecureDht.peerKey(ids[1]!.longId)
  const l = bob!.listen(key, (vals) => heard.push(...vals), { filter: (v) => v.type === 0 && v.recipient !== undefined })
  const lc = carol!.listen(key, (vals) => carolHeard.push(...vals))
  await new Promise((r) => setTimeout(r, 300))
  const request = msgpackEncode({ id: 12345n, ice_msg: 'ufrag\npwd\n', isAnswer: false, connType: '' })
  const r = await alice!.putEncrypted(key, ids[1]!.longId, { data: request, userType: 'peer_request' })
  assert.ok(r.ok)
  const got = await until('bob hears the request', () => heard[0])
  assert.equal(got.userType, 'peer_request')
  assert.equal(got.data!.toString('hex'), request.toString('hex'))
  assert.equal(keyId(got.owner!).toString('hex'), ids[0]!.id)
  assert.equal(got.recipient!.toString('hex'), ids[1]!.id)
  // carol listens at the same key but cannot decrypt: nothing surfaces, the drop is counted
  await until('carol dropped it', () => carol!.stats().droppedUndecryptable > 0)
  assert.equal(carolHeard.length, 0)
  l.cancel()
  lc.cancel()
})

test('signed edits: seq increases and every node sees the newest version', async () => {
  const [alice] = secures
  const first = await alice!.putSigned('profile', { id: 77n, data: Buffer.from('v1') })
  const second = await alice!.putSigned('profile', { id: 77n, data: Buffer.from('v2') })
  assert.ok(first.ok && second.ok)
  assert.equal(second.value.seq, first.value.seq! + 1)
  for (const s of secures.slice(1)) {
    const v = await until('sees v2', async () => (await s.get('profile')).find((x) => x.id === 77n && x.data?.toString() === 'v2'))
    assert.equal(v.seq, second.value.seq)
  }
  // a restarted SecureDht (same identity) continues the sequence from the network
  const again = new SecureDht(nodes[0]!, ids[0]!)
  const third = await again.putSigned('profile', { id: 77n, data: Buffer.from('v3') })
  assert.equal(third.value.seq, second.value.seq + 1)
  again.close()
})
