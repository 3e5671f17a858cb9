/**
 * ICE-TCP with a TURN/TCP relay (transport/ice-tcp/relay.ts) and a TCP port mapping (port-mapping.ts), against a real
 * coturn on loopback (test/helpers/coturn.ts):
 *  - the relay candidate in the ice_msg (`R7f000001 1 TCP 16777215 127.0.0.1 <port> typ relay tcptype passive`);
 *  - a requester that can reach the responder only through the responder's relay (every other passive candidate
 *    removed from both descriptions): the check arrives through coturn, is adopted by the listener, nominated, TLS
 *    and 4 MiB each way byte-exact; both links report `relay: 'tcp'` and the pair types;
 *  - the responder's permission for the requester's address was granted before its answer, and forgotten at close;
 *  - a wrong TURN password: no relay candidate, the connect fails with TURN_AUTH_FAILED naming the relay, and the
 *    password appears in no log line, message or hint;
 *  - relayed connections are bounded like accepted ones: garbage through the relay is closed before authentication;
 *  - the port mapping: mapped once (shared by sessions), a srflx passive candidate, removed on close.
 *
 * Skipped without coturn/openssl (scripts/setup installs them).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { IceTcpTransport, type IceTcpTransportOptions } from '../src/transport/ice-tcp/index.js'
import type { Link } from '../src/transport/transport.js'
import { identityFromPem } from '../src/identity/load.js'
import type { Identity } from '../src/identity/types.js'
import { isDhtnetError } from '../src/errors.js'
import type { LogLevel } from '../src/util/log.js'
import type { PortMapping } from '../src/nat/port-mapper.js'
import { identityPem } from './helpers/dhtnet-captures.js'
import { COTURN_PASS, COTURN_USER, type Coturn, coturnUnavailableReason, startLoopbackCoturn } from './helpers/coturn.js'
import { encodeFrame } from '../src/transport/ice-tcp/framing.js'

const skip = coturnUnavailableReason()
let coturn: Coturn | undefined
let server: Identity
let client: Identity

function recorder(): { lines: string[]; logger: (level: LogLevel, message: string) => void } {
  const lines: string[] = []
  return {
    lines,
    logger: (level, message) => {
      lines.push(`${level} ${message}`)
      if (process.env.DHTNET_TEST_LOG) process.stderr.write(`[${level}] ${message}\n`)
    },
  }
}

function transport(identity: Identity, extra: Partial<IceTcpTransportOptions> = {}): IceTcpTransport {
  return new IceTcpTransport({ identity, bindAddress: '127.0.0.1', includeLoopback: true, logger: recorder().logger, ...extra })
}

function relayOptions(password = COTURN_PASS): IceTcpTransportOptions['relay'] {
  return { server: `127.0.0.1:${coturn!.port}`, username: COTURN_USER, password }
}

/** Keep only what makes the relay the one path: ufrag, pwd, active candidates and relay candidates. */
function onlyRelay(description: string): string {
  const lines = description.split('\n')
  return [lines[0], lines[1], ...lines.slice(2).filter((l) => l.includes(' typ relay ') || l.endsWith('tcptype active'))].join('\n') + '\n'
}

async function pump(from: Duplex, to: Duplex, bytes: number): Promise<{ sent: string; received: string }> {
  const sent = createHash('sha256')
  const received = createHash('sha256')
  let got = 0
  const done = new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      received.update(d)
      got += d.length
      if (got >= bytes) {
        to.off('data', onData)
        resolve()
      }
    }
    to.on('data', onData)
    to.once('error', reject)
  })
  for (let off = 0; off < bytes; off += 256 * 1024) {
    const chunk = randomBytes(Math.min(256 * 1024, bytes - off))
    sent.update(chunk)
    if (!from.write(chunk)) await once(from, 'drain')
  }
  await done
  return { sent: sent.digest('hex'), received: received.digest('hex') }
}

