/**
 * Interop with Debian's real OpenDHT node (`dhtnode` 2.4.12), all on loopback:
 *
 *   A (dhtnode -i)  ←bootstrap─  X (ours)  ←bootstrap─  B (dhtnode -i)  ←bootstrap─  Y (ours)
 *
 * ping both ways, find both ways (each side learns a third node only from the other's find reply), plain, signed,
 * encrypted, listened and fragmented (> 600 bytes) values in both directions. dhtnode's prompt is driven through a
 * pipe; every process is stopped by pid.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { DhtNode } from '../src/dht/node.js'
import { SecureDht } from '../src/dht/secure-dht.js'
import { keyId } from '../src/dht/crypto.js'
import type { DhtValue } from '../src/dht/value.js'
import { DhtnodeProcess, dhtnodePath, parseDhtnodeValues } from './dht-interop-harness.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

const skip = dhtnodePath() ? false : 'dhtnode is not installed (apt-get install dhtnode; scripts/setup does it as root)'

let A: DhtnodeProcess | undefined
let B: DhtnodeProcess | undefined
let X: DhtNode | undefined
let Y: DhtNode | undefined
let Z: DhtNode | undefined
let sx: SecureDht | undefined
const xId = makeTestIdentity('interop-x', 2048)

const ourNode = (bootstrap: string[] = []) => new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap, discovery: false, requestFirstWaitMs: 300 })

async function until<T>(what: string | (() => string), fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const r = await fn()
    if (r) return r
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${typeof what === 'string' ? what : what()}`)
    await new Promise((res) => setTimeout(res, 100))
  }
}

function knows(node: DhtNode, id: string): boolean {
  return node.routingTable().some((t) => t.buckets.some((b) => b.nodes.some((n) => n.id === id)))
}

/** dhtnode's `g`, retried until the predicate holds on the printed values (bounded). */
async function dhtnodeGet(p: DhtnodeProcess, key: string, pred: (vals: ReturnType<typeof parseDhtnodeValues>) => boolean, timeoutMs = 15_000) {
  let last: ReturnType<typeof parseDhtnodeValues> = []
  let lastOut = ''
  return until(
    () => `dhtnode g ${key}: ${JSON.stringify(last)}\n${lastOut}`,
    async () => {
      const out = await p.command(`g ${key}`, /Get: (completed|failure)/)
      lastOut = out
      last = parseDhtnodeValues(out)
      return pred(last) ? last : undefined
    },
    timeoutMs,
  )
}

async function ourGet(get: () => Promise<DhtValue[]>, pred: (v: DhtValue) => boolean, what: string): Promise<DhtValue> {
  return until(what, async () => (await get()).find(pred))
}

before(async () => {
  if (skip) return
  A = await DhtnodeProcess.start({ identity: true })
  // dhtnode's `b` pings only while it has no good node (otherwise it just records a bootstrap): do it first
  Z = ourNode()
  await Z.start()
  A.send(`b 127.0.0.1:${Z.port}`)
  await until('Z learns A from its ping', () => knows(Z!, A!.nodeId))
  X = ourNode([`127.0.0.1:${A.port}`])
  await X.start()
  sx = new SecureDht(X, xId)
  B = await DhtnodeProcess.start({ identity: true, bootstrap: `127.0.0.1:${X.port}` })
  Y = ourNode([`127.0.0.1:${B.port}`])
  await Y.start()
})

after(async () => {
  sx?.close()
  await Promise.all([X?.stop(), Y?.stop(), Z?.stop(), A?.stop(), B?.stop()])
})

test('ping both ways', { skip }, async () => {
  const r = await X!.ping(`127.0.0.1:${A!.port}`)
  assert.equal(r.id, A!.nodeId)
  // Z has no bootstrap: it learnt A only from the ping A sent it (before())
  assert.ok(knows(Z!, A!.nodeId))
  assert.ok(Z!.stats().requestsIn >= 1)
})

test('our node bootstraps from a dhtnode, a dhtnode bootstraps from ours; find works both ways', { skip }, async () => {
  // X bootstrapped from A: A is in X's table
  await until('X knows A', () => knows(X!, A!.nodeId))
  // B bootstrapped from X only: it learns A from X's find reply
  await until('B learns A through X', async () => (await B!.command('lr', /IPv6 routing table:/)).includes(A!.nodeId))
  // Y bootstrapped from B only: it learns A and X from B's find reply
  await until('Y learns A and X through B', () => knows(Y!, A!.nodeId) && knows(Y!, X!.nodeId))
  await until('X is connected', () => X!.stats().good4 >= 2)
})

