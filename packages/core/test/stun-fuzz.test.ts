import { test } from 'node:test'
import assert from 'node:assert/strict'
import { StunMessage, StunMessageBuilder, StunAttr, BINDING_REQUEST, shortTermKey, verifyIntegrity, verifyFingerprint } from '../src/transport/stun/index.js'
import { isDhtnetError } from '../src/errors.js'
import { SCENARIOS, stunFrames } from './helpers/dhtnet-captures.js'
import { heapUsedAfterGc, mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'

test('fuzz: 200,000 random and mutated STUN messages; only STUN_ERROR escapes; heap bounded', () => {
  const seeds: Buffer[] = SCENARIOS.flatMap((s) => stunFrames(s).map(({ frame }) => Buffer.from(frame.hex, 'hex')))
  seeds.push(
    new StunMessageBuilder(BINDING_REQUEST)
      .addText(StunAttr.USERNAME, 'a:b')
      .addXorAddress(StunAttr.XOR_MAPPED_ADDRESS, { address: '2001:db8::1', port: 1 })
      .addErrorCode(487, 'x')
      .addUnknownAttributes([1, 2])
      .build({ integrityKey: shortTermKey('k') }),
  )
  const next = rng(0x5eed)
  const key = shortTermKey('4d374fab49773be411e784e6')
  const started = performance.now()
  const heapBefore = heapUsedAfterGc()
  let decoded = 0
  for (let i = 0; i < 200_000; i++) {
    let input: Buffer
    if (i % 4 === 0) {
      input = randomBuffer(next, 128)
      if (input.length >= 8 && next() % 2) input.writeUInt32BE(0x2112a442, 4)
    } else input = mutateBytes(seeds[next() % seeds.length]!, next)
    try {
      const m = StunMessage.decode(input)
      decoded++
      // every accessor, as the agent would call them
      for (const get of [
        () => m.username,
        () => m.priority,
        () => m.iceControlled,
        () => m.iceControlling,
        () => m.xorMappedAddress,
        () => m.mappedAddress,
        () => m.errorCode,
        () => m.unknownAttributes,
        () => m.software,
        () => m.useCandidate,
      ]) {
        try {
          get()
        } catch (err) {
          assert.ok(isDhtnetError(err, 'STUN_ERROR'), String(err))
        }
      }
      verifyIntegrity(m, key)
      verifyFingerprint(m)
    } catch (err) {
      assert.ok(isDhtnetError(err, 'STUN_ERROR'), `input ${input.toString('hex')}: ${String(err)}`)
    }
  }
  const grown = heapUsedAfterGc() - heapBefore
  assert.ok(decoded > 1000, `only ${decoded} inputs decoded: the mutations are too destructive to be useful`)
  assert.ok(grown < 32 * 1024 * 1024, `heap grew ${grown} bytes`)
  assert.ok(performance.now() - started < 120_000)
})
