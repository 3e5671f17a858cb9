/**
 * Bounded decryptions (dht/decrypt-queue.ts, dht/rsa-worker.ts): each value decrypted once (successes and failures
 * remembered, concurrent requests shared), impossible cyphers refused without RSA work, per-source queues bounded
 * with the excess dropped and counted, sources served round-robin so a flooding source does not delay another's
 * value, closed lanes dropping their waiting values, and the RSA operation done in a worker thread.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { DecryptScheduler } from '../src/dht/decrypt-queue.js'
import { PublicKeyCache } from '../src/dht/key-cache.js'
import { encryptValue } from '../src/dht/crypto.js'
import { RsaWorker } from '../src/dht/rsa-worker.js'
import type { DhtValue } from '../src/dht/value.js'
import { makeTestIdentity } from './dht-value-fixtures.js'

const alice = makeTestIdentity('alice', 2048)
const bob = makeTestIdentity('bob', 2048)
const schedulers: DecryptScheduler[] = []
after(async () => {
  await Promise.all(schedulers.map((s) => s.close()))
})

function scheduler(limits: ConstructorParameters<typeof DecryptScheduler>[2] = {}): DecryptScheduler {
  const s = new DecryptScheduler(bob, new PublicKeyCache(), limits)
  schedulers.push(s)
  return s
}

let nextId = 1n
const junk = (bytes = 256): DhtValue => ({ id: nextId++, type: 0, cypher: randomBytes(bytes) })
const legit = (text: string): DhtValue => encryptValue({ id: nextId++, type: 0, data: Buffer.from(text), userType: 'peer_request' }, bob.publicKey, alice)

test('a value is decrypted once: concurrent requests share the work, outcomes are remembered', async () => {
  const s = scheduler()
  const lane = s.lane()
  const j = junk()
  const [a, b] = await Promise.all([s.submit(j, lane, '10.0.0.1'), s.submit(j, lane, '10.0.0.2')])
  assert.deepEqual([a.ok, b.ok], [false, false])
  assert.equal(s.stats().decryptions, 1)
  assert.equal((await s.submit({ ...j }, s.lane(), '10.0.0.3')).ok, false)
  assert.equal(s.stats().decryptions, 1, 'a failure is not retried')
  const l = legit('hello')
  const ok = await s.submit(l, lane, '10.0.0.1')
  assert.ok(ok.ok && ok.value.data!.toString() === 'hello' && ok.value.recipient!.toString('hex') === bob.id)
  assert.equal(s.stats().decryptions, 2)
  const again = await s.submit(l, lane, '10.0.0.9')
  assert.ok(again.ok)
  assert.equal(s.stats().decryptions, 2, 'a success is not redone')
  assert.equal(s.known(l)?.ok, true)
  // the same id with another cypher is another value
  assert.equal((await s.submit({ id: j.id, type: 0, cypher: randomBytes(256) }, lane, '10.0.0.1')).ok, false)
  assert.equal(s.stats().decryptions, 3)
  assert.ok(s.stats().remembered >= 2)
})

test('cyphers that cannot be ours fail without an RSA operation', async () => {
  const s = scheduler()
  for (const bytes of [1, 100, 255, 256 + 20]) assert.equal((await s.submit(junk(bytes), s.lane(), 'x')).ok, false)
  assert.equal(s.stats().rejectedShapes, 4)
  assert.equal(s.stats().decryptions, 0)
})

test('one source floods: its queue is bounded (the excess dropped and counted), another source is served next', async () => {
  const s = scheduler({ perSource: 4, perLane: 1000, overall: 1000, maxQueuedPerSource: 8 })
  const lane = s.lane()
  const order: string[] = []
  const flood = Array.from({ length: 50 }, () =>
    s.submit(junk(), lane, '10.6.6.6').then((o) => {
      order.push(`flood:${o.ok ? 'ok' : o.reason}`)
    }),
  )
  // one started at once, 8 wait, 41 dropped
  assert.equal(s.stats().droppedDecryptions, 41)
  assert.equal(s.stats().queued, 8)
  const mine = s.submit(legit('from another source'), lane, '10.1.1.1').then((o) => {
    order.push(`legit:${o.ok}`)
  })
  await Promise.all([...flood, mine])
  const handled = order.filter((x) => x !== 'flood:dropped')
  assert.equal(handled.length, 10)
  const at = handled.indexOf('legit:true')
  assert.ok(at >= 0 && at <= 2, `the legitimate value came out at position ${at} of ${handled.join(', ')}`)
  assert.equal(s.stats().decryptions, 10)
})

test('budgets: a lane spends at most its burst at once, then waits for its rate; a closed lane drops what it waits for', async () => {
  const s = scheduler({ perLane: 2, perSource: 1000, overall: 1000 })
  const lane = s.lane()
  const t0 = performance.now()
  const outcomes = Array.from({ length: 12 }, (_, i) => s.submit(junk(), lane, `10.0.0.${i}`))
  for (let i = 0; i < 200 && s.stats().decryptions < 4; i++) await new Promise((r) => setTimeout(r, 25))
  const elapsedS = (performance.now() - t0) / 1000
  // a burst of 2 × 2 = 4 tokens, then 2 a second: whatever the machine's speed, never more than that
  const done = s.stats().decryptions
  assert.ok(done >= 4 && done <= 4 + Math.ceil(2 * elapsedS) + 1, `${done} decryptions after ${elapsedS.toFixed(2)} s`)
  assert.ok(s.stats().queued >= 12 - 4 - Math.ceil(2 * elapsedS) - 2)
  s.closeLane(lane)
  const results = await Promise.all(outcomes)
  assert.ok(results.filter((o) => !o.ok && o.reason === 'dropped').length >= 4)
  assert.ok(s.stats().decryptions <= 8)
  // a new lane is served at once
  assert.equal((await s.submit(legit('new lane'), s.lane(), 'y')).ok, true)
})

test('remembered failures are bounded', async () => {
  const s = scheduler({ rememberFailures: 10, perLane: -1, perSource: -1, overall: -1 })
  await Promise.all(Array.from({ length: 30 }, () => s.submit(junk(), s.lane(), 'z')))
  assert.equal(s.stats().decryptions, 30)
  assert.equal(s.stats().rememberedFailures, 10)
})

test('the RSA operation runs in a worker thread; the worker restarts after it dies, and closes', async () => {
  const w = new RsaWorker(bob.privateKey)
  const v = legit('worker')
  const raw = await w.decryptBlock(v.cypher!.subarray(0, 256))
  assert.equal(raw.length, 256)
  assert.equal(raw[1], 2, 'PKCS#1 type-2 block')
  // kill it from the inside: the pending operation fails, the next one gets a new worker
  const worker = (w as unknown as { worker: import('node:worker_threads').Worker }).worker
  const threadId = worker.threadId
  await worker.terminate()
  const raw2 = await w.decryptBlock(v.cypher!.subarray(0, 256))
  assert.deepEqual(raw2, raw)
  assert.notEqual((w as unknown as { worker: import('node:worker_threads').Worker }).worker.threadId, threadId)
  await w.close()
  await assert.rejects(w.decryptBlock(v.cypher!.subarray(0, 256)), /closed/)
})

test('prewarm boots the worker thread before the first value (and not once closed); the operation then uses it', async () => {
  const w = new RsaWorker(bob.privateKey)
  const threadOf = () => (w as unknown as { worker?: import('node:worker_threads').Worker }).worker
  assert.equal(threadOf(), undefined, 'no thread before use')
  w.prewarm()
  const booted = threadOf()
  assert.ok(booted, 'a thread after prewarm')
  const v = legit('prewarmed')
  assert.equal((await w.decryptBlock(v.cypher!.subarray(0, 256)))[1], 2)
  assert.equal(threadOf(), booted, 'the same thread did the work')
  await w.close()
  w.prewarm()
  assert.equal(threadOf(), undefined, 'prewarm after close starts nothing')
})

test('a prewarmed worker that never worked does not keep the process alive', async () => {
  const { spawn } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const workerModule = fileURLToPath(new URL('../src/dht/rsa-worker.ts', import.meta.url))
  const script = `
    import { generateKeyPairSync } from 'node:crypto'
    const { RsaWorker } = await import(${JSON.stringify(workerModule)})
    new RsaWorker(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey).prewarm()
    console.log('main done')`
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  assert.equal(signal, null, `the process did not exit on its own within 20 s: ${out}`)
  assert.equal(code, 0, out)
  assert.match(out, /main done/)
})