test('our put is read back by dhtnode; its put is read back by us', { skip }, async () => {
  assert.ok(await X!.put('interop-plain', { type: 0, data: Buffer.from('hello-from-typescript'), userType: 'text/plain' }))
  const seen = await dhtnodeGet(B!, 'interop-plain', (vals) => vals.some((v) => v.text === 'hello-from-typescript'))
  assert.equal(seen.find((v) => v.text === 'hello-from-typescript')!.userType, 'text/plain')
  await dhtnodeGet(A!, 'interop-plain', (vals) => vals.some((v) => v.text === 'hello-from-typescript'))
  const out = await B!.command('p interop-from-b hello-from-dhtnode', /Put: (success|failure)/)
  assert.match(out, /Put: success/)
  const v = await ourGet(
    () => Y!.get('interop-from-b'),
    (x) => x.data?.toString() === 'hello-from-dhtnode',
    'Y gets the dhtnode value',
  )
  assert.equal(v.userType, 'text/plain')
  await ourGet(
    () => X!.get('interop-from-b'),
    (x) => x.data?.toString() === 'hello-from-dhtnode',
    'X gets the dhtnode value',
  )
})

test('signed values both ways', { skip }, async () => {
  const r = await sx!.putSigned('interop-signed', { data: Buffer.from('signed-by-typescript'), userType: 'text/plain' })
  assert.ok(r.ok)
  const seen = await dhtnodeGet(B!, 'interop-signed', (vals) => vals.some((v) => v.text === 'signed-by-typescript'))
  assert.ok(seen.find((v) => v.text === 'signed-by-typescript')!.signed, 'dhtnode shows it as signed (it verified our signature)')
  const out = await B!.command('s interop-signed-b signed-by-dhtnode', /Put signed: (success|failure)/, 30_000)
  assert.match(out, /Put signed: success/)
  const before = sx!.stats().verified
  const v = await ourGet(
    () => sx!.get('interop-signed-b'),
    (x) => x.data?.toString() === 'signed-by-dhtnode',
    'SecureDht gets the signed value',
  )
  assert.equal(keyId(v.owner!).toString('hex'), B!.keyId, 'owner is B’s key')
  assert.ok(sx!.stats().verified > before)
  assert.equal(sx!.stats().droppedForged, 0)
})

test('certificates: dhtnode finds ours, we find the dhtnode’s', { skip }, async () => {
  await sx!.start()
  const chain = (await until('find A’s certificate', () => sx!.findCertificate(A!.keyId)))!
  assert.equal(keyId(chain[0]!.publicKey.export({ type: 'spki', format: 'der' })).toString('hex'), A!.keyId)
  assert.match(chain[0]!.subject, /DHT Node/)
  // dhtnode looks our certificate up at our key id (where 2.4.12 looks)
  const seen = await dhtnodeGet(B!, xId.id, (vals) => vals.some((v) => v.raw.includes('Certificate')))
  assert.ok(seen.length >= 1)
})

test('encrypted values both ways', { skip }, async () => {
  // dhtnode 2.4.12 shows a decrypted value only on the first `g` of its search (later gets print nothing), so each
  // attempt uses a fresh key and a single `g`
  let seen: ReturnType<typeof parseDhtnodeValues> = []
  let key = ''
  for (let attempt = 1; attempt <= 3 && !seen.some((v) => v.text === 'secret-from-typescript'); attempt++) {
    key = `interop-enc-${attempt}`
    const r = await sx!.putEncrypted(key, B!.keyId, { data: Buffer.from('secret-from-typescript'), userType: 'text/plain' })
    assert.ok(r.ok)
    assert.equal(r.value.data, undefined)
    await new Promise((res) => setTimeout(res, 300 * attempt))
    seen = parseDhtnodeValues(await B!.command(`g ${key}`, /Get: (completed|failure)/))
  }
  const mine = seen.find((v) => v.text === 'secret-from-typescript')
  assert.ok(mine, 'dhtnode B read our encrypted value')
  assert.ok(mine.signed && mine.decrypted, `dhtnode decrypted and verified it: ${mine.raw}`)
  // A cannot read it
  const onA = parseDhtnodeValues(await A!.command(`g ${key}`, /Get: (completed|failure)/))
  assert.ok(onA.every((v) => v.text !== 'secret-from-typescript'))
  const out = await B!.command(`e interop-enc-b ${xId.id} secret-from-dhtnode`, /Put encrypted: (success|failure)/, 30_000)
  assert.match(out, /Put encrypted: success/)
  const v = await ourGet(
    () => sx!.get('interop-enc-b'),
    (x) => x.data?.toString() === 'secret-from-dhtnode',
    'SecureDht decrypts the dhtnode value',
  )
  assert.equal(v.recipient!.toString('hex'), xId.id)
  assert.equal(keyId(v.owner!).toString('hex'), B!.keyId)
  // a node of ours without the key sees only the cypher
  const raw = await Y!.get('interop-enc-b')
  assert.ok(raw.some((x) => x.cypher && x.cypher.length > 0) && raw.every((x) => x.data === undefined))
})

