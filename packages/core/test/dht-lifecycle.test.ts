import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { DhtNode, isDhtnetError } from '../src/index.js'
import { WireEncoder, decodeMessage } from '../src/dht/wire.js'
import { MsgWriter } from '../src/dht/msgpack-writer.js'
import { packValue } from '../src/dht/value.js'
import { randomHash } from '../src/dht/infohash.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const started: DhtNode[] = []
const dir = mkdtempSync(join(tmpdir(), 'dht-lifecycle-'))
after(async () => {
  await Promise.all(started.map((n) => n.stop()))
  rmSync(dir, { recursive: true, force: true })
})
async function node(opts: ConstructorParameters<typeof DhtNode>[0] = {}): Promise<DhtNode> {
  const n = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, ...opts })
  await n.start()
  started.push(n)
  return n
}
async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end && !cond()) await sleep(25)
  return cond()
}

test('a node alone stores locally: put, get and listen work without peers', async () => {
  const n = await node()
  const heard: string[] = []
  const h = n.listen('solo', (vals, expired) => heard.push(...vals.map((v) => `${expired}:${String(v.data)}`)))
  assert.equal(await n.put('solo', { type: 0, data: Buffer.from('alone') }), true)
  const vals = await n.get('solo')
  assert.deepEqual(
    vals.map((v) => v.data?.toString()),
    ['alone'],
  )
  assert.deepEqual(heard, ['false:alone'])
  h.cancel()
  assert.equal(n.stats().values, 1)
  assert.equal(DhtNode.infoHash('solo').toString('hex'), createHash('sha1').update('solo').digest('hex'))
})

test('stop() clears timers and closes sockets: no handle is left behind', async () => {
  const before = process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout').length
  const a = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: '::1' })
  const b = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: '::1', bootstrap: [] })
  await a.start()
  await b.start()
  await b.bootstrap(`127.0.0.1:${a.port}`)
  await waitFor(() => b.stats().good4 > 0, 3000)
  const h = b.listen('k', () => {})
  await b.put('k', { type: 0, data: Buffer.from('x') })
  h.cancel()
  await a.stop()
  await b.stop()
  await sleep(50)
  const left = process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout').length
  assert.ok(left <= before, `handles before ${before}, after ${left}: ${process.getActiveResourcesInfo().join(',')}`)
  await assert.rejects(b.get('k'), (e: unknown) => isDhtnetError(e, 'DHT_STOPPED'))
  await b.stop() // idempotent
})

test("'connected' is emitted when the first good node answers", async () => {
  const a = await node()
  const b = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, bootstrap: [`127.0.0.1:${a.port}`] })
  const connected = new Promise<void>((r) => b.once('connected', () => r()))
  await b.start()
  started.push(b)
  await Promise.race([
    connected,
    sleep(5000).then(() => {
      throw new Error('no connected event')
    }),
  ])
  assert.equal(b.stats().good4, 1)
  const rt = b.routingTable()
  assert.equal(rt[0]!.family, 4)
  assert.equal(rt[0]!.buckets.flatMap((x) => x.nodes)[0]!.id, a.nodeId)
})

test('node id from an identity is SHA-1("node:" + key id), as OpenDHT', () => {
  const kid = '256c44' + '0'.repeat(34)
  const n = new DhtNode({ identityId: kid, bindIpv4: '127.0.0.1', bindIpv6: false })
  assert.equal(n.nodeId, createHash('sha1').update(`node:${kid}`).digest('hex'))
  assert.throws(
    () => new DhtNode({ identityId: 'nope' }),
    (e: unknown) => isDhtnetError(e, 'BAD_OPTION'),
  )
})

test('persistence: the id and known nodes survive a restart, which rejoins in one round trip', async () => {
  const seeds = [await node(), await node(), await node()]
  const path = join(dir, 'state.json')
  const a = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, persistPath: path })
  await a.start()
  for (const s of seeds) await a.bootstrap(`127.0.0.1:${s.port}`)
  assert.ok(await waitFor(() => a.stats().good4 >= 3, 5000))
  const id = a.nodeId
  await a.stop()
  assert.ok(existsSync(path))
  assert.equal(statSync(path).mode & 0o777, 0o600)
  const saved = JSON.parse(readFileSync(path, 'utf8')) as { nodeId: string; nodes: unknown[] }
  assert.equal(saved.nodeId, id)
  assert.equal(saved.nodes.length, 3)
  const again = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, persistPath: path })
  const connected = new Promise<number>((r) => again.once('connected', () => r(performance.now())))
  const t0 = performance.now()
  await again.start()
  started.push(again)
  const t1 = await connected
  assert.equal(again.nodeId, id)
  assert.ok(await waitFor(() => again.stats().good4 >= 3, 5000))
  console.log(`restart: connected ${(t1 - t0).toFixed(1)} ms after start()`)
  // a corrupt state file is not fatal
  const bad = join(dir, 'bad.json')
  await import('node:fs/promises').then((fs) => fs.writeFile(bad, '{not json'))
  const c = await node({ persistPath: bad })
  assert.equal(c.nodeId.length, 40)
})

