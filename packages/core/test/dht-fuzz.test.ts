import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import v8 from 'node:v8'
import vm from 'node:vm'
import { randomBytes } from 'node:crypto'
import { Packr } from 'msgpackr'
import { DhtNode } from '../src/dht/index.js'
import { WireEncoder, decodeMessage } from '../src/dht/wire.js'
import { packValue } from '../src/dht/value.js'
import { randomHash } from '../src/dht/infohash.js'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const started: DhtNode[] = []
const sockets: dgram.Socket[] = []

after(async () => {
  await Promise.all(started.map((n) => n.stop()))
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((r) => {
          try {
            s.close(() => r())
          } catch {
            r()
          }
        }),
    ),
  )
})

async function udp(address = '127.0.0.1'): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, address, () => r()))
  s.setSendBufferSize(4 << 20)
  sockets.push(s)
  return s
}

function heapMb(): number {
  gc()
  return process.memoryUsage().heapUsed / 1048576
}

/** A deterministic generator of hostile datagrams. */
function* hostile(count: number): Generator<Buffer> {
  const packr = new Packr({ useRecords: false })
  const id = randomHash()
  const enc = new WireEncoder({ myId: id, userAgent: 'fuzz', network: 0, isClient: false })
  const tok = Buffer.alloc(32)
  const valid = [
    enc.ping(1),
    enc.find(2, randomHash(), 3),
    enc.get(3, randomHash(), undefined, 1),
    enc.listen(4, randomHash(), tok, 5),
    enc.refresh(5, randomHash(), 7n, tok),
    enc.put(6, randomHash(), packValue({ id: 9n, type: 0, data: Buffer.alloc(100) }), undefined, tok).msg,
    ...enc.put(7, randomHash(), packValue({ id: 10n, type: 0, data: Buffer.alloc(3000) }), undefined, tok).parts,
    enc.updateIds('exp', 3, tok, [1n], 1, 9),
    enc.error(8, 401, 'x'),
    enc.nodesValues(9, Buffer.from([127, 0, 0, 1]), Buffer.alloc(26), Buffer.alloc(38), tok, [packValue({ id: 1n, type: 0, data: Buffer.alloc(10) })]).msg,
  ]
  const weird: unknown[] = [
    null,
    true,
    -1,
    2 ** 40,
    1.5,
    'str',
    '',
    Buffer.alloc(0),
    Buffer.alloc(19),
    Buffer.alloc(21),
    Buffer.alloc(5000),
    [],
    [1, 2],
    {},
    { a: 1 },
    0xffffffff,
    -(2 ** 40),
    new Array(100).fill(0),
    'ping',
    'q',
    'r',
    { o: -1, d: 'x' },
  ]
  const keys = ['y', 'q', 't', 'a', 'r', 'e', 'p', 'u', 'v', 'n', 's']
  const args = ['id', 'h', 'target', 'q', 'token', 'vid', 'n4', 'n6', 'sa', 'c', 'values', 'exp', 're', 'fileds', 'w', 've', 'sid']
  let seed = 12345
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  for (let i = 0; i < count; i++) {
    const kind = i % 8
    const base = valid[rnd(valid.length)]!
    if (kind === 0) yield randomBytes(1 + rnd(200))
    else if (kind === 1)
      yield base.subarray(0, rnd(base.length)) // truncated
    else if (kind === 2) {
      // bit flips
      const b = Buffer.from(base)
      for (let k = 0; k < 1 + rnd(4); k++) b[rnd(b.length)]! ^= 1 << rnd(8)
      yield b
    } else if (kind === 3) {
      // type confusion at the top level
      const o: Record<string, unknown> = { y: 'q', q: ['ping', 'find', 'get', 'put', 'listen', 'refresh', 'update'][rnd(7)], t: rnd(1000), a: { id } }
      o[keys[rnd(keys.length)]!] = weird[rnd(weird.length)]
      yield packr.pack(o)
    } else if (kind === 4) {
      // type confusion inside the arguments
      const a: Record<string, unknown> = { id, h: randomHash(), token: tok }
      for (let k = 0; k < 1 + rnd(3); k++) a[args[rnd(args.length)]!] = weird[rnd(weird.length)]
      yield packr.pack({ y: rnd(2) ? 'q' : 'r', q: ['get', 'put', 'listen', 'refresh', 'update', 'find'][rnd(6)], t: rnd(1000), a, r: rnd(3) ? undefined : a })
    } else if (kind === 5) {
      // oversized
      yield Buffer.concat([base, randomBytes(1000 + rnd(60_000))])
    } else if (kind === 6) {
      // declared lengths far beyond the datagram, deep nesting
      const hdrs = ['dfffffffff', 'ddffffffff', 'c6ffffffff', 'dbffffffff', 'de ffff'.replace(' ', '')]
      if (rnd(2)) yield Buffer.from(hdrs[rnd(hdrs.length)]! + '00', 'hex')
      else yield Buffer.concat([Buffer.alloc(5000, 0x91), Buffer.from([0xc0])])
    } else {
      // fragments for unknown or bogus partial messages
      yield packr.pack({ y: 'p', t: rnd(50), p: { [rnd(70000)]: { o: rnd(1 << 20), d: randomBytes(1 + rnd(1300)) } } })
    }
  }
}