test('listen updates both ways', { skip }, async () => {
  const heard: string[] = []
  const l = X!.listen('interop-listen', (vals, expired) => {
    if (!expired) for (const v of vals) heard.push(v.data?.toString() ?? '')
  })
  await new Promise((r) => setTimeout(r, 500)) // let the listen reach the storage nodes
  await B!.command('p interop-listen pushed-by-dhtnode', /Put: (success|failure)/)
  await until('X hears the dhtnode put', () => heard.includes('pushed-by-dhtnode'))
  l.cancel()

  const from = B!.send('l interop-listen-b')
  await B!.waitFor(/Listening, token: \d+/, from, 10_000)
  await new Promise((r) => setTimeout(r, 500))
  await X!.put('interop-listen-b', { type: 0, data: Buffer.from('pushed-by-typescript'), userType: 'text/plain' })
  await B!.waitFor(/Listen: found 1 values[\s\S]*"pushed-by-typescript"/, from, 15_000)
})

test('fragmented values (> 600 bytes) both ways, plain and signed', { skip }, async () => {
  const big = 'T'.repeat(1500)
  assert.ok(await X!.put('interop-big', { type: 0, data: Buffer.from(big), userType: 'text/plain' }))
  await dhtnodeGet(B!, 'interop-big', (vals) => vals.some((v) => v.text === big))
  const bigSigned = 'S'.repeat(2000)
  assert.ok((await sx!.putSigned('interop-big-signed', { data: Buffer.from(bigSigned), userType: 'text/plain' })).ok)
  const seen = await dhtnodeGet(B!, 'interop-big-signed', (vals) => vals.some((v) => v.text === bigSigned))
  assert.ok(seen.find((v) => v.text === bigSigned)!.signed)
  const bigB = 'D'.repeat(1800)
  await B!.command(`p interop-big-b ${bigB}`, /Put: (success|failure)/)
  await ourGet(
    () => X!.get('interop-big-b'),
    (v) => v.data?.toString() === bigB,
    'X gets the big dhtnode value',
  )
  await ourGet(
    () => Y!.get('interop-big-b'),
    (v) => v.data?.toString() === bigB,
    'Y gets the big dhtnode value',
  )
})

test('dhtnode processes stayed up and our nodes saw no malformed traffic', { skip }, () => {
  assert.equal(A!.child.exitCode, null)
  assert.equal(B!.child.exitCode, null)
  assert.equal(X!.stats().malformedDrops, 0)
  assert.equal(Y!.stats().malformedDrops, 0)
})

test('IPv6 (::1): ping, put and get both ways', { skip }, async (t) => {
  const dgram = await import('node:dgram')
  const v6ok = await new Promise<boolean>((res) => {
    const s = dgram.createSocket({ type: 'udp6', ipv6Only: true })
    s.once('error', () => res(false))
    s.bind(0, '::1', () => s.close(() => res(true)))
  })
  if (!v6ok) return t.skip('no IPv6 loopback on this machine')
  const C = await DhtnodeProcess.start({})
  const W = new DhtNode({ port: 0, bindIpv4: false, bindIpv6: '::1', discovery: false, bootstrap: [`[::1]:${C.port}`], requestFirstWaitMs: 300 })
  try {
    await W.start()
    assert.equal((await W.ping(`[::1]:${C.port}`)).id, C.nodeId)
    await until('W knows C', () => knows(W, C.nodeId))
    assert.ok(await W.put('interop-v6', { type: 0, data: Buffer.from('over-ipv6'), userType: 'text/plain' }))
    await dhtnodeGet(C, 'interop-v6', (vals) => vals.some((v) => v.text === 'over-ipv6'))
    await C.command('p interop-v6-b from-dhtnode-over-ipv6', /Put: success/)
    await ourGet(
      () => W.get('interop-v6-b'),
      (v) => v.data?.toString() === 'from-dhtnode-over-ipv6',
      'W gets the IPv6 value',
    )
    assert.equal(W.stats().nodes4, 0)
    assert.ok(W.stats().nodes6 >= 1)
  } finally {
    await W.stop()
    await C.stop()
  }
})

/**
 * A UDP relay between one dhtnode and one of our nodes that decodes every datagram, so the test sees the listen
 * `update` messages themselves (not only values, which also arrive by put). One socket: our node talks to it as if
 * it were the dhtnode; the dhtnode sees our node at its address.
 */
