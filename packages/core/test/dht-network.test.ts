import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { DhtNode } from '../src/dht/index.js'

const N = 32
const nodes: DhtNode[] = []
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (cond()) return true
    await sleep(50)
  }
  return cond()
}

before(async () => {
  for (let i = 0; i < N; i++) {
    const n = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: '::1', bootstrap: i ? [`127.0.0.1:${nodes[0]!.port}`, `[::1]:${nodes[0]!.port6}`] : [] })
    await n.start()
    nodes.push(n)
  }
  // a bounded wait for the tables to fill (8 known nodes each, both families)
  await waitFor(() => nodes.every((n) => n.stats().nodes4 >= 8 && n.stats().nodes6 >= 8), 15_000)
})

after(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
})

test(`${N} nodes on loopback: routing tables fill up`, () => {
  for (const n of nodes) {
    const st = n.stats()
    assert.ok(st.nodes4 >= 8, `node has ${st.nodes4} IPv4 nodes`)
    assert.ok(st.nodes6 >= 8, `node has ${st.nodes6} IPv6 nodes`)
  }
})

test('every node can get what any node put', async () => {
  await Promise.all(nodes.map((n, i) => n.put(`net-key-${i}`, { type: 0, data: Buffer.from(`value-${i}`), userType: 'text/plain' }).then((ok) => assert.ok(ok, `put ${i}`))))
  const misses: string[] = []
  // every node reads every key, in batches to keep the loopback queue sane
  for (let reader = 0; reader < N; reader++) {
    const results = await Promise.all(nodes.map((_, i) => nodes[reader]!.get(`net-key-${i}`)))
    results.forEach((vals, i) => {
      if (!vals.some((v) => v.data?.toString() === `value-${i}`)) misses.push(`${reader}<-${i}`)
    })
  }
  assert.deepEqual(misses, [])
  // the values live on the nodes closest to each key, not everywhere
  const stored = nodes.map((n) => n.stats().values)
  assert.ok(stored.reduce((a, b) => a + b, 0) < N * N, `values stored: ${stored.join(',')}`)
})

test('get latency in the network (measured, not asserted)', async () => {
  const lat: number[] = []
  for (let i = 0; i < 40; i++) {
    const reader = nodes[(i * 5 + 1) % N]!
    const t0 = performance.now()
    const vals = await reader.get(`net-key-${(i * 3) % N}`)
    lat.push(performance.now() - t0)
    assert.ok(vals.length > 0)
  }
  lat.sort((a, b) => a - b)
  console.log(`get latency over 40 gets: median ${lat[20]!.toFixed(1)} ms, p95 ${lat[37]!.toFixed(1)} ms`)
})

test('a listen hears a put (latency measured, not asserted)', async () => {
  const latencies: number[] = []
  for (let round = 0; round < 10; round++) {
    const key = `listen-key-${round}`
    const listener = nodes[(round * 7 + 3) % N]!
    const putter = nodes[(round * 11 + 5) % N]!
    let resolveHeard!: (t: number) => void
    const heard = new Promise<number>((r) => {
      resolveHeard = r
    })
    const h = listener.listen(key, (vals, expired) => {
      if (!expired && vals.some((v) => v.data?.toString() === `hello-${round}`)) resolveHeard(performance.now())
    })
    // let the listen reach its storage nodes
    await sleep(300)
    const t0 = performance.now()
    const ok = await putter.put(key, { type: 0, data: Buffer.from(`hello-${round}`) })
    assert.ok(ok)
    const t1 = await Promise.race([heard, sleep(5000).then(() => -1)])
    h.cancel()
    assert.notEqual(t1, -1, `listener ${round} never heard the put`)
    latencies.push(t1 - t0)
  }
  latencies.sort((a, b) => a - b)
  console.log(`put→listen latency over 10 rounds: median ${latencies[5]!.toFixed(1)} ms, max ${latencies[9]!.toFixed(1)} ms`)
})

test('a new listen reports the values already there', async () => {
  const key = 'listen-existing'
  assert.ok(await nodes[2]!.put(key, { type: 0, data: Buffer.from('already-there') }))
  const got: string[] = []
  const h = nodes[20]!.listen(key, (vals, expired) => {
    for (const v of vals) got.push(`${expired}:${String(v.data)}`)
  })
  assert.ok(await waitFor(() => got.includes('false:already-there'), 5000), `got ${got.join(',')}`)
  h.cancel()
})

test("a stopped node's values remain reachable through the others", async () => {
  const victim = nodes[N - 1]!
  assert.ok(await victim.put('survivor-key', { type: 0, data: Buffer.from('still-here') }))
  await victim.stop()
  const vals = await nodes[1]!.get('survivor-key')
  assert.ok(vals.some((v) => v.data?.toString() === 'still-here'))
  const vals2 = await nodes[17]!.get('net-key-31')
  assert.ok(vals2.some((v) => v.data?.toString() === 'value-31'))
})

test('IPv6-only nodes join through ::1 and exchange values', async () => {
  const v6 = [new DhtNode({ bindIpv4: false, bindIpv6: '::1' }), new DhtNode({ bindIpv4: false, bindIpv6: '::1' })]
  try {
    for (const n of v6) {
      await n.start()
      await n.bootstrap(`[::1]:${nodes[0]!.port6}`)
    }
    assert.ok(await waitFor(() => v6.every((n) => n.stats().nodes6 >= 8), 10_000))
    assert.equal(v6[0]!.stats().nodes4, 0)
    assert.ok(await v6[0]!.put('v6-key', { type: 0, data: Buffer.from('six') }))
    const v = await v6[1]!.get('v6-key')
    assert.ok(v.some((x) => x.data?.toString() === 'six'))
    // and an IPv4+IPv6 node sees it too
    assert.ok((await nodes[9]!.get('v6-key')).some((x) => x.data?.toString() === 'six'))
  } finally {
    await Promise.all(v6.map((n) => n.stop()))
  }
})

test('values over 600 bytes travel as fragments: put, get and listen', async () => {
  const big = Buffer.alloc(5000)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
  const heard: Buffer[] = []
  const h = nodes[6]!.listen('big-value', (vals, expired) => {
    if (!expired) for (const v of vals) heard.push(v.data!)
  })
  await sleep(300)
  assert.ok(await nodes[12]!.put('big-value', { type: 0, data: big }))
  const got = await nodes[25]!.get('big-value')
  assert.ok(got.some((v) => v.data!.equals(big)))
  assert.ok(await waitFor(() => heard.some((d) => d.equals(big)), 5000))
  // many small values in one reply also go as fragments (>= 50 values)
  await Promise.all(Array.from({ length: 60 }, (_, i) => nodes[i % 8]!.put('many-values', { type: 0, data: Buffer.from(`v${i}`) })))
  const many = await nodes[30]!.get('many-values')
  assert.equal(new Set(many.map((v) => v.data!.toString())).size, 60)
  h.cancel()
})