test('fuzz: 100,000 malformed, truncated, oversized and type-confused datagrams; the node stays up and bounded', async () => {
  const target = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, rateLimit: { perIp: -1, overall: -1 } })
  await target.start()
  started.push(target)
  const s = await udp()
  const heap0 = heapMb()
  let sent = 0
  let batch: Promise<void>[] = []
  for (const d of hostile(100_000)) {
    // also check that the decoder never returns something half-read: it parses or throws
    try {
      decodeMessage(d)
    } catch {
      /* expected for most */
    }
    batch.push(new Promise<void>((r) => s.send(d, target.port, '127.0.0.1', () => r())))
    sent++
    if (batch.length >= 200) {
      await Promise.all(batch)
      batch = []
      // pace the sender on what the node has read, so the kernel does not drop most of the test
      const t0 = Date.now()
      while (target.stats().datagramsIn < sent - 400 && Date.now() - t0 < 1000) await new Promise((r) => setImmediate(r))
    }
  }
  await Promise.all(batch)
  await sleep(300)
  const st = target.stats()
  console.log(`fuzz: sent ${sent}, read ${st.datagramsIn}, malformed drops ${st.malformedDrops}, requests answered ${st.requestsIn}, partials ${st.partialMessages}`)
  assert.equal(sent, 100_000)
  assert.ok(st.datagramsIn > 90_000, `the node read ${st.datagramsIn} datagrams`)
  assert.ok(st.malformedDrops > 40_000, 'most datagrams were refused as malformed')
  // still answering
  const probe = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false })
  await probe.start()
  started.push(probe)
  const pong = await probe.ping(`127.0.0.1:${target.port}`)
  assert.equal(pong.id, target.nodeId)
  const growth = heapMb() - heap0
  console.log(`fuzz: heap growth ${growth.toFixed(1)} MB`)
  assert.ok(growth < 64, `heap grew by ${growth.toFixed(1)} MB`)
  assert.ok(st.partialMessages <= 512)
})

test('a flood of puts from 16 source addresses hits the storage quotas, not the heap', async () => {
  const limits = { maxTotalBytes: 4 << 20, maxBytesPerIp: 512 << 10 }
  const target = new DhtNode({ bindIpv4: '127.0.0.1', bindIpv6: false, rateLimit: { perIp: -1, overall: -1 }, storageLimits: limits })
  await target.start()
  started.push(target)
  const heap0 = heapMb()
  let totalSent = 0
  let sentDatagrams = 0
  for (let ip = 2; ip <= 17; ip++) {
    const s = await udp(`127.0.0.${ip}`)
    const enc = new WireEncoder({ myId: randomHash(), userAgent: 'flood', network: 0, isClient: false })
    // obtain a token bound to this socket's address
    const token = await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no token for 127.0.0.${ip}: ${JSON.stringify(target.stats())}`)), 3000)
      const onMsg = (m: Buffer) => {
        // the node may ping us first (it does not know us yet): wait for the reply that carries the token
        const msg = decodeMessage(m)
        if (msg.kind !== 'reply' || msg.tid !== 1 || !msg.token) return
        clearTimeout(timer)
        s.off('message', onMsg)
        resolve(msg.token)
      }
      s.on('message', onMsg)
      s.send(enc.get(1, randomHash(), undefined, 1), target.port, '127.0.0.1')
    })
    let batch: Promise<void>[] = []
    for (let i = 0; i < 800; i++) {
      const v = packValue({ id: BigInt(ip * 100000 + i + 1), type: 0, data: randomBytes(1000) })
      const out = enc.put(10 + i, randomHash(), v, undefined, token)
      for (const d of [out.msg, ...out.parts]) batch.push(new Promise<void>((r) => s.send(d, target.port, '127.0.0.1', () => r())))
      totalSent += v.length
      if (batch.length >= 100) {
        await Promise.all(batch)
        batch = []
        sentDatagrams += 100
        const t0 = Date.now()
        while (target.stats().datagramsIn < sentDatagrams - 200 && Date.now() - t0 < 1000) await new Promise((r) => setImmediate(r))
      }
    }
    sentDatagrams += batch.length
    await Promise.all(batch)
  }
  await sleep(300)
  const st = target.stats()
  console.log(`flood: sent ${(totalSent / 1048576).toFixed(1)} MB of values, stored ${st.values} values, ${(st.storedBytes / 1048576).toFixed(2)} MB`)
  assert.ok(totalSent > 2 * limits.maxTotalBytes)
  assert.ok(st.values > 1000, 'the flood did reach the store')
  assert.ok(st.storedBytes <= limits.maxTotalBytes)
  const growth = heapMb() - heap0
  assert.ok(growth < 64, `heap grew by ${growth.toFixed(1)} MB`)
})