async function relay(dhtnodePort: number) {
  const dgram = await import('node:dgram')
  const { msgpackDecode } = await import('../src/dht/value.js')
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
  let oursPort = 0
  const seen: Array<{ from: 'dhtnode' | 'ours'; msg: Record<string, unknown> }> = []
  sock.on('message', (buf, rinfo) => {
    const from = rinfo.port === dhtnodePort ? 'dhtnode' : 'ours'
    try {
      seen.push({ from, msg: msgpackDecode(buf) as Record<string, unknown> })
    } catch {
      // not a msgpack map: relayed all the same
    }
    if (from === 'ours') {
      oursPort = rinfo.port
      sock.send(buf, dhtnodePort, '127.0.0.1')
    } else if (oursPort) sock.send(buf, oursPort, '127.0.0.1')
  })
  return { port: sock.address().port, seen, close: () => new Promise<void>((r) => sock.close(() => r())) }
}

test('on the wire through a relay: listen `update`s (and replies) both ways, value fragments both ways', { skip }, async () => {
  const { decodeValue } = await import('../src/dht/value.js')
  const D = await DhtnodeProcess.start({})
  const R = await relay(D.port)
  const U = ourNode([`127.0.0.1:${R.port}`])
  try {
    await U.start()
    await until('U knows D', () => U.stats().good4 >= 1)
    const updates = (from: 'dhtnode' | 'ours', text: string) =>
      R.seen.filter(({ from: f, msg }) => {
        const a = msg.a as Record<string, unknown> | undefined
        return (
          f === from &&
          msg.q === 'update' &&
          Array.isArray(a?.values) &&
          (a.values as unknown[]).some((v) => {
            try {
              return decodeValue(v).data?.toString() === text
            } catch {
              return false
            }
          })
        )
      })
    const replied = (to: 'dhtnode' | 'ours', t: unknown) => R.seen.some(({ from, msg }) => from !== to && msg.y === 'r' && msg.t === t)

    // dhtnode → ours
    const heard: string[] = []
    const l = U.listen('wire-listen-1', (vals, expired) => {
      if (!expired) heard.push(...vals.map((v) => v.data?.toString() ?? ''))
    })
    await until('U’s listen reached D', () => R.seen.some(({ from, msg }) => from === 'ours' && msg.q === 'listen'))
    await new Promise((r) => setTimeout(r, 200))
    await D.command('p wire-listen-1 update-from-dhtnode', /Put: success/)
    await until('U hears it', () => heard.includes('update-from-dhtnode'))
    const fromD = await until('an update from D', () => updates('dhtnode', 'update-from-dhtnode')[0])
    await until('U replied to the update', () => replied('dhtnode', fromD.msg.t))
    l.cancel()

    // ours → dhtnode
    const from = D.send('l wire-listen-2')
    await D.waitFor(/Listening, token: \d+/, from, 10_000)
    await until('D’s listen reached U', () => R.seen.some(({ from: f, msg }) => f === 'dhtnode' && msg.q === 'listen'))
    await new Promise((r) => setTimeout(r, 200))
    await U.put('wire-listen-2', { type: 0, data: Buffer.from('update-from-typescript'), userType: 'text/plain' })
    await D.waitFor(/Listen: found 1 values[\s\S]*"update-from-typescript"/, from, 10_000)
    const fromU = await until('an update from U', () => updates('ours', 'update-from-typescript')[0])
    await until('D replied to our update', () => replied('ours', fromU.msg.t))

    // fragmented values on the wire, both ways: `y:"p"` parts from each side, reassembled by the other
    const fragments = (f: 'dhtnode' | 'ours') => R.seen.filter(({ from: x, msg }) => x === f && msg.y === 'p').length
    const bigOurs = 'O'.repeat(2500)
    await U.put('wire-big-1', { type: 0, data: Buffer.from(bigOurs), userType: 'text/plain' })
    await dhtnodeGet(D, 'wire-big-1', (vals) => vals.some((v) => v.text === bigOurs))
    assert.ok(fragments('ours') >= 2, `our fragments seen: ${fragments('ours')}`)
    const bigTheirs = 'H'.repeat(2500)
    await D.command(`p wire-big-2 ${bigTheirs}`, /Put: success/)
    await ourGet(
      () => U.get('wire-big-2'),
      (v) => v.data?.toString() === bigTheirs,
      'U gets the fragmented dhtnode value',
    )
    assert.ok(fragments('dhtnode') >= 2, `dhtnode fragments seen: ${fragments('dhtnode')}`)
  } finally {
    await U.stop()
    await R.close()
    await D.stop()
  }
})
