import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { IceTcpTransport, type IceTcpTransportOptions } from '../src/transport/ice-tcp/index.js'
import type { Link } from '../src/transport/transport.js'
import { identityFromPem } from '../src/identity/load.js'
import { generateCaAndDevice } from '../src/identity/generate.js'
import type { Identity } from '../src/identity/types.js'
import { isDhtnetError } from '../src/errors.js'
import { identityPem } from './helpers/dhtnet-captures.js'
import { testLogger } from './helpers/ice-agents.js'

let server: Identity // the DHT responder (dnc -l): ICE controlling, TLS client
let client: Identity // the requester: ICE controlled, TLS server
let impostor: Identity

before(async () => {
  const load = (n: 'server-id' | 'client-id') => identityFromPem(identityPem(n).key, identityPem(n).chain)
  server = load('server-id')
  client = load('client-id')
  impostor = (await generateCaAndDevice({ keySize: 2048 })).device
})

function transport(identity: Identity, extra: Partial<IceTcpTransportOptions> = {}): IceTcpTransport {
  return new IceTcpTransport({ identity, bindAddress: '127.0.0.1', includeLoopback: true, logger: testLogger, ...extra })
}

/** The connection layer's part, in short: requester session → description → responder session → answer → both connect. */
async function connectPair(opts: {
  native: boolean
  responderIdentity?: Identity
  requesterExpects?: Identity
  responderExpects?: Identity
  responderExtra?: Partial<IceTcpTransportOptions>
}) {
  const req = transport(client)
  const res = transport(opts.responderIdentity ?? server, opts.responderExtra)
  const signal = AbortSignal.timeout(30_000)
  const reqSession = await req.createSession({ role: 'requester', connectionId: 1n, peerChain: (opts.requesterExpects ?? server).chain, signal })
  const resSession = await res.createSession({
    role: 'responder',
    connectionId: 1n,
    peerChain: (opts.responderExpects ?? client).chain,
    remoteDescription: reqSession.localDescription,
    peerIsNative: opts.native,
    signal,
  })
  const results = await Promise.allSettled([
    reqSession.connect({ remoteDescription: resSession.localDescription, peerIsNative: opts.native, signal }),
    resSession.connect({ signal }),
  ])
  return {
    results,
    async close() {
      for (const r of results) if (r.status === 'fulfilled') r.value.close()
      await req.close()
      await res.close()
    },
  }
}

async function pump(from: Duplex, to: Duplex, bytes: number): Promise<{ sent: string; received: string }> {
  const sent = createHash('sha256')
  const received = createHash('sha256')
  let got = 0
  const done = new Promise<void>((resolve, reject) => {
    to.on('data', (d: Buffer) => {
      received.update(d)
      got += d.length
      if (got >= bytes) resolve()
    })
    to.once('error', reject)
  })
  for (let off = 0; off < bytes; off += 256 * 1024) {
    const chunk = randomBytes(Math.min(256 * 1024, bytes - off))
    sent.update(chunk)
    if (!from.write(chunk)) await once(from, 'drain')
  }
  await done
  to.removeAllListeners('data')
  return { sent: sent.digest('hex'), received: received.digest('hex') }
}

for (const native of [false, true]) {
  test(`two transports on loopback (${native ? 'native' : 'framed'} TLS): nominated pair, mutual TLS, 4 MiB each way byte-exact`, async () => {
    const pair = await connectPair({ native })
    try {
      const [a, b] = pair.results
      assert.equal(a.status, 'fulfilled', a.status === 'rejected' ? String(a.reason) : '')
      assert.equal(b.status, 'fulfilled', b.status === 'rejected' ? String(b.reason) : '')
      const requester = a.value
      const responder = b.value
      assert.equal(requester.transport, 'ice-tcp')
      assert.match(requester.path.candidatePair ?? '', /^host\/(host|prflx)$/)
      assert.equal(requester.path.localAddress, responder.path.remoteAddress)
      assert.equal(requester.path.remoteAddress, responder.path.localAddress)
      assert.equal((requester as unknown as { mode: string }).mode, native ? 'native' : 'framed')
      const up = await pump(requester.stream!, responder.stream!, 4 << 20)
      assert.equal(up.received, up.sent)
      const down = await pump(responder.stream!, requester.stream!, 4 << 20)
      assert.equal(down.received, down.sent)
      assert.ok(requester.wireBytesOut > 4 << 20 && requester.wireBytesIn > 4 << 20)
      // the TLS roles: the responder is the TLS client
      const tlsOf = (l: Link) => l.stream as import('node:tls').TLSSocket
      assert.equal(tlsOf(responder).getProtocol(), 'TLSv1.3')
      assert.equal(tlsOf(responder).getCipher().name, 'TLS_AES_256_GCM_SHA384')
      // the key exchange: secp384r1 as the C++ peers pick it (captures), X25519 between two of ours (faster)
      assert.equal((tlsOf(responder).getEphemeralKeyInfo() as { name?: string }).name, native ? 'X25519' : 'secp384r1')
      assert.equal(tlsOf(requester).getPeerX509Certificate()?.fingerprint256, server.certificate.fingerprint256)
      assert.equal(tlsOf(responder).getPeerX509Certificate()?.fingerprint256, client.certificate.fingerprint256)
      const closed = once(responder, 'close')
      requester.close()
      await closed
      assert.ok(responder.closed)
    } finally {
      await pair.close()
    }
  })
}