describe('ICE-TCP through a TURN/TCP relay (coturn on loopback)', { skip }, () => {
  before(async () => {
    const load = (n: 'server-id' | 'client-id') => identityFromPem(identityPem(n).key, identityPem(n).chain)
    server = load('server-id')
    client = load('client-id')
    coturn = await startLoopbackCoturn()
  })

  after(async () => {
    await coturn?.stop()
  })

  test('the relayed address is offered as a relay passive candidate with pjnath priority and foundation', async () => {
    const t = transport(server, { relay: relayOptions() })
    try {
      const s = await t.createSession({ role: 'requester', connectionId: 1n, peerChain: client.chain, signal: AbortSignal.timeout(10_000) })
      const relayLine = s.localDescription.split('\n').find((l) => l.includes(' typ relay '))
      assert.ok(relayLine, s.localDescription)
      assert.match(relayLine, /^R7f000001 1 TCP 16777215 127\.0\.0\.1 \d+ typ relay tcptype passive$/)
      assert.equal(s.localDescription.trimEnd().split('\n').at(-1), relayLine, 'the relay comes last, as pjnath adds TURN after STUN')
      s.close()
    } finally {
      await t.close()
    }
  })

  for (const native of [true, false]) {
    test(`only the responder's relay reachable (${native ? 'native' : 'framed'} TLS): nominated through coturn, 4 MiB each way byte-exact, relay reported`, async () => {
      const resLog = recorder()
      const req = transport(client)
      const res = transport(server, { relay: relayOptions(), logger: resLog.logger })
      const links: Link[] = []
      try {
        const signal = AbortSignal.timeout(30_000)
        const reqSession = await req.createSession({ role: 'requester', connectionId: 7n, peerChain: server.chain, signal })
        const resSession = await res.createSession({
          role: 'responder',
          connectionId: 7n,
          peerChain: client.chain,
          remoteDescription: onlyRelay(reqSession.localDescription),
          peerIsNative: native,
          signal,
        })
        // the permission for the requester's address was granted before the answer
        assert.deepEqual(res.relay?.current?.permissions, ['127.0.0.1'])
        const [a, b] = await Promise.all([
          reqSession.connect({ remoteDescription: onlyRelay(resSession.localDescription), peerIsNative: native, signal }),
          resSession.connect({ signal }),
        ])
        links.push(a, b)
        assert.equal(a.path.relay, 'tcp')
        assert.equal(b.path.relay, 'tcp')
        assert.equal(a.path.candidatePair, 'host/relay', 'the requester connected to the relayed candidate')
        assert.equal(b.path.candidatePair, 'relay/host', 'the responder got it through its allocation')
        const relayed = res.relay.current.relayedAddress
        assert.equal(a.path.remoteAddress, `127.0.0.1:${relayed.port}`)
        assert.equal(b.path.localAddress, `127.0.0.1:${relayed.port}`)
        const up = await pump(a.stream!, b.stream!, 4 << 20)
        assert.equal(up.received, up.sent)
        const down = await pump(b.stream!, a.stream!, 4 << 20)
        assert.equal(down.received, down.sent)
        assert.ok(
          resLog.lines.some((l) => l.includes('through a TURN relay over TCP')),
          resLog.lines.join('\n'),
        )
        const closed = once(b, 'close')
        a.close()
        await closed
        // the link was the last user of the permission
        await new Promise((r) => setTimeout(r, 50))
        assert.deepEqual(res.relay.current.permissions, [])
      } finally {
        for (const l of links) l.close()
        await req.close()
        await res.close()
      }
    })
  }

  test("only the requester's relay reachable, its permission given late (as when the answer travels the DHT): the responder's refused attempts are tried again, connected", async () => {
    const resLog = recorder()
    const req = transport(client, { relay: relayOptions() })
    const res = transport(server, { logger: resLog.logger })
    const links: Link[] = []
    try {
      const signal = AbortSignal.timeout(30_000)
      const reqSession = await req.createSession({ role: 'requester', connectionId: 11n, peerChain: server.chain, signal })
      const resSession = await res.createSession({
        role: 'responder',
        connectionId: 11n,
        peerChain: client.chain,
        remoteDescription: onlyRelay(reqSession.localDescription),
        peerIsNative: true,
        signal,
      })
      // the responder checks at once; the requester gets the answer (and permits the responder's address) 400 ms later
      const responding = resSession.connect({ signal })
      await new Promise((r) => setTimeout(r, 400))
      const [a, b] = await Promise.all([reqSession.connect({ remoteDescription: onlyRelay(resSession.localDescription), peerIsNative: true, signal }), responding])
      links.push(a, b)
      assert.equal(b.path.candidatePair, 'host/relay')
      assert.equal(a.path.candidatePair, 'relay/host')
      assert.equal(a.path.relay, 'tcp')
      const up = await pump(b.stream!, a.stream!, 1 << 20)
      assert.equal(up.received, up.sent)
      assert.ok(
        resLog.lines.some((l) => /the peer's relay may not let us in yet: again in \d+ ms/.test(l)),
        `no retry logged:\n${resLog.lines.join('\n')}`,
      )
    } finally {
      for (const l of links) l.close()
      await req.close()
      await res.close()
    }
  })

  test('a wrong TURN password: no relay candidate, TURN_AUTH_FAILED naming the relay, the password in no log line', async () => {
    const wrong = 'Wrong-Sesame-9d2e-never-log-me'
    const resLog = recorder()
    const reqLog = recorder()
    const req = transport(client, { logger: reqLog.logger, relay: relayOptions(wrong), timeouts: { inboundWaitMs: 500, connectMs: 1000 } })
    const res = transport(server, { logger: resLog.logger, timeouts: { inboundWaitMs: 500, connectMs: 1000 } })
    try {
      const signal = AbortSignal.timeout(30_000)
      const started = performance.now()
      const reqSession = await req.createSession({ role: 'requester', connectionId: 9n, peerChain: server.chain, signal })
      assert.doesNotMatch(reqSession.localDescription, /typ relay/)
      const resSession = await res.createSession({
        role: 'responder',
        connectionId: 9n,
        peerChain: client.chain,
        remoteDescription: onlyRelay(reqSession.localDescription),
        peerIsNative: true,
        signal,
      })
      const results = await Promise.allSettled([
        reqSession.connect({ remoteDescription: onlyRelay(resSession.localDescription), peerIsNative: true, signal }),
        resSession.connect({ signal }),
      ])
      const failure = results[0]
      assert.equal(failure.status, 'rejected')
      const err: unknown = failure.reason
      assert.ok(isDhtnetError(err, 'TURN_AUTH_FAILED'), String(err))
      assert.match(err.message, /no TCP path/)
      assert.match(err.message, new RegExp(`our TCP relay on turn:127\\.0\\.0\\.1:${coturn!.port} is unavailable`))
      assert.ok(err.hint && /password/.test(err.hint), err.hint)
      assert.ok(performance.now() - started < 15_000)
      for (const text of [...reqLog.lines, ...resLog.lines, err.message, err.hint ?? '', String((err as Error).cause)]) {
        assert.ok(!text.includes(wrong), `the password leaked: ${text}`)
        assert.ok(!text.includes(COTURN_USER), `the user name leaked: ${text}`)
      }
      assert.ok(
        reqLog.lines.some((l) => l.startsWith('warn') && l.includes('no TCP relay on turn:127.0.0.1')),
        reqLog.lines.join('\n'),
      )
    } finally {
      await req.close()
      await res.close()
    }
  })

  test('a connection through the relay is bounded like an accepted one: garbage and a bad check are closed before authentication', async () => {
    const res = transport(server, { relay: relayOptions(), timeouts: { preAuthMs: 1500 } })
    try {
      const signal = AbortSignal.timeout(20_000)
      const session = await res.createSession({
        role: 'responder',
        connectionId: 3n,
        peerChain: client.chain,
        remoteDescription: `abcd\n${'x'.repeat(24)}\nH7f000001 1 TCP 2130706431 127.0.0.1 9 typ host tcptype active\n`,
        peerIsNative: true,
        signal,
      })
      const relayed = res.relay!.current!.relayedAddress
      const outcome = async (payload: Buffer): Promise<string> => {
        const s = connect({ host: relayed.address, port: relayed.port })
        s.on('error', () => {})
        const closed = new Promise<void>((resolve) => s.once('close', () => resolve()))
        s.once('connect', () => s.write(payload))
        const t0 = performance.now()
        await closed
        return `closed after ${Math.round(performance.now() - t0)} ms`
      }
      // not STUN at all; a frame far too big; a Binding request naming no session
      const results = await Promise.all([
        outcome(Buffer.from('GET / HTTP/1.1\r\n\r\n')),
        outcome(Buffer.from([0xff, 0xff, 0, 1, 2, 3])),
        outcome(encodeFrame(Buffer.concat([Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]), randomBytes(12)]))),
      ])
      for (const r of results) assert.match(r, /^closed after \d+ ms$/)
      // they went through the relay into our listener, which refused them (not coturn)
      const listener = (res as unknown as { openListener: { refused: number } }).openListener
      assert.equal(listener.refused, 3)
      assert.equal(res.relay!.current!.stats.accepted, 3)
      session.close()
    } finally {
      await res.close()
    }
  })
})

