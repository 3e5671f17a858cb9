import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FrameDecoder, encodeFrame } from '../src/transport/ice-tcp/framing.js'
import { parseIceMessage, MAX_REMOTE_CANDIDATES } from '../src/transport/ice-tcp/candidates.js'
import { isDhtnetError } from '../src/errors.js'
import { loadIceMessages } from './helpers/dhtnet-captures.js'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'

test('fuzz: RFC 4571 decoder with 100,000 random streams and cuts; bounded buffering; only TRANSPORT_ERROR escapes', () => {
  const next = rng(0x4571)
  const heapBefore = heapUsedAfterGc()
  const started = performance.now()
  let frames = 0
  for (let i = 0; i < 100_000; i++) {
    const d = new FrameDecoder(next() % 2 ? 2048 : 65535)
    // half the streams are valid frames, then mutated; the rest are garbage
    let stream: Buffer
    if (i % 2) {
      const parts: Buffer[] = []
      for (let k = next() % 6; k > 0; k--) parts.push(encodeFrame(randomBuffer(next, 300)))
      stream = mutateBytes(Buffer.concat(parts), next)
    } else stream = randomBuffer(next, 512)
    try {
      let at = 0
      while (at < stream.length) {
        const n = 1 + (next() % 64)
        d.push(stream.subarray(at, at + n))
        at += n
        for (let f = d.next(); f; f = d.next()) {
          frames++
          assert.ok(f.length <= d.maxFrameBytes)
        }
        assert.ok(d.bufferedBytes <= d.maxFrameBytes + 2 + 64)
      }
    } catch (err) {
      assert.ok(isDhtnetError(err, 'TRANSPORT_ERROR'), String(err))
    }
  }
  assert.ok(frames > 10_000)
  assert.ok(heapUsedAfterGc() - heapBefore < 32 * 1024 * 1024)
  assert.ok(performance.now() - started < 120_000)
})

test('fuzz: ice_msg parser with 100,000 random and mutated descriptions; only BAD_ICE_MESSAGE escapes; results bounded', () => {
  const seeds = Object.values(loadIceMessages()).map((m) => Buffer.from(m.ice_msg))
  const tokens = ['typ', 'tcptype', 'TCP', 'UDP', 'host', 'srflx', 'relay', 'active', 'passive', 'so', '\n', ' ', '::', ':', '4294967296', '65536', '9', '1']
  const next = rng(0x1ce)
  const heapBefore = heapUsedAfterGc()
  const started = performance.now()
  let parsed = 0
  let candidates = 0
  for (let i = 0; i < 100_000; i++) {
    let text: string
    const kind = i % 4
    if (kind === 0) text = randomBuffer(next, 400).toString('latin1')
    else if (kind === 1) {
      text = mutateBytes(seeds[next() % seeds.length]!, next).toString('utf8')
    } else if (kind === 2) {
      // token soup: line-shaped nonsense
      const parts = ['u', '\n', 'p', '\n']
      for (let k = next() % 40; k > 0; k--) parts.push(tokens[next() % tokens.length]!)
      text = parts.join(next() % 2 ? ' ' : '')
    } else {
      const lines = seeds[next() % seeds.length]!.toString().split('\n')
      const a = next() % lines.length
      const b = next() % lines.length
      ;[lines[a], lines[b]] = [lines[b]!, lines[a]!]
      text = lines.join('\n').repeat(1 + (next() % 12))
    }
    try {
      const d = parseIceMessage(text)
      parsed++
      candidates += d.candidates.length
      assert.ok(d.candidates.length <= MAX_REMOTE_CANDIDATES)
      for (const c of d.candidates) {
        assert.ok(c.port >= 0 && c.port <= 65535 && c.component === 1)
        assert.ok([4, 6].includes(c.family))
      }
    } catch (err) {
      assert.ok(isDhtnetError(err, 'BAD_ICE_MESSAGE'), String(err))
    }
  }
  assert.ok(parsed > 20_000 && candidates > 20_000, `${parsed} parsed, ${candidates} candidates`)
  assert.ok(heapUsedAfterGc() - heapBefore < 32 * 1024 * 1024)
  assert.ok(performance.now() - started < 120_000)
})
