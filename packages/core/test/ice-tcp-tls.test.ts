import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { TLSSocket } from 'node:tls'
import { establishTls, tlsContext } from '../src/transport/ice-tcp/tls-link.js'
import { FrameDecoder, encodeFrame } from '../src/transport/ice-tcp/framing.js'
import { buildCheckRequest } from '../src/transport/ice-tcp/check-messages.js'
import { StunMessageBuilder, BINDING_INDICATION, StunMessage } from '../src/transport/stun/index.js'
import { identityFromPem } from '../src/identity/load.js'
import type { Identity } from '../src/identity/types.js'
import { identityPem } from './helpers/dhtnet-captures.js'
import { agentSide, testLogger } from './helpers/ice-agents.js'

let server: Identity
let client: Identity
before(() => {
  server = identityFromPem(identityPem('server-id').key, identityPem('server-id').chain)
  client = identityFromPem(identityPem('client-id').key, identityPem('client-id').chain)
})

test('framed TLS: one TLS record per RFC 4571 frame on the wire; STUN requests after nomination are answered, indications dropped; TLS unaffected', async () => {
  const a = await agentSide('controlling')
  const b = await agentSide('controlled')
  try {
    const [pa, pb] = await Promise.all([a.agent.start(b.description), b.agent.start(a.description)])
    // tap what arrives on b's raw socket
    const tap = new FrameDecoder()
    const frames: Buffer[] = []
    pb.socket.on('data', (d: Buffer) => {
      tap.push(d)
      for (let f = tap.next(); f; f = tap.next()) frames.push(Buffer.from(f))
    })
    const signal = AbortSignal.timeout(20_000)
    const common = { mode: 'framed' as const, timeoutMs: 15_000, signal, logger: testLogger }
    const [ta, tb] = await Promise.all([
      establishTls({ ...common, path: pa, tlsRole: 'client', context: tlsContext(server), expectedPeer: client.certificate }),
      establishTls({ ...common, path: pb, tlsRole: 'server', context: tlsContext(client), expectedPeer: server.certificate }),
    ])
    // a pjnath-like peer keeps checking the pair: a keepalive indication and a late check from a's side, on the raw socket
    pa.socket.write(encodeFrame(new StunMessageBuilder(BINDING_INDICATION).build()))
    pa.socket.write(
      encodeFrame(
        buildCheckRequest({
          localUfrag: a.description.ufrag,
          remoteUfrag: b.description.ufrag,
          remotePwd: b.description.pwd,
          priority: 0x6effffff,
          role: 'controlling',
          tieBreaker: a.agent.tieBreaker,
        }),
      ),
    )
    // TLS data both ways still flows
    const echo = (from: TLSSocket, to: TLSSocket, text: string) => {
      const got = once(to, 'data')
      from.write(text)
      return got.then(([d]) => (d as Buffer).toString())
    }
    assert.equal(await echo(ta.socket, tb.socket, 'ping'), 'ping')
    assert.equal(await echo(tb.socket, ta.socket, 'pong'), 'pong')
    const big = Buffer.alloc(100_000, 9)
    let got = 0
    const all = new Promise<void>((r) => tb.socket.on('data', (d: Buffer) => (got += d.length) >= big.length && r()))
    ta.socket.write(big)
    await all
    assert.equal(tb.framed!.stunSeen, 2)
    // a's FramedDuplex received b's answer to the late check (and dropped it, as a response)
    for (let i = 0; i < 50 && ta.framed!.stunSeen < 1; i++) await new Promise((r) => setTimeout(r, 10))
    assert.equal(ta.framed!.stunSeen, 1)
    // every frame b received: a whole TLS record, or one STUN message
    let tls = 0
    for (const f of frames) {
      if (f[0]! >= 20 && f[0]! <= 23) {
        assert.equal(f.readUInt16BE(3) + 5, f.length, 'one TLS record per frame')
        tls++
      } else assert.doesNotThrow(() => StunMessage.decode(f))
    }
    assert.ok(tls >= 10)
    ta.socket.destroy()
    tb.socket.destroy()
  } finally {
    await a.close()
    await b.close()
  }
})

test('native TLS: bytes read past the switch point (here the first 10 bytes of the ClientHello) reach TLS first', async () => {
  const { createServer, connect } = await import('node:net')
  const tlsMod = await import('node:tls')
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))
  try {
    const port = (srv.address() as import('node:net').AddressInfo).port
    const accepted = once(srv, 'connection')
    const dialed = connect({ host: '127.0.0.1', port })
    await once(dialed, 'connect')
    const [raw] = (await accepted) as [import('node:net').Socket]
    // the TLS client starts; we read its first 10 bytes as the agent's decoder would have
    const clientTls = tlsMod.connect({ socket: dialed, secureContext: tlsContext(server), rejectUnauthorized: false, checkServerIdentity: () => undefined })
    await once(raw, 'readable')
    const head = raw.read(10) as Buffer
    assert.equal(head[0], 22) // a handshake record
    raw.pause()
    const path = {
      socket: raw,
      remaining: Buffer.from(head),
      direction: 'inbound' as const,
      localAddress: '127.0.0.1',
      localPort: port,
      remoteAddress: '127.0.0.1',
      remotePort: dialed.localPort!,
      candidatePair: 'host/host',
      role: 'controlled' as const,
      relayed: false,
      answerer: () => undefined,
    }
    const [result] = await Promise.all([
      establishTls({
        path,
        tlsRole: 'server',
        context: tlsContext(client),
        expectedPeer: server.certificate,
        mode: 'native',
        timeoutMs: 15_000,
        signal: AbortSignal.timeout(20_000),
        logger: testLogger,
      }),
      once(clientTls, 'secureConnect'),
    ])
    const got = once(result.socket, 'data')
    clientTls.write('through native TLS')
    assert.equal(String((await got)[0]), 'through native TLS')
    clientTls.destroy()
    result.socket.destroy()
  } finally {
    srv.close()
  }
})
