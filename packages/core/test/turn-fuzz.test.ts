/**
 * The TURN/TCP client against a hostile server (test/helpers/fake-turn.ts, no coturn needed):
 *  - the stream decoder: random, mutated and split inputs (only STUN_ERROR escapes, bounded buffer);
 *  - allocate() answered with random or mutated responses: it only ever rejects with a DhtnetError (or succeeds),
 *    within its bound, and closes its connection;
 *  - an allocation fed 20,000 random/mutated messages, indications and ChannelData: nothing escapes, memory stays
 *    bounded, the allocation either survives (dropping what is malformed) or ends with an error on a broken stream;
 *  - a flood of CONNECTION-ATTEMPTs: data connections opened at once never exceed the bounds (per peer and in all),
 *    attempts from unpermitted peers open nothing, every data connection is closed after close().
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { StunMessageBuilder } from '../src/transport/stun/builder.js'
import { StunAttr, StunMethod } from '../src/transport/stun/constants.js'
import { StunStreamDecoder } from '../src/transport/turn/stream-decoder.js'
import { TurnTcpClient, encodeConnectionId, type TurnAllocation } from '../src/transport/turn/index.js'
import { DhtnetError, isDhtnetError } from '../src/errors.js'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'
import { allocateSuccess, startFakeTurn, successTo } from './helpers/fake-turn.js'

const SEED = Number(process.env.DHTNET_FUZZ_SEED ?? 0x7e57) >>> 0

function sampleMessages(): Buffer[] {
  const tid = Buffer.alloc(12, 7)
  return [
    StunMessageBuilder.create(StunMethod.ALLOCATE, 'success', tid)
      .addXorAddress(StunAttr.XOR_RELAYED_ADDRESS, { address: '198.51.100.10', port: 50000 })
      .addXorAddress(StunAttr.XOR_MAPPED_ADDRESS, { address: '203.0.113.5', port: 4000 })
      .addUint32(StunAttr.LIFETIME, 600)
      .build(),
    StunMessageBuilder.create(StunMethod.ALLOCATE, 'error', tid)
      .addErrorCode(401, 'Unauthorized')
      .addText(StunAttr.REALM, 'r')
      .addText(StunAttr.NONCE, 'n0nce')
      .build({ fingerprint: false }),
    StunMessageBuilder.create(StunMethod.CONNECTION_ATTEMPT, 'indication', tid)
      .add(StunAttr.CONNECTION_ID, encodeConnectionId(0x01020304))
      .addXorAddress(StunAttr.XOR_PEER_ADDRESS, { address: '127.0.0.2', port: 1234 })
      .build({ fingerprint: false }),
    StunMessageBuilder.create(StunMethod.CONNECT, 'success', tid).add(StunAttr.CONNECTION_ID, encodeConnectionId(9)).build(),
    StunMessageBuilder.create(StunMethod.REFRESH, 'error', tid).addErrorCode(438, 'Stale Nonce').addText(StunAttr.NONCE, 'x').build(),
  ]
}

test('stream decoder: random, mutated and split streams yield whole messages or STUN_ERROR, never more than one message buffered', () => {
  const next = rng(SEED)
  const samples = sampleMessages()
  const started = Date.now()
  let items = 0
  let errors = 0
  for (let i = 0; i < 20_000 && Date.now() - started < 20_000; i++) {
    const decoder = new StunStreamDecoder(4096)
    const pieces: Buffer[] = []
    for (let k = 0, n = 1 + (next() % 4); k < n; k++) {
      const base = samples[next() % samples.length]!
      pieces.push(next() % 3 === 0 ? randomBuffer(next, 64) : next() % 2 === 0 ? base : mutateBytes(base, next))
    }
    const stream = Buffer.concat(pieces)
    try {
      for (let at = 0; at < stream.length;) {
        const size = 1 + (next() % 97)
        decoder.push(stream.subarray(at, at + size))
        at += size
        for (let item = decoder.next(); item; item = decoder.next()) {
          items++
          if (item.kind === 'stun') assert.ok(item.message.length <= 4096)
        }
        assert.ok(decoder.bufferedBytes <= 4096 + 97, `buffered ${decoder.bufferedBytes}`)
      }
    } catch (err) {
      assert.ok(isDhtnetError(err, 'STUN_ERROR'), String(err))
      errors++
    }
  }
  assert.ok(items > 1000 && errors > 100, `${items} items, ${errors} out-of-step streams`)
  // split anywhere, a valid stream decodes to the same messages
  const whole = Buffer.concat(samples)
  for (let cut = 0; cut <= whole.length; cut += 7) {
    const d = new StunStreamDecoder(4096)
    d.push(whole.subarray(0, cut))
    const got: Buffer[] = []
    for (let item = d.next(); item; item = d.next()) if (item.kind === 'stun') got.push(Buffer.from(item.message))
    d.push(whole.subarray(cut))
    for (let item = d.next(); item; item = d.next()) if (item.kind === 'stun') got.push(Buffer.from(item.message))
    assert.deepEqual(got, samples)
  }
  // a declared size above the limit is refused from its first 4 bytes
  const big = Buffer.from([0x01, 0x01, 0x10, 0x00])
  const d = new StunStreamDecoder(4096)
  d.push(big)
  assert.throws(
    () => d.next(),
    (e) => isDhtnetError(e, 'STUN_ERROR'),
  )
})

test('allocate() answered with random or mutated responses: only DhtnetErrors, within the bound, connection closed', { timeout: 120_000 }, async () => {
  const next = rng(SEED ^ 0x51)
  const samples = sampleMessages()
  let mode = 0
  const server = await startFakeTurn((msg, conn) => {
    const kind = mode % 5
    let out: Buffer
    if (kind === 0) out = randomBuffer(next, 200)
    else {
      // a sample with the request's transaction id, then mutated: mostly a plausible answer to this very request
      const base = Buffer.from(samples[next() % samples.length]!)
      msg.transactionId.copy(base, 8)
      if (kind === 1 || kind === 2) base.writeUInt16BE((base.readUInt16BE(0) & ~0x3eef) | (msg.type & 0x3eef), 0)
      out = kind === 4 ? base : mutateBytes(base, next)
    }
    conn.socket.write(out)
    if (next() % 2 === 0) conn.socket.end()
  })
  const started = Date.now()
  const codes = new Map<string, number>()
  let successes = 0
  try {
    for (let i = 0; i < 200 && Date.now() - started < 90_000; i++) {
      mode = i
      const t0 = Date.now()
      try {
        const a = await TurnTcpClient.allocate({
          server: `127.0.0.1:${server.port}`,
          username: 'u',
          password: 'p',
          timeouts: { transactionMs: 300, allocateMs: 600, connectMs: 500 },
        })
        successes++
        await a.close()
      } catch (err) {
        assert.ok(err instanceof DhtnetError, `iteration ${i}: ${String(err)}`)
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1)
      }
      assert.ok(Date.now() - t0 < 3000, `iteration ${i} took ${Date.now() - t0} ms`)
    }
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(server.open.size, 0, 'every connection closed')
  } finally {
    await server.close()
  }
  process.stdout.write(`allocate fuzz: ${successes} allocations, errors ${JSON.stringify(Object.fromEntries(codes))}\n`)
  assert.ok(codes.size >= 2, 'several kinds of failure were exercised')
})

test('an allocation fed 20,000 random and mutated messages: nothing escapes, memory bounded, malformed input dropped', { timeout: 120_000 }, async () => {
  const next = rng(SEED ^ 0xa11)
  const samples = sampleMessages()
  const server = await startFakeTurn((msg, conn) => {
    if (msg.class !== 'request') return
    if (msg.method === StunMethod.ALLOCATE) conn.socket.write(allocateSuccess(msg))
    else if (msg.method === StunMethod.CREATE_PERMISSION || msg.method === StunMethod.REFRESH) conn.socket.write(successTo(msg))
    // CONNECTION-BIND on data connections: never answered (bounded by bindMs)
  })
  const uncaught: unknown[] = []
  const onUncaught = (err: unknown): void => {
    uncaught.push(err)
  }
  process.on('uncaughtException', onUncaught)
  const allocations: TurnAllocation[] = []
  try {
    const heapBefore = heapUsedAfterGc()
    let survived = 0
    let ended = 0
    for (let round = 0; round < 4; round++) {
      const a = await TurnTcpClient.allocate({ server: `127.0.0.1:${server.port}`, username: 'u', password: 'p', timeouts: { bindMs: 300 } })
      allocations.push(a)
      let closeError: unknown
      a.on('close', (e) => (closeError = e))
      a.on('connection', (s) => s.destroy())
      await a.permit(['127.0.0.2'])
      const control = server.connections[server.connections.length - 1]!.socket
      // rounds 0-1: well-framed garbage only (the stream stays in step); rounds 2-3: anything, incl. broken framing
      for (let i = 0; i < 5000; i++) {
        const base = samples[next() % samples.length]!
        let msg: Buffer
        if (round < 2) {
          const mutated = mutateBytes(base, next)
          const m = mutated.length >= 20 ? mutated : Buffer.concat([mutated, Buffer.alloc(20 - mutated.length)])
          // keep the header valid so that the stream stays in step
          msg = Buffer.alloc(20 + ((Math.max(0, m.length - 20) + 3) & ~3))
          m.copy(msg)
          msg.writeUInt16BE(m.readUInt16BE(0) & 0x3fff, 0)
          msg.writeUInt16BE(msg.length - 20, 2)
          msg.writeUInt32BE(0x2112a442, 4)
        } else msg = next() % 4 === 0 ? randomBuffer(next, 100) : mutateBytes(base, next)
        if (control.destroyed) break
        control.write(msg)
        if (i % 500 === 0) await new Promise((r) => setImmediate(r))
      }
      await new Promise((r) => setTimeout(r, 400))
      process.stdout.write(`fuzzed allocation ${round}: ${a.closed ? 'ended' : 'alive'}, stats ${JSON.stringify(a.stats)}\n`)
      if (a.closed) {
        ended++
        assert.ok(isDhtnetError(closeError), `the allocation ended with ${String(closeError)}`)
      } else {
        survived++
        assert.ok(a.stats.dropped + a.stats.attempts >= 0)
      }
      await a.close()
    }
    await new Promise((r) => setTimeout(r, 400))
    const grown = heapUsedAfterGc() - heapBefore
    assert.ok(grown < 32 * 1024 * 1024, `heap grew by ${grown} bytes`)
    assert.ok(survived >= 2, `well-framed garbage ended an allocation (${survived} survived, ${ended} ended)`)
    assert.deepEqual(uncaught, [])
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(server.open.size, 0, 'every connection (control and data) closed')
  } finally {
    process.off('uncaughtException', onUncaught)
    for (const a of allocations) await a.close()
    await server.close()
  }
})

test('a flood of CONNECTION-ATTEMPTs opens at most the bounded number of data connections; unpermitted peers open none', { timeout: 60_000 }, async () => {
  const server = await startFakeTurn((msg, conn) => {
    if (msg.class !== 'request') return
    if (msg.method === StunMethod.ALLOCATE) conn.socket.write(allocateSuccess(msg))
    else if (msg.method === StunMethod.CREATE_PERMISSION) conn.socket.write(successTo(msg))
  })
  let allocation: TurnAllocation | undefined
  try {
    allocation = await TurnTcpClient.allocate({ server: `127.0.0.1:${server.port}`, username: 'u', password: 'p', timeouts: { bindMs: 1500 } })
    allocation.on('connection', (s) => s.destroy())
    await allocation.permit(['127.0.0.2', '127.0.0.3'])
    const control = server.connections[0]!.socket
    const attempt = (id: number, peer: string): Buffer =>
      StunMessageBuilder.create(StunMethod.CONNECTION_ATTEMPT, 'indication')
        .add(StunAttr.CONNECTION_ID, encodeConnectionId(id))
        .addXorAddress(StunAttr.XOR_PEER_ADDRESS, { address: peer, port: 1000 + (id % 60000) })
        .build({ fingerprint: false })
    // unpermitted peer: nothing opened
    for (let i = 0; i < 100; i++) control.write(attempt(i, '127.0.0.9'))
    await new Promise((r) => setTimeout(r, 200))
    assert.equal(server.connections.length, 1, 'no data connection for an unpermitted peer')
    assert.equal(allocation.stats.dropped, 100)
    // 2,000 attempts from two permitted peers in one burst
    const burst: Buffer[] = []
    for (let i = 0; i < 2000; i++) burst.push(attempt(1000 + i, i % 2 === 0 ? '127.0.0.2' : '127.0.0.3'))
    control.write(Buffer.concat(burst))
    await new Promise((r) => setTimeout(r, 500))
    const opened = server.connections.length - 1
    assert.ok(server.maxOpen - 1 <= 8, `${server.maxOpen - 1} data connections at once (bound 8, 4 per peer)`)
    assert.ok(opened <= 8, `${opened} data connections opened for 2,000 attempts`)
    assert.ok(allocation.stats.dropped >= 100 + 2000 - 8, `dropped ${allocation.stats.dropped}`)
    assert.equal(allocation.stats.attempts, 2100)
    // the unanswered binds end at bindMs; their sockets are closed
    await new Promise((r) => setTimeout(r, 2000))
    assert.equal(server.open.size, 1, 'only the control connection is left')
    await allocation.close()
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(server.open.size, 0)
  } finally {
    await allocation?.close()
    await server.close()
  }
})

test('CONNECT and CONNECTION-BIND against a scripted server: the bytes after the bind response reach the stream; errors are typed', { timeout: 30_000 }, async () => {
  const server = await startFakeTurn((msg, conn) => {
    if (msg.class !== 'request') return
    if (msg.method === StunMethod.ALLOCATE) conn.socket.write(allocateSuccess(msg))
    else if (msg.method === StunMethod.CREATE_PERMISSION) conn.socket.write(successTo(msg))
    else if (msg.method === StunMethod.CONNECT) {
      const peer = msg.xorAddress(StunAttr.XOR_PEER_ADDRESS)!
      if (peer.port === 7) conn.socket.write(StunMessageBuilder.responseTo(msg, 'error').addErrorCode(447, 'Connection Timeout or Failure').build({ fingerprint: false }))
      else if (peer.port === 8) conn.socket.write(StunMessageBuilder.responseTo(msg, 'error').addErrorCode(403, 'Forbidden').build({ fingerprint: false }))
      else if (peer.port === 9)
        conn.socket.write(successTo(msg)) // no CONNECTION-ID
      else conn.socket.write(successTo(msg, (b) => b.add(StunAttr.CONNECTION_ID, encodeConnectionId(42))))
    } else if (msg.method === StunMethod.CONNECTION_BIND) {
      // the response and the peer's first bytes in one write, as a server may send them
      conn.socket.write(Buffer.concat([successTo(msg), Buffer.from('peer bytes right after the response')]))
      // after the bind, whatever we get is raw: echo it
      conn.raw = (d) => {
        if (d.length > 0) conn.socket.write(d)
      }
    }
  })
  try {
    const allocation = await TurnTcpClient.allocate({ server: `127.0.0.1:${server.port}`, username: 'u', password: 'p' })
    const stream = await allocation.connect({ address: '127.0.0.2', port: 4000 })
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve))
    assert.equal(first.toString(), 'peer bytes right after the response')
    stream.write('raw after bind')
    const echoed = await new Promise<Buffer>((resolve) => stream.once('data', resolve))
    assert.equal(echoed.toString(), 'raw after bind')
    await assert.rejects(allocation.connect({ address: '127.0.0.2', port: 7 }), (e) => isDhtnetError(e, 'TURN_UNREACHABLE') && /447/.test((e as Error).message))
    await assert.rejects(allocation.connect({ address: '127.0.0.2', port: 8 }), (e) => isDhtnetError(e, 'TURN_REFUSED') && /403/.test((e as Error).message))
    await assert.rejects(allocation.connect({ address: '127.0.0.2', port: 9 }), (e) => isDhtnetError(e, 'STUN_ERROR'))
    await assert.rejects(allocation.connect({ address: '::1', port: 10 }), (e) => isDhtnetError(e, 'TURN_REFUSED'))
    assert.equal(allocation.closed, false)
    await allocation.close()
    assert.ok(stream.destroyed, 'close() ends the relayed streams')
  } finally {
    await server.close()
  }
})
