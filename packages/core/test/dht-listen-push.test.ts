/**
 * Listen pushes (dht/node.ts, dht/local-listens.ts): socket ids are random, a push is taken only from the node
 * (id, address and port) our listen went to, and what a listen remembers is bounded while every value is still
 * delivered. Real nodes on loopback, plus a raw socket playing the spoofer.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { DhtNode } from '../src/dht/node.js'
import { WireEncoder, decodeMessage } from '../src/dht/wire.js'
import { packValue, type DhtValue } from '../src/dht/value.js'

const nodes: DhtNode[] = []
const sockets: dgram.Socket[] = []
after(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  for (const s of sockets) s.close()
})

async function node(opts: ConstructorParameters<typeof DhtNode>[0] = {}): Promise<DhtNode> {
  const n = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, ...opts })
  await n.start()
  nodes.push(n)
  return n
}

async function until<T>(what: string, fn: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const r = fn()
    if (r) return r
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`)
    await new Promise((res) => setTimeout(res, 50))
  }
}

const sidsOf = (n: DhtNode) => [...(n as unknown as { listenSockets: Map<number, unknown> }).listenSockets.keys()]

test('listen socket ids are random, not the request counter', async () => {
  const a = await node()
  // what an attacker learns from one request of ours: its tid
  const s = dgram.createSocket('udp4')
  sockets.push(s)
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  const tid = new Promise<number>((resolve) => s.once('message', (m) => resolve(decodeMessage(m).tid)))
  const handles = Array.from({ length: 20 }, (_, i) => a.listen(`random-sid-${i}`, () => {}))
  a.ping('127.0.0.1', s.address().port).catch(() => {})
  const seen = await tid
  const sids = sidsOf(a)
  assert.equal(sids.length, 20)
  const near = sids.filter((x) => Math.abs(x - seen) < 100_000)
  assert.deepEqual(near, [], `socket ids near the request counter ${seen}: ${near.join(', ')}`)
  const sorted = [...sids].sort((x, y) => x - y)
  for (let i = 1; i < sorted.length; i++) assert.ok(sorted[i]! - sorted[i - 1]! > 1, 'no two consecutive socket ids')
  for (const h of handles) h.cancel()
})

test('a push is taken only from the node our listen went to; a spoofer on the same host is ignored', async () => {
  const storage = await node()
  const listener = await node({ bootstrap: [`127.0.0.1:${storage.port}`] })
  await until('the nodes know each other', () => listener.stats().good4 >= 1 && storage.stats().nodes4 >= 1)
  const heard: Array<{ values: DhtValue[]; from: string | undefined }> = []
  const h = listener.listen('push-key', (values, expired, from) => {
    if (!expired) heard.push({ values, from })
  })
  await until('the storage node has our listen', () => storage.stats().listenersRemote >= 1)
  const [sid] = sidsOf(listener)
  // the spoofer claims the storage node's id, from the same address but another port
  const spoof = dgram.createSocket('udp4')
  sockets.push(spoof)
  await new Promise<void>((r) => spoof.bind(0, '127.0.0.1', () => r()))
  const enc = new WireEncoder({ myId: storage.nodeIdBytes, userAgent: 'RNG1', network: 0, isClient: false })
  const fake = packValue({ id: 77n, type: 0, data: Buffer.from('spoofed') })
  const key = DhtNode.infoHash('push-key')
  const before = listener.stats().ignoredPushes
  for (const d of [
    enc.nodesValues(sid!, Buffer.from([127, 0, 0, 1]), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(32), [fake]).msg,
    enc.updateValues(5, key, sid!, [fake], undefined, Buffer.alloc(32)).msg,
  ]) {
    spoof.send(d, listener.port, '127.0.0.1')
  }
  await until('both pushes ignored', () => listener.stats().ignoredPushes >= before + 2)
  assert.equal(listener.stats().ignoredPushes, before + 2)
  // the real storage node's push is delivered, with where it came from
  await storage.put('push-key', { type: 0, data: Buffer.from('genuine') })
  const got = await until('the genuine value is heard', () => heard.find((x) => x.values.some((v) => v.data?.toString() === 'genuine')))
  assert.equal(got.from, '127.0.0.1')
  assert.ok(!heard.some((x) => x.values.some((v) => v.data?.toString() === 'spoofed')))
  h.cancel()
})

test('a listen remembers a bounded number of bytes; every value is still delivered once', async () => {
  const storage = await node({ storageLimits: { maxBytesPerIp: 64 << 20 } })
  const listener = await node({ bootstrap: [`127.0.0.1:${storage.port}`], listenCache: { maxValues: 1000, maxBytes: 256 << 10 } })
  await until('the nodes know each other', () => listener.stats().good4 >= 1)
  const ids = new Set<bigint>()
  let deliveries = 0
  const h = listener.listen('big-key', (values, expired) => {
    if (expired) return
    for (const v of values) {
      ids.add(v.id)
      deliveries++
    }
  })
  await until('the storage node has our listen', () => storage.stats().listenersRemote >= 1)
  for (let i = 0; i < 60; i++) await storage.put('big-key', { type: 0, data: randomBytes(16_000) })
  await until(`60 values heard (${ids.size})`, () => ids.size === 60)
  const cache = (listener as unknown as { listens: Set<{ cache: { bytes: number; size: number } }> }).listens
  const [l] = [...cache]
  assert.ok(l!.cache.bytes <= 256 << 10, `the listen holds ${l!.cache.bytes} bytes`)
  assert.ok(l!.cache.size < 60)
  assert.ok(listener.stats().listenCacheEvictions >= 60 - l!.cache.size)
  assert.equal(deliveries, 60, 'each value delivered once')
  h.cancel()
})
