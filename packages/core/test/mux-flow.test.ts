// Flow control, fairness and bulk throughput of the multiplexer over the in-memory transport pair.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import type { ChannelSocket } from '../src/mux/index.js'
import { waitFor, type MuxPair, withPair } from './helpers/memory-transport.js'

async function openPair(pair: MuxPair, name: string): Promise<[ChannelSocket, ChannelSocket]> {
  const accepted = waitFor<ChannelSocket>(pair.b, 'channel')
  const local = await pair.a.openChannel(name)
  return [local, await accepted]
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `cond` every 10 ms for up to 5 s. */
async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await sleep(10)
  assert.ok(cond(), 'condition not reached within 5 s')
}

test('backpressure: a paused reader stops its sender after one window, memory stays bounded, another channel keeps flowing', () =>
  withPair({ a: { channelWindowBytes: 256 * 1024 }, b: { channelWindowBytes: 256 * 1024 } }, async (pair) => {
    const [slowTx, slowRx] = await openPair(pair, 'slow')
    const [fastTx, fastRx] = await openPair(pair, 'fast')
    slowRx.pause() // the application stops reading this channel

    // writer on the slow channel: respects write()'s return value; gets stuck once the window is used up
    let offered = 0
    let writerBlocked = false
    const chunk = Buffer.alloc(16 * 1024, 1)
    for (let i = 0; i < 10_000 && !writerBlocked; i++) {
      offered += chunk.length
      if (!slowTx.write(chunk)) {
        const drained = await Promise.race([new Promise((r) => slowTx.once('drain', () => r(true))), sleep(100).then(() => false)])
        writerBlocked = !drained // 'drain' did not come: the paused reader stopped us
      }
    }
    assert.ok(writerBlocked, 'the writer was stopped')
    assert.ok(offered < 10_000 * chunk.length)

    // only about one window plus the stream buffers moved; the rest waits in the writer (which stopped writing)
    const window = 256 * 1024
    const heldByReceiver = slowRx.readableLength + slowRx.pendingReceiveBytes
    assert.ok(slowTx.bytesWritten <= window + slowRx.readableHighWaterMark, `sent ${slowTx.bytesWritten} bytes`)
    assert.ok(heldByReceiver <= window + slowRx.readableHighWaterMark, `receiver holds ${heldByReceiver} bytes`)
    assert.ok(slowTx.writableLength <= slowTx.writableHighWaterMark + chunk.length)
    assert.equal(slowTx.writableNeedDrain, true)

    // meanwhile a second channel moves 32 MiB
    const total = 32 * 1024 * 1024
    let got = 0
    const done = new Promise<void>((resolve) => {
      fastRx.on('data', (c: Buffer) => {
        got += c.length
        if (got === total) resolve()
      })
    })
    const big = Buffer.alloc(1024 * 1024, 2)
    for (let i = 0; i < 32; i++) if (!fastTx.write(big)) await new Promise((r) => fastTx.once('drain', r))
    await done
    assert.equal(got, total)
    assert.equal(slowTx.bytesWritten <= window + slowRx.readableHighWaterMark, true, 'the slow channel did not move meanwhile')

    // the reader resumes: everything arrives, byte count exact
    let slowGot = 0
    slowRx.on('data', (c: Buffer) => (slowGot += c.length))
    slowRx.resume()
    await new Promise((r) => slowTx.once('drain', r))
    slowTx.end()
    await new Promise((r) => slowRx.once('end', r))
    assert.equal(slowGot, offered)
    fastTx.end()
    fastRx.end()
  }))

test('backpressure across a congested transport: writes wait, nothing is lost, the transport buffer stays bounded', () =>
  withPair({ a: { sendHighWaterBytes: 256 * 1024 } }, async (pair) => {
    const [tx, rx] = await openPair(pair, 'congested')
    pair.ta.pause() // the link stops: bufferedAmount grows until the mux stops feeding it
    let offered = 0
    const chunk = Buffer.alloc(64 * 1024, 3)
    for (let i = 0; i < 100; i++) {
      offered += chunk.length
      if (!tx.write(chunk)) break
    }
    await sleep(50)
    assert.ok(pair.ta.bufferedAmount <= 256 * 1024 + 64 * 1024 + 64, `transport holds ${pair.ta.bufferedAmount}`)
    const hash = createHash('sha256')
    let got = 0
    rx.on('data', (c: Buffer) => {
      got += c.length
      hash.update(c)
    })
    const ended = new Promise((r) => rx.once('end', r))
    pair.ta.resume()
    tx.end()
    await ended
    assert.equal(got, offered)
  }))

test('a second open channel shortens the transport buffer (sharedSendHighWaterBytes): a small message waits behind at most that much bulk', () =>
  withPair({ a: { sendHighWaterBytes: 512 * 1024, sharedSendHighWaterBytes: 64 * 1024 } }, async (pair) => {
    const frameBytes = 64 * 1024 + 64 // one DATA frame and its header may go over the mark
    const fill = async (tx: ChannelSocket): Promise<void> => {
      // 768 KiB queued in the channel whatever write() says (more than either mark), then time for the pump
      for (let i = 0; i < 12; i++) tx.write(Buffer.alloc(64 * 1024, 5))
      await sleep(50)
    }
    // one channel: the transport may hold the long buffer
    const [bulkTx, bulkRx] = await openPair(pair, 'bulk')
    pair.ta.pause()
    await fill(bulkTx)
    const alone = pair.ta.bufferedAmount
    assert.ok(alone > 256 * 1024 && alone <= 512 * 1024 + frameBytes, `one channel: transport holds ${alone}`)
    // drain it, then open a second channel: the same bulk now stops at the short mark
    let got = 0
    bulkRx.on('data', (c: Buffer) => (got += c.length))
    pair.ta.resume()
    await waitUntil(() => pair.ta.bufferedAmount === 0)
    const [keyTx, keyRx] = await openPair(pair, 'keys')
    pair.ta.pause()
    await fill(bulkTx)
    const shared = pair.ta.bufferedAmount
    assert.ok(shared <= 64 * 1024 + frameBytes, `two channels: transport holds ${shared}`)
    // the small message is queued behind that much bulk only, and arrives once the link moves
    const key = new Promise<Buffer>((r) => keyRx.once('data', r))
    keyTx.write(Buffer.from('k'))
    pair.ta.resume()
    assert.equal((await key).toString(), 'k')
    assert.ok(got > 0)
  }))

