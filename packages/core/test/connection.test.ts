/**
 * ConnectionManager over a real in-process DHT (bootstrap node + one DhtNode per device, all on 127.0.0.1).
 * Real processes: connection-process.test.ts.
 */
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import { isDhtnetError } from '../src/errors.js'
import type { StreamChannel } from '../src/mux/mux.js'
import type { DatagramChannel } from '../src/mux/native/datagram-channel.js'
import { issueCertificate } from '../src/identity/certificate.js'
import { makeIdentity } from '../src/identity/identity.js'
import { generateIdentity, generateRsaKey } from '../src/identity/generate.js'
import { livePeerConnections } from '../src/transport/webrtc/native.js'
import { TestNet, type TestDevice } from './helpers/testnet.js'

let net: TestNet
let alice: TestDevice
let bob: TestDevice

/** bob's services: echo*, half-close "reverse", "paused" (never read), "dgram" datagram echo; declines "secret". */
function bobReady(_peer: string, name: string, socket: StreamChannel | DatagramChannel): void {
  if ('initiator' in socket && socket.initiator) return
  if (!('pipe' in socket)) {
    const d = socket
    d.on('message', (m: Buffer) => d.send(Buffer.concat([Buffer.from('dg:'), m])))
    return
  }
  const s = socket
  s.on('error', () => {})
  if (name.startsWith('echo')) s.pipe(s)
  else if (name === 'reverse') {
    const parts: Buffer[] = []
    s.on('data', (d: Buffer) => parts.push(d))
    s.on('end', () => {
      // half-close: our side still writes after the peer ended
      s.write(Buffer.concat(parts).reverse())
      s.end('!')
    })
  } else if (name === 'paused') {
    s.pause()
  }
}

before(async () => {
  net = await TestNet.create()
  alice = await net.addDevice('alice')
  bob = await net.addDevice('bob', {
    onConnectionReady: bobReady,
    onChannelRequest: (_cert, name) => (name === 'secret' ? { accept: false, reason: 'secret is not served here' } : true),
  })
})

after(async () => {
  await (net as TestNet | undefined)?.close() // undefined when before() failed
  // every peer connection of this file is gone: the native threads can be released
  assert.equal(livePeerConnections(), 0)
})

async function roundTrip(sock: StreamChannel, text: string): Promise<string> {
  sock.write(text)
  let got = ''
  while (got.length < text.length) {
    const [data] = (await once(sock, 'data')) as [Buffer]
    got += String(data)
  }
  return got
}

