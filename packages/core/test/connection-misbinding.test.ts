/**
 * Identity misbinding (unknown key share, issue 12 item 9): a device M trusted by both A and B relays A's request
 * to B as its own, and B's answer to A as its own. A and B then reach each other directly, A believing it talks to
 * M, B believing M called. The connection must fail on both sides, on every transport path.
 */
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createPublicKey } from 'node:crypto'
import { isDhtnetError } from '../src/errors.js'
import { SecureDht } from '../src/dht/secure-dht.js'
import { PEER_REQUEST_USER_TYPE, decodeRequest, encodeRequest } from '../src/connection/signalling.js'
import type { TransportPolicy } from '../src/connection/transports.js'
import { TestNet, startDhtNode, type TestDevice } from './helpers/testnet.js'

let net: TestNet
let stopRelay: (() => Promise<void>) | undefined

before(async () => {
  net = await TestNet.create()
})

after(async () => {
  await stopRelay?.()
  await (net as TestNet | undefined)?.close() // undefined when before() failed
})

/** M: a relay that re-signs A's requests for B and B's answers for A. */
async function startRelay(mallory: Awaited<ReturnType<TestNet['newIdentity']>>, a: TestDevice, b: TestDevice): Promise<{ relayed: () => number; stop: () => Promise<void> }> {
  const node = await startDhtNode(net.bootstrapPort)
  const dht = new SecureDht(node, mallory, { log: () => {} })
  await dht.start()
  const malloryPem = mallory.chain.map((c) => c.toString()).join('')
  let relayed = 0
  const spki = (der: Buffer) => createPublicKey({ key: der, format: 'der', type: 'spki' })
  const listen = dht.listen(SecureDht.peerKey(mallory.longId), (values, expired) => {
    if (expired) return
    for (const v of values) {
      if (v.userType !== PEER_REQUEST_USER_TYPE || !v.owner) continue
      const req = decodeRequest(v.data)
      const from = createPublicKey({ key: v.owner, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' })
      const fromA = from.equals(a.identity.publicKeyDer)
      const fromB = from.equals(b.identity.publicKeyDer)
      if (!req.isAnswer && fromA) {
        // A's request, re-signed by M for B (with M's own certificate, so B believes M is calling)
        relayed++
        void dht.putEncrypted(SecureDht.peerKey(b.identity.longId), spki(b.identity.publicKeyDer), {
          data: encodeRequest({ ...req, certificate: malloryPem }),
          userType: PEER_REQUEST_USER_TYPE,
        })
      } else if (req.isAnswer && fromB) {
        // B's answer, re-signed by M for A
        relayed++
        void dht.putEncrypted(SecureDht.peerKey(a.identity.longId), spki(a.identity.publicKeyDer), {
          data: encodeRequest(req),
          userType: PEER_REQUEST_USER_TYPE,
        })
      }
    }
  })
  return {
    relayed: () => relayed,
    stop: async () => {
      listen.cancel()
      dht.close()
      await node.stop()
    },
  }
}

for (const policy of ['webrtc', 'tcp'] as TransportPolicy[]) {
  test(`a device trusted by both sides cannot relay a connection between them (${policy})`, async () => {
    const mallory = await net.newIdentity('mallory')
    const alice = await net.addDevice(`alice-${policy}`, { transport: policy, connectTimeoutMs: 8000 })
    let bobChannels = 0
    const bob = await net.addDevice(`bob-${policy}`, {
      transport: policy,
      connectTimeoutMs: 8000,
      onChannelRequest: () => {
        bobChannels++
        return true
      },
    })
    const relay = await startRelay(mallory, alice, bob)
    stopRelay = relay.stop
    const failure = await alice.cm.connectDevice(mallory.chain, 'echo', { timeoutMs: 8000 }).then(
      () => undefined,
      (err: unknown) => err,
    )
    assert.equal(relay.relayed(), 2, 'the relay passed the request and the answer')
    if (policy === 'webrtc') {
      // the DTLS certificates are the library's: the signed binding after the handshake catches the relay
      assert.ok(isDhtnetError(failure, 'IDENTITY_MISMATCH'), `expected IDENTITY_MISMATCH, got ${String(failure)}`)
      assert.match((failure as Error).message, /not .* the device that signed the signalling/)
    } else {
      // TLS runs with the device certificates, pinned to the signer of the signalling. Bob (the TLS client) sees
      // alice's certificate first, not mallory's, and drops the handshake: alice sees it fail (or, if her own
      // check runs first, refuses bob's certificate herself)
      assert.ok(isDhtnetError(failure, 'TLS_FAILED') || isDhtnetError(failure, 'UNTRUSTED'), `expected TLS_FAILED or UNTRUSTED, got ${String(failure)}`)
    }
    assert.equal(alice.cm.connections().length, 0)
    // bob never got a working connection nor a channel from it
    for (let i = 0; i < 50 && bob.cm.requestStats().handled === 0; i++) await new Promise((r) => setTimeout(r, 20))
    assert.equal(bob.cm.requestStats().handled, 1)
    assert.equal(bob.cm.requestStats().connected, 0)
    assert.equal(bob.cm.connections().length, 0)
    assert.equal(bobChannels, 0)
    await relay.stop()
    stopRelay = undefined
  })
}