test('LAN discovery: two nodes on one machine find each other with no bootstrap', async () => {
  const port = 20000 + Math.floor(Math.random() * 20000)
  const opts = { discovery: true, discoveryInterface4: '127.0.0.1', discoveryPort: port, bindIpv6: false as const }
  const a = await node(opts)
  const b = await node(opts)
  const found = await waitFor(() => a.stats().good4 > 0 && b.stats().good4 > 0, 8000)
  assert.ok(found, `a: ${JSON.stringify(a.stats())}`)
  assert.equal(a.routingTable()[0]!.buckets.flatMap((x) => x.nodes)[0]!.id, b.nodeId)
  // another network id is ignored
  const other = await node({ ...opts, network: 7 })
  await sleep(500)
  assert.equal(other.stats().nodes4, 0)
})

test('discovery never crashes the node when multicast is unavailable', async () => {
  const n = await node({ discovery: true, discoveryInterface4: '203.0.113.1', discoveryPort: 1 })
  assert.ok(n.isRunning)
  assert.equal(await n.put('still-works', { type: 0, data: Buffer.from('y') }), true)
})

test('nodes of different network ids ignore each other', async () => {
  const a = await node({ network: 5 })
  const b = await node({ network: 6 })
  await assert.rejects(b.ping(`127.0.0.1:${a.port}`), (e: unknown) => isDhtnetError(e, 'TIMEOUT'))
  const c = await node({ network: 5 })
  const r = await c.ping(`127.0.0.1:${a.port}`)
  assert.equal(r.id, a.nodeId)
})

test('protocol errors: put/listen with a wrong token get 401, get without key gets 203', async () => {
  const n = await node()
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  try {
    const enc = new WireEncoder({ myId: randomHash(), userAgent: 't', network: 0, isClient: false })
    const replies: ReturnType<typeof decodeMessage>[] = []
    s.on('message', (m) => replies.push(decodeMessage(m)))
    s.send(enc.put(1, randomHash(), packValue({ id: 5n, type: 0, data: Buffer.from('x') }), undefined, Buffer.alloc(32)).msg, n.port, '127.0.0.1')
    s.send(enc.listen(2, randomHash(), Buffer.alloc(32), 9), n.port, '127.0.0.1')
    s.send(
      Buffer.from(
        enc
          .get(3, Buffer.alloc(20), undefined, 1)
          .toString('hex')
          .replace('a168c414' + '00'.repeat(20), 'a17ac414' + '00'.repeat(20)),
        'hex',
      ),
      n.port,
      '127.0.0.1',
    )
    assert.ok(await waitFor(() => replies.filter((r) => r.kind === 'error').length >= 3, 3000), JSON.stringify(replies.map((r) => r.kind)))
    const errs = new Map(replies.filter((r) => r.kind === 'error').map((r) => [r.tid, r]))
    assert.equal(errs.get(1)!.errorCode, 401)
    assert.equal(errs.get(1)!.errorMessage, 'Put with wrong token')
    assert.equal(errs.get(2)!.errorCode, 401)
    assert.equal(errs.get(3)!.errorCode, 203)
    assert.equal(n.stats().values, 0)
  } finally {
    s.close()
  }
})

