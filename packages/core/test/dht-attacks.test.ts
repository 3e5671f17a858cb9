/**
 * Issue 12's DHT attacks, each bounded, against a real victim process on loopback (helpers/dht-victim.ts: a
 * DhtNode + SecureDht with an RSA-4096 identity listening at its connection-request keys, as a ConnectionManager
 * does), from an attacker socket on 127.0.0.2. A legitimate node on 127.0.0.1 (in this process, with its own
 * identity) works with the victim during each attack: ping, put, get, and a legitimately encrypted connection
 * request that the victim's listen must hear. Asserted: the victim's counters (rejected keys, dropped
 * verifications, dropped decryptions, ignored pushes), the work it did not do, and its memory after the attacks.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { DhtNode } from '../src/dht/node.js'
import { SecureDht } from '../src/dht/secure-dht.js'
import { randomHash } from '../src/dht/infohash.js'
import { Attacker, hugeExponentKey, junkEncryptedValue, junkSignedValue, ordinaryKey } from './helpers/dht-attack.js'
import { Victim, type VictimStats } from './helpers/dht-victim-process.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

let victim: Victim
let legit: DhtNode
let alice: SecureDht
let attacker: Attacker
let baseline: VictimStats
let nextId = 1n

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const r = await fn()
    if (r) return r
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`)
    await new Promise((res) => setTimeout(res, 100))
  }
}

/** What a legitimate peer does with the victim while it is attacked; each must succeed. */
async function legitimateWork(tag: string): Promise<void> {
  const pong = await legit.ping(`127.0.0.1:${victim.port}`)
  assert.equal(pong.id, victim.nodeId)
  // a put the victim must acknowledge (it is the only other node), and a get it must answer from its storage
  assert.equal(await legit.put(`legit-put-${tag}`, { type: 0, data: Buffer.from(tag) }), true, 'the victim acknowledged a legitimate put')
  await victim.request({ op: 'put', key: `victim-value-${tag}`, text: `v-${tag}` })
  const got = await legit.get(`victim-value-${tag}`, { signal: AbortSignal.timeout(20_000) })
  assert.ok(
    got.some((v) => v.data?.toString() === `v-${tag}`),
    'the victim served a legitimate get',
  )
}

before(async () => {
  victim = await Victim.start()
  legit = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, bootstrap: [`127.0.0.1:${victim.port}`] })
  await legit.start()
  alice = new SecureDht(legit, makeTestIdentity('alice', 2048))
  await until('the two nodes know each other', async () => legit.stats().good4 >= 1 && (await victim.stats()).node.good4! >= 1)
  attacker = await Attacker.open({ targetPort: victim.port, readCount: async () => (await victim.stats()).node.datagramsIn! })
  await attacker.getToken()
  baseline = await victim.stats(true)
})

after(async () => {
  // each is undefined when before() failed before making it
  ;(alice as SecureDht | undefined)?.close()
  await (attacker as Attacker | undefined)?.close()
  await (legit as DhtNode | undefined)?.stop()
  await (victim as Victim | undefined)?.stop()
})

test('costly signatures: keys outside the policy are refused unverified, junk signatures are verified within the per-IP budget', async () => {
  const s0 = await victim.stats()
  const t0 = performance.now()
  // 6 put datagrams of 50 values each whose owner key has a 3071-bit public exponent (~10 ms per verification)
  const huge = Array.from({ length: 6 }, () =>
    attacker.putMessage(
      randomHash(),
      Array.from({ length: 50 }, () => junkSignedValue(nextId++, hugeExponentKey())),
    ),
  )
  // and 6 of 50 values with an acceptable RSA-4096 key and random signatures
  const owner = ordinaryKey(4096)
  const plausible = Array.from({ length: 6 }, () =>
    attacker.putMessage(
      randomHash(),
      Array.from({ length: 50 }, () => junkSignedValue(nextId++, owner, 512)),
    ),
  )
  const work = legitimateWork('sig')
  await attacker.send([...huge, ...plausible], { batch: 1, slack: 0 })
  await work
  const elapsedS = (performance.now() - t0) / 1000
  const s1 = await until('the victim has counted the 600 values', async () => {
    const s = await victim.stats()
    const n = s.node
    return n.rejectedKeys! - s0.node.rejectedKeys! + n.verifyDrops! - s0.node.verifyDrops! + n.badSignatures! - s0.node.badSignatures! >= 600 ? s : undefined
  })
  const d = (k: string) => s1.node[k]! - s0.node[k]!
  console.log(`costly signatures: rejected keys ${d('rejectedKeys')}, verify drops ${d('verifyDrops')}, bad signatures ${d('badSignatures')} in ${elapsedS.toFixed(1)} s`)
  assert.equal(d('rejectedKeys'), 300)
  assert.equal(d('rejectedKeys') + d('verifyDrops') + d('badSignatures'), 600)
  // 128 verifications a second from one IP (a burst of 128, then the rate)
  assert.ok(d('badSignatures') <= 128 * (Math.ceil(elapsedS) + 1), `${d('badSignatures')} verifications in ${elapsedS.toFixed(1)} s`)
  assert.ok(d('verifyDrops') > 0, 'the budget was reached')
  assert.equal(d('values'), 2, 'no junk value was stored (the 2 new values are the legitimate put and the victim’s own)')
})