describe('ICE-TCP listening port mapped on the gateway (portMapper)', () => {
  test('mapped once for every session, offered as a srflx passive candidate, removed on close', async () => {
    const calls: string[] = []
    const mapper = {
      async mapTcp(port: number): Promise<PortMapping> {
        calls.push(`map ${port}`)
        await new Promise((r) => setTimeout(r, 20))
        return { externalIp: '203.0.113.7', externalPort: 40123, internalPort: port, protocol: 'TCP', via: 'natpmp', internalIp: '127.0.0.1' }
      },
      unmapTcp(port: number): Promise<void> {
        calls.push(`unmap ${port}`)
        return Promise.resolve()
      },
    }
    const t = transport(server, { portMapper: mapper })
    const [listening] = await t.listen()
    const signal = AbortSignal.timeout(10_000)
    const a = await t.createSession({ role: 'requester', connectionId: 1n, peerChain: client.chain, signal })
    const b = await t.createSession({ role: 'requester', connectionId: 2n, peerChain: client.chain, signal })
    for (const s of [a, b]) assert.match(s.localDescription, /\nS7f000001 1 TCP 1694498303 203\.0\.113\.7 40123 typ srflx tcptype passive\n/)
    a.close()
    b.close()
    await t.close()
    assert.deepEqual(calls, [`map ${listening!.port}`, `unmap ${listening!.port}`])
  })

  test('a failed mapping never fails a session', async () => {
    const mapper = {
      mapTcp: (): Promise<PortMapping> => Promise.reject(new Error('no gateway')),
      unmapTcp: async (): Promise<void> => {},
    }
    const t = transport(server, { portMapper: mapper })
    try {
      const s = await t.createSession({ role: 'requester', connectionId: 1n, peerChain: client.chain, signal: AbortSignal.timeout(10_000) })
      assert.doesNotMatch(s.localDescription, /typ srflx/)
      s.close()
    } finally {
      await t.close()
    }
  })
})
