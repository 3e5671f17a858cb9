/**
 * ConnectionManager against real peer processes (test/helpers/cm-peer.ts), each stopped by its pid:
 * 1 GiB byte-exact with checksum, a peer killed mid-transfer, and a clean exit without leaked handles.
 */
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { isDhtnetError } from '../src/errors.js'
import type { StreamChannel } from '../src/mux/mux.js'
import { TestNet, type TestDevice } from './helpers/testnet.js'

let net: TestNet
let alice: TestDevice

before(async () => {
  net = await TestNet.create()
  alice = await net.addDevice('alice', { keepaliveIntervalMs: 250, deadPeerTimeoutMs: 1500 })
})

after(async () => {
  await (net as TestNet | undefined)?.close() // undefined when before() failed
})

/** Write `total` bytes of a non-repeating pattern with backpressure; resolves with their SHA-256. */
async function writePattern(s: StreamChannel, total: number): Promise<string> {
  const hash = createHash('sha256')
  const block = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i)
  let sent = 0
  let n = 0
  while (sent < total) {
    const size = Math.min(block.length, total - sent)
    // vary the content per block so a misplaced block changes the checksum
    block.writeUInt32LE(n++, 0)
    const chunk = Buffer.from(block.subarray(0, size))
    hash.update(chunk)
    sent += size
    if (!s.write(chunk)) await once(s, 'drain')
  }
  s.end()
  return hash.digest('hex')
}

test('real process: connect by 64-hex id, 1 GiB byte-exact with checksum, then SIGTERM → it exits by itself', async () => {
  const bob = await net.spawnPeer('bob')
  const s = await alice.cm.connectDevice(bob.identity.longId, 'sink', { timeoutMs: 20_000 })
  const reply: Buffer[] = []
  s.on('data', (d: Buffer) => reply.push(d))
  const ended = once(s, 'end')
  const total = 1024 * 1024 * 1024
  const t0 = performance.now()
  const digest = await writePattern(s, total)
  await ended
  const seconds = (performance.now() - t0) / 1000
  process.stderr.write(`1 GiB in ${seconds.toFixed(1)} s (${(total / 1e6 / seconds).toFixed(0)} MB/s)\n`)
  assert.equal(Buffer.concat(reply).toString(), `${total} ${digest}`)
  // the peer's own report on stdout (a separate pipe: it may arrive after the channel reply)
  for (let i = 0; i < 100 && !bob.lines.some((l) => l.event === 'sink'); i++) await new Promise((r) => setTimeout(r, 20))
  const report = bob.lines.find((l) => l.event === 'sink')
  assert.deepEqual(report, { event: 'sink', bytes: total, sha256: digest })
  // the peer closes everything on SIGTERM and its process exits without being killed (no leaked handle)
  const closed = s.closed ? Promise.resolve() : once(s, 'close')
  const { code, signal } = await net.stopChild(bob.child, 10_000)
  assert.equal(signal, null, 'the peer process had to be killed: something kept it alive')
  assert.equal(code, 0)
  assert.ok(bob.lines.some((l) => l.event === 'stopped'))
  await closed
})

test('real process: connect by 40-hex id; peer killed mid-transfer → every channel errors within the keepalive time', async () => {
  const victim = await net.spawnPeer('victim', { env: { PEER_KEEPALIVE_MS: '250', PEER_DEAD_MS: '1500' } })
  const channels = await Promise.all(Array.from({ length: 4 }, (_, i) => alice.cm.connectDevice(victim.identity.id, i === 0 ? 'sink' : `c${i}`)))
  assert.equal(alice.cm.connections(victim.identity.id).length, 1)
  const errors = channels.map(
    (s) =>
      new Promise<{ code: string | undefined; at: number }>((resolve) => {
        s.on('error', (err: Error) => resolve({ code: (err as { code?: string }).code, at: performance.now() }))
        s.on('close', () => resolve({ code: undefined, at: performance.now() }))
      }),
  )
  // keep bytes flowing on every channel
  const stop = { now: false }
  const chunk = Buffer.alloc(16 * 1024, 7)
  for (const s of channels) {
    s.resume()
    void (async () => {
      while (!stop.now && !s.destroyed) {
        if (!s.write(chunk)) await Promise.race([once(s, 'drain'), once(s, 'close')])
      }
    })().catch(() => {})
  }
  await new Promise((r) => setTimeout(r, 300))
  process.kill(victim.child.pid!, 'SIGKILL')
  const killedAt = performance.now()
  await once(victim.child, 'exit')
  const bound = new Promise<'bound'>((r) => setTimeout(() => r('bound'), 15_000).unref())
  const results = await Promise.race([Promise.all(errors), bound])
  stop.now = true
  assert.notEqual(results, 'bound', 'some channel never ended after the peer died')
  for (const r of results as Array<{ code: string | undefined; at: number }>) {
    assert.ok(r.code, 'every channel ends with an error, not a clean close')
    assert.ok(['PEER_UNREACHABLE', 'CONNECTION_CLOSED'].includes(r.code), `unexpected error code ${r.code}`)
  }
  const worst = Math.max(...(results as Array<{ at: number }>).map((r) => r.at - killedAt))
  process.stderr.write(`all 4 channels errored ${worst.toFixed(0)} ms after the kill (dead-peer timeout 1500 ms)\n`)
  assert.equal(alice.cm.isConnected(victim.identity.id), false)
  // a later connect to the dead peer fails with a typed error, in bounded time
  await assert.rejects(alice.cm.connectDevice(victim.identity.id, 'sink', { timeoutMs: 2000 }), (e: unknown) => isDhtnetError(e, 'TIMEOUT'))
})