test('fairness: a small message on one channel arrives while another channel moves bulk data (latency logged)', () =>
  withPair({}, async (pair) => {
    const [bulkTx, bulkRx] = await openPair(pair, 'bulk')
    const [pingTx, pingRx] = await openPair(pair, 'interactive')
    let bulkGot = 0
    bulkRx.on('data', (c: Buffer) => (bulkGot += c.length))
    let stop = false as boolean // set once the small messages are through
    const block = Buffer.alloc(1024 * 1024, 4)
    const pump = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) if (!bulkTx.write(block)) await new Promise((r) => bulkTx.once('drain', r))
    })()
    await sleep(100) // bulk at full speed
    const latencies: number[] = []
    for (let i = 0; i < 20; i++) {
      const sent = performance.now()
      const arrived = new Promise((r) => pingRx.once('data', r))
      pingTx.write(`ping ${i}`)
      await arrived
      latencies.push(performance.now() - sent)
      await sleep(5)
    }
    stop = true
    await pump
    latencies.sort((x, y) => x - y)
    const median = latencies[latencies.length >> 1]!
    const max = latencies[latencies.length - 1]!
    console.log(
      `# fairness: small-message latency during bulk: median ${median.toFixed(2)} ms, max ${max.toFixed(2)} ms; bulk moved ${(bulkGot / 1048576).toFixed(0)} MiB meanwhile`,
    )
    assert.equal(latencies.length, 20, 'every small message arrived during the bulk transfer')
    assert.ok(bulkGot > 0)
    bulkTx.destroy()
    pingTx.destroy()
    bulkRx.on('error', () => {})
    pingRx.on('error', () => {})
  }))

test('bulk: 256 MiB byte-exact over one channel (SHA-256), throughput logged', () =>
  withPair({}, async (pair) => {
    const [tx, rx] = await openPair(pair, 'bulk')
    const total = 256 * 1024 * 1024
    const block = randomBytes(1024 * 1024)
    const sentHash = createHash('sha256')
    const gotHash = createHash('sha256')
    let got = 0
    rx.on('data', (c: Buffer) => {
      got += c.length
      gotHash.update(c)
    })
    const ended = new Promise((r) => rx.once('end', r))
    const started = performance.now()
    for (let i = 0; i < total / block.length; i++) {
      const c = Buffer.from(block)
      c.writeUInt32BE(i, 0)
      sentHash.update(c)
      if (!tx.write(c)) await new Promise((r) => tx.once('drain', r))
    }
    tx.end()
    await ended
    const seconds = (performance.now() - started) / 1000
    console.log(`# bulk: 256 MiB in ${seconds.toFixed(2)} s = ${(total / 1e6 / seconds).toFixed(0)} MB/s (with SHA-256 on both ends)`)
    assert.equal(got, total)
    assert.equal(gotHash.digest('hex'), sentHash.digest('hex'))
    rx.end()
  }))

test('many small writes are coalesced and arrive in order', () =>
  withPair({}, async (pair) => {
    const [tx, rx] = await openPair(pair, 'small')
    const expected: Buffer[] = []
    for (let i = 0; i < 20_000; i++) {
      const b = Buffer.from(`${i},`)
      expected.push(b)
      if (!tx.write(b)) await new Promise((r) => tx.once('drain', r))
    }
    tx.end()
    const chunks: Buffer[] = []
    rx.on('data', (c: Buffer) => chunks.push(c))
    await new Promise((r) => rx.once('end', r))
    assert.deepEqual(Buffer.concat(chunks), Buffer.concat(expected))
    assert.ok(pair.ta.messagesSent < 20_000, `coalesced into ${pair.ta.messagesSent} messages`)
    rx.end()
  }))

test('tiny windows and frames: credit is returned correctly, 2 MiB arrive byte-exact through a 1,000-byte window', () =>
  withPair({ a: { channelWindowBytes: 1000, maxFramePayloadBytes: 300 }, b: { channelWindowBytes: 1000, maxFramePayloadBytes: 300 } }, async (pair) => {
    const [tx, rx] = await openPair(pair, 'tiny')
    const data = randomBytes(2 * 1024 * 1024)
    const back = randomBytes(300_000)
    const gotAtB: Buffer[] = []
    const gotAtA: Buffer[] = []
    rx.on('data', (c: Buffer) => gotAtB.push(c))
    tx.on('data', (c: Buffer) => gotAtA.push(c))
    const bEnded = new Promise((r) => rx.once('end', r))
    const aEnded = new Promise((r) => tx.once('end', r))
    tx.end(data)
    rx.end(back)
    await Promise.all([aEnded, bEnded])
    assert.ok(Buffer.concat(gotAtB).equals(data))
    assert.ok(Buffer.concat(gotAtA).equals(back))
    assert.ok(Math.max(...gotAtB.map((c) => c.length)) <= 300, 'frames respect maxFramePayloadBytes')
  }))