test('get replies list the closest nodes as they are now: a newcomer, a node that moved, a node that expired', async () => {
  const n = await node({ requestAttempts: 1, requestFirstWaitMs: 100 })
  const socks: dgram.Socket[] = []
  const open = async () => {
    const s = dgram.createSocket('udp4')
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
    socks.push(s)
    return s
  }
  try {
    const a = await open(),
      b = await open(),
      b2 = await open()
    const encA = new WireEncoder({ myId: randomHash(), userAgent: 't', network: 0, isClient: false })
    const idB = randomHash()
    const encB = new WireEncoder({ myId: idB, userAgent: 't', network: 0, isClient: false })
    const key = randomHash()
    // A answers the node's pings (it stays good); B never does
    a.on('message', (m: Buffer) => {
      const msg = decodeMessage(m)
      if (msg.kind === 'ping') a.send(encA.pong(msg.tid, Buffer.from([127, 0, 0, 1])), n.port, '127.0.0.1')
    })
    let tid = 100
    // nodes listed in the answer to a get from A, as "id@port"
    const listed = async (): Promise<string[]> => {
      const t = ++tid
      const reply = new Promise<ReturnType<typeof decodeMessage>>((resolve) => {
        const on = (m: Buffer) => {
          const msg = decodeMessage(m)
          if (msg.kind === 'reply' && msg.tid === t) {
            a.off('message', on)
            resolve(msg)
          }
        }
        a.on('message', on)
      })
      a.send(encA.get(t, key, undefined, 1), n.port, '127.0.0.1')
      const r = await reply
      const out: string[] = []
      const n4 = r.nodes4 ?? Buffer.alloc(0)
      for (let o = 0; o < n4.length; o += 26) out.push(`${n4.subarray(o, o + 20).toString('hex')}@${n4.readUInt16BE(o + 24)}`)
      return out.sort()
    }
    const at = (id: Buffer, s: dgram.Socket) => `${id.toString('hex')}@${s.address().port}`
    const idA = encA.myId
    assert.deepEqual(await listed(), [at(idA, a)])
    assert.deepEqual(await listed(), [at(idA, a)], 'same answer again')
    // a newcomer (B pings) is listed at once
    b.send(encB.ping(1), n.port, '127.0.0.1')
    assert.ok(await waitFor(() => n.stats().nodes4 === 2, 2000))
    assert.deepEqual(await listed(), [at(idA, a), at(idB, b)].sort())
    // B shows up from another port (never confirmed, so the new address is taken)
    b2.send(encB.ping(2), n.port, '127.0.0.1')
    await sleep(100)
    assert.deepEqual(await listed(), [at(idA, a), at(idB, b2)].sort())
    // B asks a find: the node pings it to confirm it, B stays silent and expires
    b2.send(encB.find(3, randomHash(), 1), n.port, '127.0.0.1')
    let now = await listed()
    for (let i = 0; i < 60 && now.length > 1; i++) {
      await sleep(50)
      now = await listed()
    }
    assert.deepEqual(now, [at(idA, a)], 'the expired node is no longer listed')
  } finally {
    for (const s of socks) s.close()
  }
})

test('rate limiting: requests beyond the per-IP limit are dropped and counted', async () => {
  const n = await node({ rateLimit: { perIp: 50, overall: 1000 } })
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  let answers = 0
  s.on('message', () => answers++)
  const enc = new WireEncoder({ myId: randomHash(), userAgent: 't', network: 0, isClient: false })
  try {
    for (let i = 0; i < 300; i++) s.send(enc.ping(i + 1), n.port, '127.0.0.1')
    await sleep(300)
    assert.ok(answers <= 60, `answered ${answers}`)
    assert.ok(n.stats().rateLimitedDrops >= 200, `drops ${n.stats().rateLimitedDrops}`)
  } finally {
    s.close()
  }
})

test('bad addresses give clear errors', async () => {
  const n = await node()
  await assert.rejects(n.bootstrap('host:notaport'), (e: unknown) => isDhtnetError(e, 'BAD_ADDRESS'))
  await assert.rejects(n.bootstrap('no-such-host.invalid:4222'), (e: unknown) => isDhtnetError(e, 'RESOLVE_FAILED'))
  assert.throws(
    () => n.listen(Buffer.alloc(5), () => {}),
    (e: unknown) => isDhtnetError(e, 'BAD_KEY'),
  )
  await assert.rejects(n.put('big', { type: 0, data: Buffer.alloc(70_000) }), (e: unknown) => isDhtnetError(e, 'VALUE_TOO_BIG'))
  const busy = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, port: n.port })
  await assert.rejects(busy.start(), (e: unknown) => isDhtnetError(e, 'BIND_FAILED'))
})