test('impostor answering for the expected device (a valid certificate of another identity) is refused with UNTRUSTED', async () => {
  const pair = await connectPair({ native: false, responderIdentity: impostor })
  try {
    const [requester] = pair.results
    assert.equal(requester.status, 'rejected')
    const err: unknown = requester.reason
    assert.ok(isDhtnetError(err, 'UNTRUSTED'), String(err))
    assert.match(err.message, /certificate presented does not belong to the device we expect/)
  } finally {
    await pair.close()
  }
})

test('impostor requester: the responder (TLS client) refuses it with UNTRUSTED', async () => {
  const pair = await connectPair({ native: true, responderExpects: impostor })
  try {
    const [, responder] = pair.results
    assert.equal(responder.status, 'rejected')
    assert.ok(isDhtnetError(responder.reason, 'UNTRUSTED'))
  } finally {
    await pair.close()
  }
})

test('plain-text and garbage clients on the passive port are closed without disturbing a concurrent connection', async () => {
  const req = transport(client)
  const res = transport(server)
  try {
    const { port } = (await res.listen())[0]!
    const signal = AbortSignal.timeout(30_000)
    const reqSession = await req.createSession({ role: 'requester', connectionId: 2n, peerChain: server.chain, signal })
    const resSession = await res.createSession({ role: 'responder', connectionId: 2n, peerChain: client.chain, remoteDescription: reqSession.localDescription, signal })
    const hostile = [Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), randomBytes(3000), Buffer.from([0, 20, ...randomBytes(20)])].map(async (payload) => {
      const s = connect({ host: '127.0.0.1', port })
      s.on('error', () => {})
      await once(s, 'connect')
      s.write(payload)
      await once(s, 'close')
    })
    const [a, b] = await Promise.all([reqSession.connect({ remoteDescription: resSession.localDescription, signal }), resSession.connect({ signal })])
    await Promise.all(hostile)
    const r = await pump(a.stream!, b.stream!, 1 << 20)
    assert.equal(r.received, r.sent)
    a.close()
    b.close()
  } finally {
    await req.close()
    await res.close()
  }
})

test('unparsable descriptions: BAD_ICE_MESSAGE; an unreachable peer: ICE_FAILED naming the pairs', async () => {
  const res = transport(server)
  const req = transport(client, { timeouts: { inboundWaitMs: 300 } })
  try {
    const signal = AbortSignal.timeout(30_000)
    await assert.rejects(res.createSession({ role: 'responder', connectionId: 3n, peerChain: client.chain, remoteDescription: 'not ice', signal }), (e: unknown) =>
      isDhtnetError(e, 'BAD_ICE_MESSAGE'),
    )
    const session = await req.createSession({ role: 'requester', connectionId: 3n, peerChain: server.chain, signal })
    await assert.rejects(
      session.connect({ remoteDescription: 'abcd\nefgh\nH1 1 TCP 2130706431 127.0.0.1 1 typ host tcptype passive\n', signal }),
      (e: unknown) =>
        isDhtnetError(e, 'ICE_FAILED') && /no TCP path: 1 of 1 candidate pair failed \(127\.0\.0\.1 -> 127\.0\.0\.1:1: connection refused\)/.test((e as Error).message),
    )
  } finally {
    await req.close()
    await res.close()
  }
})

test('abort and close free every socket and timer', async () => {
  await new Promise((r) => setTimeout(r, 200)) // sockets of the previous tests finish closing
  const before = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length
  const req = transport(client)
  const controller = new AbortController()
  const session = await req.createSession({ role: 'requester', connectionId: 4n, peerChain: server.chain, signal: controller.signal })
  // a peer that never answers: a listening socket that accepts and stays silent
  const silent = (await import('node:net')).createServer((s) => s.on('error', () => {}).resume())
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()))
  const port = (silent.address() as import('node:net').AddressInfo).port
  const attempt = session.connect({ remoteDescription: `abcd\nefgh\nH1 1 TCP 2130706431 127.0.0.1 ${port} typ host tcptype passive\n`, signal: controller.signal })
  setTimeout(() => controller.abort(), 200)
  await assert.rejects(attempt, (e: unknown) => isDhtnetError(e, 'ABORTED'))
  session.close()
  await req.close()
  await new Promise<void>((r) => silent.close(() => r()))
  await new Promise((r) => setTimeout(r, 50))
  const after = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length
  assert.equal(after, before)
})

test('a requester session started before the peer certificate is known gets it at connect()', async () => {
  const req = transport(client)
  const res = transport(server)
  try {
    const signal = AbortSignal.timeout(30_000)
    const reqSession = await req.createSession({ role: 'requester', connectionId: 5n, peerChain: [], signal })
    const resSession = await res.createSession({
      role: 'responder',
      connectionId: 5n,
      peerChain: client.chain,
      remoteDescription: reqSession.localDescription,
      peerIsNative: true,
      signal,
    })
    const [a, b] = await Promise.all([
      reqSession.connect({ remoteDescription: resSession.localDescription, peerIsNative: true, peerChain: server.chain, signal }),
      resSession.connect({ signal }),
    ])
    assert.equal((a.stream as import('node:tls').TLSSocket).getPeerX509Certificate()?.fingerprint256, server.certificate.fingerprint256)
    a.close()
    b.close()
  } finally {
    await req.close()
    await res.close()
  }
})
