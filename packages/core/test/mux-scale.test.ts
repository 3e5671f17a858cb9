// Many channels, channel churn without memory growth, keepalive and dead-peer detection.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { isDhtnetError } from '../src/errors.js'
import type { ChannelSocket } from '../src/mux/index.js'
import { readAll, waitFor, withPair } from './helpers/memory-transport.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function gc(): () => void {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

test('1,000 concurrent channels, opened from both sides, each echoing its own bytes', () =>
  withPair({}, async (pair) => {
    const echo = (c: ChannelSocket): void => {
      c.pipe(c) // echo until the peer ends, then end
    }
    pair.a.on('channel', echo)
    pair.b.on('channel', echo)
    const opened = await Promise.all(Array.from({ length: 1000 }, (_, i) => (i % 2 ? pair.a : pair.b).openChannel(`chan-${i}`)))
    assert.equal(pair.a.stats().channels, 1000)
    assert.equal(pair.b.stats().channels, 1000)
    assert.equal(new Set(pair.a.channels().map((c) => c.id)).size, 1000, 'ids are unique')
    const results = await Promise.all(
      opened.map(async (c, i) => {
        const got = readAll(c)
        c.end(`payload of channel ${i} `.repeat(50))
        return (await got).toString() === `payload of channel ${i} `.repeat(50)
      }),
    )
    assert.equal(results.filter(Boolean).length, 1000)
    await sleep(10)
    assert.equal(pair.a.stats().channels, 0)
    assert.equal(pair.b.stats().channels, 0)
  }))

test('100,000 channels opened and closed in sequence: tables empty, heap bounded', () =>
  withPair({}, async (pair) => {
    const collect = gc()
    pair.b.on('channel', (c: ChannelSocket) => {
      c.resume()
      c.end()
    })
    const cycle = async (i: number): Promise<void> => {
      const c = await pair.a.openChannel(`churn-${i}`)
      const closed = new Promise((r) => c.once('close', r))
      c.resume()
      c.end('x')
      await closed
    }
    // strictly one after the other: open, write, end both ways, wait for close
    const run = async (from: number, to: number): Promise<void> => {
      for (let i = from; i < to; i++) await cycle(i)
    }
    await run(0, 5000) // warm-up
    await sleep(10)
    collect()
    const before = process.memoryUsage().heapUsed
    const started = performance.now()
    await run(5000, 100_000)
    const seconds = (performance.now() - started) / 1000
    await sleep(10)
    collect()
    const growth = process.memoryUsage().heapUsed - before
    console.log(`# churn: 95,000 open/close cycles in ${seconds.toFixed(1)} s; heap growth ${(growth / 1048576).toFixed(2)} MiB`)
    assert.equal(pair.a.stats().channels, 0)
    assert.equal(pair.b.stats().channels, 0)
    assert.equal(pair.a.stats().pendingOpens, 0)
    assert.equal(pair.b.stats().pendingRequests, 0)
    assert.equal(pair.a.stats().scheduled, 0)
    // generous: a leak of even 100 bytes per channel would show 9.5 MB
    assert.ok(growth < 8 * 1024 * 1024, `heap grew by ${growth} bytes`)
  }))

test('keepalive: an idle connection stays up; both sides ping each other', () =>
  withPair({ a: { keepaliveIntervalMs: 50, deadPeerTimeoutMs: 1000 }, b: { keepaliveIntervalMs: 50, deadPeerTimeoutMs: 1000 } }, async (pair) => {
    pair.b.on('channel', () => {})
    const ch = await pair.a.openChannel('idle')
    const sentBefore = pair.ta.messagesSent
    await sleep(1500)
    assert.equal(pair.a.closed, false)
    assert.equal(pair.b.closed, false)
    assert.ok(pair.ta.messagesSent > sentBefore, 'pings were sent while idle')
    assert.equal(ch.destroyed, false)
  }))

test('dead peer: when the peer stops answering, every channel errors with PEER_UNREACHABLE', () =>
  withPair({ a: { keepaliveIntervalMs: 100, deadPeerTimeoutMs: 600 } }, async (pair) => {
    pair.b.on('channel', (c: ChannelSocket) => c.on('error', () => {}))
    const chans = await Promise.all([pair.a.openChannel('1'), pair.a.openChannel('2'), pair.a.openChannel('3')])
    const errors = chans.map((c) => new Promise<Error>((resolve) => c.once('error', resolve)))
    const closes = chans.map((c) => new Promise((resolve) => c.once('close', resolve)))
    // mid-transfer on one of them
    chans[0].write(Buffer.alloc(100_000))
    const started = performance.now()
    pair.tb.blackhole() // b's process "died": nothing it sends arrives any more
    const muxErr = await waitFor<Error>(pair.a, 'close')
    const elapsed = performance.now() - started
    assert.ok(isDhtnetError(muxErr, 'PEER_UNREACHABLE'))
    for (const e of await Promise.all(errors)) assert.ok(isDhtnetError(e, 'PEER_UNREACHABLE'), e.message)
    await Promise.all(closes)
    console.log(`# dead peer noticed after ${elapsed.toFixed(0)} ms (deadPeerTimeoutMs 600)`)
    await assert.rejects(pair.a.openChannel('after'), (e) => isDhtnetError(e, 'PEER_UNREACHABLE'))
  }))

test('probe(): a missing pong closes the multiplexer with PEER_UNREACHABLE', () =>
  withPair({}, async (pair) => {
    pair.b.on('channel', (c: ChannelSocket) => c.on('error', () => {}))
    const ch = await pair.a.openChannel('x')
    const chErr = new Promise<Error>((resolve) => ch.once('error', resolve))
    assert.ok((await pair.a.probe(500)) >= 0)
    pair.tb.blackhole()
    await assert.rejects(pair.a.probe(100), (e) => isDhtnetError(e, 'PEER_UNREACHABLE'))
    assert.equal(pair.a.closed, true)
    assert.ok(isDhtnetError(await chErr, 'PEER_UNREACHABLE'))
  }))