test('connect by 40-hex id and by 64-hex id; both share one connection', async () => {
  const s1 = await alice.cm.connectDevice(bob.identity.id, 'echo-1')
  assert.equal(await roundTrip(s1, 'hello'), 'hello')
  assert.equal(alice.cm.isConnected(bob.identity.id), true)
  assert.equal(alice.cm.isConnected(bob.identity.longId), true)
  const s2 = await alice.cm.connectDevice(bob.identity.longId, 'echo-2')
  assert.equal(await roundTrip(s2, 'world'), 'world')
  const conns = alice.cm.connections()
  assert.equal(conns.length, 1)
  assert.equal(conns[0]!.peerId, bob.identity.longId)
  assert.equal(conns[0]!.peerKeyId, bob.identity.id)
  assert.equal(conns[0]!.initiator, true)
  assert.equal(conns[0]!.mux, 'native')
  const policy = process.env.DHTNET_TEST_TRANSPORT
  if (policy === 'tcp' || policy === 'webrtc') assert.equal(conns[0]!.transport, policy === 'tcp' ? 'ice-tcp' : 'webrtc')
  assert.match(conns[0]!.path, new RegExp(`^${conns[0]!.transport} `))
  assert.match(conns[0]!.candidatePair ?? '', /^host\//)
  assert.match(conns[0]!.remoteAddress ?? '', /^127\.0\.0\.1:\d+$/)
  assert.ok(conns[0]!.bytesOut > 0 && conns[0]!.bytesIn > 0)
  assert.deepEqual(
    alice.cm
      .channels(conns[0]!)
      .map((c) => c.name)
      .sort(),
    ['echo-1', 'echo-2'],
  )
  // the peer sees the same single connection, as responder
  const theirs = bob.cm.connections(alice.identity.id)
  assert.equal(theirs.length, 1)
  assert.equal(theirs[0]!.initiator, false)
  assert.equal(theirs[0]!.id, conns[0]!.id)
  s1.destroy()
  s2.destroy()
})

test('by certificate; uniqueName returns the live channel; datagram channel', async () => {
  const a = await alice.cm.connectDevice(bob.identity.certificate, 'echo-unique', { uniqueName: true })
  const b = await alice.cm.connectDevice(bob.identity.id, 'echo-unique', { uniqueName: true })
  assert.equal(a, b)
  const d = await alice.cm.connectDevice(bob.identity.id, 'dgram', { datagram: true })
  const got = new Promise<Buffer>((resolve) => d.once('message', resolve))
  d.send(Buffer.from('ping'))
  assert.equal(String(await got), 'dg:ping')
  d.close()
  a.destroy()
})

test("channel declined with the peer's reason; unknown id → CERT_NOT_FOUND; bad ids; noNewSocket", async () => {
  await assert.rejects(alice.cm.connectDevice(bob.identity.id, 'secret'), (e: unknown) => isDhtnetError(e, 'CHANNEL_DECLINED') && /secret is not served/.test(e.message))
  // the connection survives a declined channel
  const s = await alice.cm.connectDevice(bob.identity.id, 'echo-after-decline')
  assert.equal(await roundTrip(s, 'still here'), 'still here')
  s.destroy()
  await assert.rejects(alice.cm.connectDevice(randomBytes(20).toString('hex'), 'x', { timeoutMs: 10_000 }), (e: unknown) => isDhtnetError(e, 'CERT_NOT_FOUND'))
  await assert.rejects(alice.cm.connectDevice('not-an-id', 'x'), (e: unknown) => isDhtnetError(e, 'BAD_PEER_ID'))
  await assert.rejects(alice.cm.connectDevice(alice.identity.id, 'x'), (e: unknown) => isDhtnetError(e, 'BAD_PEER_ID'))
  const carol = await net.addDevice('carol-nonew')
  await assert.rejects(carol.cm.connectDevice(bob.identity.id, 'echo', { noNewSocket: true }), (e: unknown) => isDhtnetError(e, 'NOT_CONNECTED'))
  assert.equal(carol.cm.connections().length, 0)
})

test('decline at ICE request → REFUSED, before any ICE work on the responder', async () => {
  let asked = 0
  const picky = await net.addDevice('picky', {
    onIceRequest: () => {
      asked++
      return false
    },
  })
  await assert.rejects(alice.cm.connectDevice(picky.identity.id, 'echo'), (e: unknown) => isDhtnetError(e, 'REFUSED'))
  assert.equal(asked, 1)
  assert.equal(picky.cm.connections().length, 0)
  assert.equal(alice.cm.isConnected(picky.identity.id), false)
})

test('untrusted CA: refused by the responder and by the requester in non-anonymous mode; anonymous accepts', async () => {
  const otherCa = await generateIdentity({ name: 'other-ca', keySize: 2048 })
  const carol = await net.addDevice('carol', { identity: await net.newIdentity('carol', otherCa), trustedCas: [otherCa, net.ca] })
  // bob trusts only the testnet CA: carol's request is refused, and she is told (within bob's refusal budget)
  const before = bob.cm.requestStats()
  await assert.rejects(carol.cm.connectDevice(bob.identity.id, 'echo'), (e: unknown) => isDhtnetError(e, 'UNTRUSTED'))
  assert.equal(bob.cm.requestStats().untrusted, before.untrusted + 1)
  assert.equal(bob.cm.requestStats().untrustedTold, before.untrustedTold + 1)
  assert.equal(bob.cm.connections(carol.identity.id).length, 0)
  // a device that keeps DHTNet's silence: carol learns nothing and times out
  const frank = await net.addDevice('frank', { refuseUntrusted: 'never' })
  await assert.rejects(carol.cm.connectDevice(frank.identity.id, 'echo', { timeoutMs: 3000 }), (e: unknown) => isDhtnetError(e, 'TIMEOUT') && /answer/.test(e.message))
  assert.deepEqual([frank.cm.requestStats().untrusted, frank.cm.requestStats().untrustedTold], [1, 0])
  // a flood of untrusted requests: refusals (a signature and a DHT put each) stay within their budget
  const gate = await net.addDevice('gate')
  const t0 = performance.now()
  const flood = await Promise.allSettled(Array.from({ length: 12 }, () => carol.cm.connectDevice(gate.identity.id, 'echo', { forceNewSocket: true, timeoutMs: 3000 })))
  const seconds = (performance.now() - t0) / 1000
  assert.ok(flood.every((r) => r.status === 'rejected'))
  const stats = gate.cm.requestStats()
  assert.equal(stats.untrusted, 12)
  assert.ok(stats.untrustedTold >= 4 && stats.untrustedTold <= 4 + Math.ceil(seconds), `told ${stats.untrustedTold} of 12 in ${seconds.toFixed(1)} s`)
  // alice refuses carol's certificate herself, before any request is sent
  await assert.rejects(alice.cm.connectDevice(carol.identity.id, 'echo'), (e: unknown) => isDhtnetError(e, 'UNTRUSTED') && /UNTRUSTED_CA/.test(e.message))
  assert.equal(carol.cm.connections().length, 0)
  // an anonymous device accepts any sound chain
  const anon = await net.addDevice('anon', { anonymous: true, trustedCas: [], onConnectionReady: bobReady })
  const s = await carol.cm.connectDevice(anon.identity.id, 'echo-anon')
  assert.equal(await roundTrip(s, 'anonymous ok'), 'anonymous ok')
  s.destroy()
})

test('expired certificate refused', async () => {
  const key = await generateRsaKey(2048)
  const now = Date.now()
  const cert = issueCertificate({
    publicKey: key,
    name: 'expired-dave',
    ca: false,
    signer: { privateKey: net.ca.privateKey, certificate: net.ca.certificate },
    notBefore: new Date(now - 10 * 24 * 3600e3),
    notAfter: new Date(now - 24 * 3600e3),
  })
  const dave = await net.addDevice('dave', { identity: makeIdentity(key, [cert, ...net.ca.chain]) })
  const untrustedBefore = bob.cm.requestStats().untrusted
  await assert.rejects(dave.cm.connectDevice(bob.identity.id, 'echo', { timeoutMs: 5000 }), (e: unknown) => isDhtnetError(e, 'UNTRUSTED'))
  assert.equal(bob.cm.requestStats().untrusted, untrustedBefore + 1)
  await assert.rejects(alice.cm.connectDevice(dave.identity.id, 'echo'), (e: unknown) => isDhtnetError(e, 'UNTRUSTED') && /EXPIRED/.test(e.message))
  assert.equal(bob.cm.connections(dave.identity.id).length, 0)
})

test('an impostor (another key claiming a device certificate) cannot connect, nor answer for it', async () => {
  const victor = await net.newIdentity('victor') // the real device, offline
  const malloryKey = await generateRsaKey(2048)
  const impostor = makeIdentity(malloryKey, victor.chain) // victor's certificate, mallory's key
  const mallory = await net.addDevice('mallory', { identity: impostor, onConnectionReady: bobReady, connectTimeoutMs: 3000 })
  // mallory → alice: her requests are signed with a key that is not the certificate's; alice drops them. (Over
  // ICE-TCP alone she cannot even start: TLS refuses a key that does not match its certificate.)
  const dropped = (e: unknown): boolean =>
    process.env.DHTNET_TEST_TRANSPORT === 'tcp' ? isDhtnetError(e, 'TLS_FAILED') && /key values mismatch/.test(e.message) : isDhtnetError(e, 'TIMEOUT')
  await assert.rejects(mallory.cm.connectDevice(alice.identity.id, 'echo', { timeoutMs: 3000 }), dropped)
  // alice → "victor": mallory listens at victor's keys but cannot decrypt or sign as victor
  await assert.rejects(alice.cm.connectDevice(victor.id, 'echo', { timeoutMs: 3000 }), (e: unknown) => isDhtnetError(e, 'TIMEOUT') && /answer on the DHT/.test(e.message))
  assert.equal(alice.cm.isConnected(victor.id), false)
  assert.equal(mallory.cm.connections().length, 0)
})

test('concurrent connectDevice calls share one connection; isConnecting while pending', async () => {
  const erin = await net.addDevice('erin')
  const names = Array.from({ length: 8 }, (_, i) => `echo-c${i}`)
  const pending = names.map((n) => erin.cm.connectDevice(bob.identity.id, n))
  await new Promise((r) => setImmediate(r))
  assert.equal(erin.cm.isConnecting(bob.identity.id, 'echo-c0'), true)
  const sockets = await Promise.all(pending)
  assert.equal(erin.cm.isConnecting(bob.identity.id, 'echo-c0'), false)
  assert.equal(erin.cm.connections().length, 1)
  assert.equal(bob.cm.connections(erin.identity.id).length, 1)
  const replies = await Promise.all(sockets.map((s, i) => roundTrip(s, `msg-${i}`)))
  assert.deepEqual(
    replies,
    names.map((_, i) => `msg-${i}`),
  )
  for (const s of sockets) s.destroy()
  // forceNewSocket opens a second connection
  const extra = await erin.cm.connectDevice(bob.identity.id, 'echo-forced', { forceNewSocket: true })
  assert.equal(erin.cm.connections().length, 2)
  extra.destroy()
  // closeConnectionsWith closes them all; the next connect opens a fresh one
  assert.equal(erin.cm.closeConnectionsWith(bob.identity.id), 2)
  assert.equal(erin.cm.isConnected(bob.identity.id), false)
  const again = await erin.cm.connectDevice(bob.identity.id, 'echo-again')
  assert.equal(await roundTrip(again, 'fresh'), 'fresh')
  again.destroy()
})

test('half-close: our end() delivers EOF, the peer still answers, then ends', async () => {
  const s = await alice.cm.connectDevice(bob.identity.id, 'reverse')
  const chunks: Buffer[] = []
  s.on('data', (d: Buffer) => chunks.push(d))
  const ended = once(s, 'end')
  s.end('abcdef')
  await ended
  assert.equal(Buffer.concat(chunks).toString(), 'fedcba!')
  s.destroy()
})

test('backpressure: a paused reader stops its sender on that channel only, memory bounded', async () => {
  const s = await alice.cm.connectDevice(bob.identity.id, 'paused')
  const chunk = Buffer.alloc(64 * 1024, 1)
  let accepted = 0
  for (let i = 0; i < 2000; i++) {
    accepted += chunk.length
    if (!s.write(chunk)) break
  }
  // let the pipeline settle: the sender must stay blocked
  await new Promise((r) => setTimeout(r, 300))
  const conn = alice.cm.connections(bob.identity.id)[0]!
  const sentOnWire = alice.cm.channels(conn).find((c) => c.name === 'paused')!.bytesOut
  assert.ok(accepted < 32 * 1024 * 1024, `write() returned false after ${accepted} bytes`)
  assert.ok(sentOnWire <= 4 * 1024 * 1024, `the channel sent ${sentOnWire} bytes to a reader that reads nothing`)
  assert.ok(s.writableLength <= accepted)
  // another channel on the same connection keeps flowing
  const other = await alice.cm.connectDevice(bob.identity.id, 'echo-while-blocked')
  assert.equal(await roundTrip(other, 'not blocked'), 'not blocked')
  other.destroy()
  s.destroy()
})

test('1,000 channels open at once on one connection', async () => {
  const frank = await net.addDevice('frank')
  const n = 1000
  const sockets = await Promise.all(Array.from({ length: n }, (_, i) => frank.cm.connectDevice(bob.identity.id, `echo-${i}`)))
  assert.equal(frank.cm.connections().length, 1)
  const conn = frank.cm.connections()[0]!
  assert.ok(frank.cm.channels(conn).length >= n)
  const replies = await Promise.all(sockets.map((s, i) => roundTrip(s, `#${i}`)))
  assert.ok(replies.every((r, i) => r === `#${i}`))
  for (const s of sockets) s.destroy()
})

test('connectivityChanged() probes live connections (they stay up)', async () => {
  const s = await alice.cm.connectDevice(bob.identity.id, 'echo-probe')
  alice.cm.connectivityChanged()
  await new Promise((r) => setTimeout(r, 200))
  assert.equal(alice.cm.isConnected(bob.identity.id), true)
  assert.equal(await roundTrip(s, 'after probe'), 'after probe')
  s.destroy()
})

test('close() rejects pending connects with ABORTED and leaves no peer connection', async () => {
  const gina = await net.addDevice('gina')
  const hank = await net.addDevice('hank')
  await hank.cm.close() // its certificate stays on the DHT, but nobody answers for it any more
  const live = await gina.cm.connectDevice(bob.identity.id, 'echo-g')
  const closedQuietly = once(live, 'close')
  const pending = gina.cm.connectDevice(hank.identity.id, 'never', { timeoutMs: 20_000 })
  await new Promise((r) => setTimeout(r, 300))
  assert.equal(gina.cm.isConnecting(hank.identity.id, 'never'), true)
  await gina.cm.close()
  await assert.rejects(pending, (e: unknown) => isDhtnetError(e, 'ABORTED'))
  await closedQuietly
  assert.equal(gina.cm.connections().length, 0)
  await assert.rejects(gina.cm.connectDevice(bob.identity.id, 'x'), (e: unknown) => isDhtnetError(e, 'ABORTED'))
})

test('a C++ DHTNet peer (an answer without our extension) is reached over ICE-TCP only', async () => {
  // A device that answers like DHTNet's C++ ConnectionManager: pjnath "ufrag\npwd\ncandidates" with TCP candidates.
  const { SecureDht } = await import('../src/dht/secure-dht.js')
  const { startDhtNode } = await import('./helpers/testnet.js')
  const { decodeRequest, encodeRequest } = await import('../src/connection/signalling.js')
  const { createPublicKey } = await import('node:crypto')
  const identity = await net.newIdentity('cpp-peer')
  const node = await startDhtNode(net.bootstrapPort)
  const dht = new SecureDht(node, identity)
  await dht.start()
  const listen = dht.listen(SecureDht.peerKey(identity.longId), (values) => {
    for (const v of values) {
      if (v.userType !== 'peer_request' || !v.owner) continue
      const req = decodeRequest(v.data)
      if (req.isAnswer) continue
      const iceMsg =
        'Xy1z\nsomepasswordsomepassword\nHc0a800a5 1 TCP 2130706431 127.0.0.1 43613 typ host tcptype passive\nHc0a800a5 1 TCP 2130706431 127.0.0.1 9 typ host tcptype active\n'
      void dht.putEncrypted(SecureDht.peerKey(createHash256(v.owner)), createPublicKey({ key: v.owner, format: 'der', type: 'spki' }), {
        data: encodeRequest({ id: req.id, iceMsg, isAnswer: true, connType: '' }),
        userType: 'peer_request',
      })
    }
  })
  try {
    // an answer without our extension is a C++ DHTNet device: only its ICE-TCP description is used (here a port
    // nobody listens on), and the failure names that path long before the connect timeout
    const t0 = performance.now()
    const expected = (e: unknown): boolean =>
      process.env.DHTNET_TEST_TRANSPORT === 'webrtc'
        ? isDhtnetError(e, 'UNSUPPORTED_TRANSPORT') && /C\+\+ DHTNet device/.test(e.message)
        : isDhtnetError(e, 'ICE_FAILED') && /no TCP path.*127\.0\.0\.1:43613/.test(e.message)
    await assert.rejects(alice.cm.connectDevice(identity.id, 'echo', { timeoutMs: 15_000 }), expected)
    assert.ok(performance.now() - t0 < 12_000, 'failed at the timeout, not on the path')
    assert.equal(alice.cm.isConnected(identity.id), false)
  } finally {
    listen.cancel()
    dht.close()
    await node.stop()
  }
})

function createHash256(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex')
}

test('a connection that dies before the channel is accepted: the request is retried once on a new connection', async () => {
  let asked = 0
  const ivan = await net.addDevice('ivan', {
    onConnectionReady: bobReady,
    onChannelRequest: (_cert, name) => {
      asked++
      // the first two requests hang until their connection is gone; the retries are accepted at once
      return asked <= 2 ? new Promise((resolve) => setTimeout(() => resolve(true), 1500)) : name.startsWith('echo')
    },
  })
  const judy = await net.addDevice('judy')
  const pending = [judy.cm.connectDevice(ivan.identity.id, 'echo-retried-a'), judy.cm.connectDevice(ivan.identity.id, 'echo-retried-b')] as const
  for (let i = 0; i < 200 && asked < 2; i++) await new Promise((r) => setTimeout(r, 10))
  assert.equal(asked, 2)
  const first = judy.cm.connections(ivan.identity.id)[0]!
  judy.cm.closeConnectionsWith(ivan.identity.id)
  const [s, t] = await Promise.all(pending)
  assert.equal(asked, 4)
  assert.equal(await roundTrip(s, 'second time lucky'), 'second time lucky')
  assert.equal(await roundTrip(t, 'me too'), 'me too')
  // both retried together on one new connection
  const now = judy.cm.connections(ivan.identity.id)
  assert.equal(now.length, 1)
  assert.notEqual(now[0]!.id, first.id)
  s.destroy()
  t.destroy()
  // noNewSocket requests are not retried
  asked = 0
  const p2 = judy.cm.connectDevice(ivan.identity.id, 'echo-noretry', { noNewSocket: true })
  for (let i = 0; i < 200 && asked === 0; i++) await new Promise((r) => setTimeout(r, 10))
  judy.cm.closeConnectionsWith(ivan.identity.id)
  await assert.rejects(p2, (e: unknown) => isDhtnetError(e) && ['CONNECTION_CLOSED', 'NOT_CONNECTED'].includes(e.code))
  assert.equal(asked, 1)
})

test('a client (clientOnly) handles answers to its own requests and no request from anyone', async () => {
  const client = await net.addDevice('client-only', { noStart: true })
  await client.cm.start({ clientOnly: true })
  // it listens at its keys once it connects out (answers arrive there)
  const s = await client.cm.connectDevice(bob.identity.id, 'echo-client-only')
  assert.equal(await roundTrip(s, 'out'), 'out')
  s.destroy()
  // a request to it is dropped unread: no answer, no connection, no work counted (its certificate is published in the
  // background for a client: waited for here, so that the caller gets as far as the request)
  assert.deepEqual(await client.dht.start(), { keyIdKey: true, longIdKey: true })
  const caller = await net.addDevice('caller')
  await assert.rejects(caller.cm.connectDevice(client.identity.id, 'echo', { timeoutMs: 3000 }), (e: unknown) => isDhtnetError(e, 'TIMEOUT') && /answer/.test(e.message))
  assert.equal(client.cm.requestStats().handled, 0)
  assert.equal(client.cm.connections(caller.identity.id).length, 0)
})