test('decryption flood: junk cyphers at the connection-request key cost a bounded number of RSA operations; a legitimate request is heard', async () => {
  const s0 = await victim.stats()
  // 4 put datagrams of 100 junk 512-byte cyphers (an RSA-4096 private operation each, if we let them)
  const msgs = Array.from({ length: 4 }, () =>
    attacker.putMessage(
      victim.peerKeys[0]!,
      Array.from({ length: 100 }, () => junkEncryptedValue(nextId++, 512)),
    ),
  )
  const sent = attacker.send(msgs, { batch: 1, slack: 0 })
  // a legitimate peer encrypts a connection request to the victim during the flood
  await alice.putEncrypted(victim.peerKeys[0]!, victim.longId, { type: 0, data: Buffer.from('{"id":1}'), userType: 'peer_request' })
  await sent
  await legitimateWork('dec')
  const s1 = await until('the victim heard the legitimate request', async () => {
    const s = await victim.stats()
    return s.heard > s0.heard ? s : undefined
  })
  const settled = await until(
    'the decryption queue drained',
    async () => {
      const s = await victim.stats()
      return s.secure.decryptQueue === 0 ? s : undefined
    },
    60_000,
  )
  const d = (k: string) => settled.secure[k]! - s0.secure[k]!
  console.log(`decryption flood: heard ${s1.heard - s0.heard}, decryptions ${d('decryptions')}, dropped ${d('droppedDecryptions')}, undecryptable ${d('droppedUndecryptable')}`)
  assert.equal(s1.heard - s0.heard, 1)
  // one source: 1 running + 64 queued at most at any time, the rest dropped at once
  assert.ok(d('droppedDecryptions') >= 400 - 65 - 16, `dropped ${d('droppedDecryptions')}`)
  assert.ok(d('decryptions') <= 400 - d('droppedDecryptions') + 1, `decryptions ${d('decryptions')}`)
  assert.equal(d('droppedUndecryptable') + d('droppedDecryptions'), 400)
})

test("spoofed listen pushes: pushes to the victim's listen socket ids from a node the listen did not go to are ignored before reassembly", async () => {
  const s0 = await victim.stats()
  // the worst case: the attacker knows the socket ids, and claims the id of the node the listens went to
  const sids = s0.sids
  assert.ok(sids.length >= 2)
  const spoofer = await Attacker.open({ targetPort: victim.port, id: legit.nodeIdBytes, readCount: async () => (await victim.stats()).node.datagramsIn! })
  try {
    // 8 KB values (7 datagrams each), sent below the per-IP rate limit so that every push is judged on what it is
    // (scripts/bench/dht-attack.ts sends 1,400 pushes of 60 KB as fast as the victim reads)
    function* pushes() {
      for (let i = 0; i < 300; i++) yield* spoofer.pushMessages(sids[i % sids.length]!, [junkEncryptedValue(nextId++, 8000)])
      for (let i = 0; i < 100; i++) yield* spoofer.updateMessages(victim.peerKeys[i % 2]!, sids[i % sids.length]!, [junkEncryptedValue(nextId++, 8000)])
    }
    const work = legitimateWork('push')
    await new Promise((r) => setTimeout(r, 1000)) // the previous attack's second is over for the rate limiter
    await spoofer.send(pushes(), { batch: 35, slack: 96, maxPerSecond: 700 })
    await work
  } finally {
    await spoofer.close()
  }
  const s1 = await until('the victim counted the pushes', async () => {
    const s = await victim.stats()
    return s.node.ignoredPushes! - s0.node.ignoredPushes! >= 400 ? s : undefined
  })
  const ignored = s1.node.ignoredPushes! - s0.node.ignoredPushes!
  console.log(
    `spoofed pushes: ignored ${ignored}, rate-limited ${s1.node.rateLimitedDrops! - s0.node.rateLimitedDrops!}, decryptions ${s1.secure.decryptions! - s0.secure.decryptions!}`,
  )
  assert.equal(ignored, 400)
  assert.equal(s1.secure.decryptions, s0.secure.decryptions, 'no decryption for a spoofed push')
  assert.equal(s1.heard, s0.heard)
  // the legitimate listen path still works: a new request from alice is heard
  await alice.putEncrypted(victim.peerKeys[0]!, victim.longId, { type: 0, data: Buffer.from('{"id":2}'), userType: 'peer_request' })
  await until('the victim heard the second legitimate request', async () => (await victim.stats()).heard > s1.heard)
})

test('after the attacks the victim holds little: heap + buffers after gc within 32 MB of before, RSS within 128 MB', async () => {
  // partial messages expire after 10 s at most
  await new Promise((r) => setTimeout(r, 11_000))
  const s = await victim.stats(true)
  const grew = s.heapMb + s.externalMb - (baseline.heapMb + baseline.externalMb)
  console.log(
    `victim memory: heap ${baseline.heapMb.toFixed(1)} → ${s.heapMb.toFixed(1)} MB, buffers ${baseline.externalMb.toFixed(1)} → ${s.externalMb.toFixed(1)} MB, RSS ${baseline.rssMb.toFixed(0)} → ${s.rssMb.toFixed(0)} MB, partials ${s.node.partialMessages}`,
  )
  assert.ok(grew < 32, `heap + buffers grew by ${grew.toFixed(1)} MB`)
  assert.ok(s.rssMb - baseline.rssMb < 128, `RSS grew by ${(s.rssMb - baseline.rssMb).toFixed(0)} MB`)
  assert.equal(s.node.partialMessages, 0)
  const pong = await legit.ping(`127.0.0.1:${victim.port}`)
  assert.equal(pong.id, victim.nodeId)
})