test('permanent put, cancelPut, and get with a WHERE query', async () => {
  const a = await node()
  const b = await node({ bootstrap: [`127.0.0.1:${a.port}`] })
  assert.ok(await waitFor(() => b.stats().good4 > 0, 3000))
  const v = { type: 0, data: Buffer.from('perm'), userType: 'text/plain' }
  assert.ok(await b.put('perm-key', v, { permanent: true }))
  assert.equal(a.getLocal('perm-key').length, 1)
  assert.ok(await b.put('perm-key', { type: 3, data: Buffer.from('other') }))
  const only = await b.get('perm-key', { query: { select: [], where: [{ field: 2, value: 3n }] } })
  assert.deepEqual(
    only.map((x) => x.data?.toString()),
    ['other'],
  )
  assert.equal(b.cancelPut('perm-key', (v as { id?: bigint }).id!), true)
  assert.equal(b.cancelPut('perm-key', 12345n), false)
})

test('storage side of listen: ve:1 listeners get update queries, legacy listeners get replies with t = sid', async () => {
  const n = await node()
  const key = randomHash()
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  const msgs: ReturnType<typeof decodeMessage>[] = []
  s.on('message', (m) => {
    try {
      msgs.push(decodeMessage(m))
    } catch {
      /* fragments of big values are not expected here */
    }
  })
  const enc = new WireEncoder({ myId: randomHash(), userAgent: 't', network: 0, isClient: false })
  try {
    s.send(enc.get(1, key, undefined, 1), n.port, '127.0.0.1')
    assert.ok(await waitFor(() => msgs.some((m) => m.tid === 1 && m.token), 3000))
    const token = msgs.find((m) => m.tid === 1)!.token!
    s.send(enc.listen(2, key, token, 4242), n.port, '127.0.0.1')
    // a legacy (v0) listen: no `ve`
    const myId = Buffer.from(enc.myId)
    const fixed = new MsgWriter()
      .map(5)
      .str('a')
      .map(4)
      .str('id')
      .bin(myId)
      .str('h')
      .bin(key)
      .str('token')
      .bin(token)
      .str('sid')
      .uint(4343)
      .str('q')
      .str('listen')
      .str('t')
      .uint(3)
      .str('y')
      .str('q')
      .str('v')
      .str('t')
      .finish()
    s.send(fixed, n.port, '127.0.0.1')
    assert.ok(await waitFor(() => msgs.some((m) => m.tid === 2) && msgs.some((m) => m.tid === 3), 3000), JSON.stringify(msgs.map((m) => [m.kind, m.tid])))
    assert.equal(n.stats().listenersRemote, 2)
    await n.put(key, { type: 0, data: Buffer.from('pushed') })
    assert.ok(await waitFor(() => msgs.some((m) => m.kind === 'update' && m.socketId === 4242) && msgs.some((m) => m.kind === 'reply' && m.tid === 4343), 3000))
    const upd = msgs.find((m) => m.kind === 'update')!
    assert.equal(upd.values[0]!.data!.toString(), 'pushed')
    assert.equal(upd.version, 1)
    const legacyPush = msgs.find((m) => m.kind === 'reply' && m.tid === 4343)!
    assert.equal(legacyPush.values[0]!.data!.toString(), 'pushed')
  } finally {
    s.close()
  }
})

test('expirations reach listeners as exp notices from the storage nodes', async () => {
  // storage nodes keep USER_DATA for 1.5 s; the listener's own cache would keep it 10 minutes,
  // so an expired callback within seconds can only come from the storage nodes' `exp` notices
  const short = { valueExpirationMs: (t: number) => (t === 0 ? 1500 : 600_000) }
  const seed = await node(short)
  const storers = [seed, await node({ ...short, bootstrap: [`127.0.0.1:${seed.port}`] }), await node({ ...short, bootstrap: [`127.0.0.1:${seed.port}`] })]
  const listener = await node({ bootstrap: [`127.0.0.1:${seed.port}`] })
  assert.ok(await waitFor(() => listener.stats().good4 >= 1 && storers.every((s) => s.stats().nodes4 >= 2), 5000))
  await sleep(200)
  const events: string[] = []
  const h = listener.listen('short-lived', (vals, expired) => {
    for (const v of vals) events.push(`${expired}:${String(v.data)}`)
  })
  await sleep(300)
  assert.ok(await storers[1]!.put('short-lived', { type: 0, data: Buffer.from('brief') }))
  assert.ok(await waitFor(() => events.includes('false:brief'), 3000), events.join())
  assert.ok(await waitFor(() => events.includes('true:brief'), 6000), events.join())
  h.cancel()
})
