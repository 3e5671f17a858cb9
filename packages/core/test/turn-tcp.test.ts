/**
 * TURN over TCP and TLS with TCP relays (RFC 6062) against a real coturn on loopback (test/helpers/coturn.ts):
 * allocation over TCP and TLS with the relayed address reported; an outside TCP client (from 127.0.0.2) connecting to
 * the relayed address arrives as a 'connection' carrying 4 MiB each way (sha256); connect() to an outside TCP server
 * through the relay, the same; refresh holding an allocation and its connection past 3 lifetimes; a wrong password
 * (TURN_AUTH_FAILED, quickly, the secret in no log line or error); a refused TCP relay (442 → TURN_REFUSED); server
 * down or silent (TURN_UNREACHABLE within the bound); close() deallocating (a user quota of 1 admits a second
 * allocation only after it, coturn logs lifetime 0) and leaving no socket behind; an untrusted TLS certificate.
 *
 * Skipped without coturn/openssl (scripts/setup installs them).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { TurnTcpClient, type TurnAllocation } from '../src/transport/turn/index.js'
import { isDhtnetError, type DhtnetError } from '../src/errors.js'
import type { LogLevel } from '../src/util/log.js'
import { tempDir } from './helpers/natlab/procs.js'
import { COTURN_PASS, COTURN_REALM, COTURN_USER, type Coturn, coturnUnavailableReason, freeTcpPort, startLoopbackCoturn, throwawayCertificate } from './helpers/coturn.js'

const skip = coturnUnavailableReason()
const MiB = 1024 * 1024
const PEER_IP = '127.0.0.2'

let main: Coturn | undefined
let certs: ReturnType<typeof throwawayCertificate> | undefined
let certDir: ReturnType<typeof tempDir> | undefined
const cleanups: Array<() => unknown> = []

function recorder(): { lines: string[]; logger: (level: LogLevel, message: string) => void } {
  const lines: string[] = []
  return { lines, logger: (level, message) => lines.push(`${level} ${message}`) }
}

/** Write `payload` on `from`, read as many bytes on `to`; resolves with the sha256 of what `to` read. */
function oneWay(from: Socket, to: Socket, payload: Buffer, timeoutMs = 60_000): Promise<string> {
  const received = readBytes(to, payload.length, timeoutMs)
  from.write(payload)
  return received
}

/** Read `expect` bytes from `socket` (then stop listening); resolves with their sha256. */
function readBytes(socket: Socket, expect: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    let got = 0
    const done = (err?: Error): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('error', done)
      socket.off('close', onClose)
      if (err) reject(err)
      else resolve(hash.digest('hex'))
    }
    const timer = setTimeout(() => done(new Error(`received ${got} of ${expect} bytes in ${timeoutMs} ms`)), timeoutMs)
    const onData = (chunk: Buffer): void => {
      const take = chunk.subarray(0, Math.max(0, expect - got))
      hash.update(take)
      got += take.length
      if (got >= expect) done()
    }
    const onClose = (): void => done(new Error(`closed after ${got} of ${expect} bytes`))
    socket.on('data', onData)
    socket.on('error', done)
    socket.on('close', onClose)
  })
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function allocateOn(server: Coturn, extra: Partial<Parameters<typeof TurnTcpClient.allocate>[0]> = {}): Promise<TurnAllocation> {
  return TurnTcpClient.allocate({ server: `127.0.0.1:${server.port}`, username: COTURN_USER, password: COTURN_PASS, realm: COTURN_REALM, ...extra })
}

function socketHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TLSWrap' || r === 'TCPWrap').length
}

describe('TURN over TCP/TLS with TCP relays (RFC 6062) against coturn', { timeout: 180_000 }, () => {
  before(async () => {
    if (skip) return
    certDir = tempDir()
    certs = throwawayCertificate(certDir)
    main = await startLoopbackCoturn({ tls: { cert: certs.cert, key: certs.key } })
  })

  after(async () => {
    for (const c of cleanups.reverse()) await c()
    await main?.stop()
    certDir?.remove()
  })

  test(
    'allocation over TCP: relayed and mapped addresses reported, then an outside client reaches us through the relay (4 MiB each way, sha256)',
    { skip, timeout: 60_000 },
    async () => {
      const rec = recorder()
      const t0 = performance.now()
      const allocation = await allocateOn(main!, { logger: rec.logger })
      const allocateMs = performance.now() - t0
      cleanups.push(() => allocation.close())
      assert.equal(allocation.relayedAddress.address, '127.0.0.1')
      assert.ok(allocation.relayedAddress.port >= 40000 && allocation.relayedAddress.port < 60000, `relayed port ${allocation.relayedAddress.port}`)
      assert.equal(allocation.mappedAddress?.address, '127.0.0.1')
      assert.ok(allocation.lifetimeS > 0)
      assert.ok(
        rec.lines.some((l) => l.includes(`TCP relay 127.0.0.1:${allocation.relayedAddress.port}`)),
        rec.lines.join('\n'),
      )

      // a peer that has no permission is not relayed to us (coturn refuses it; we would ignore it too)
      assert.deepEqual(await allocation.permit([PEER_IP, '::1']), [PEER_IP], 'the IPv6 address is skipped: the relay is IPv4')
      const arrived = once(allocation, 'connection') as Promise<[Socket, { address: string; port: number }]>
      const t1 = performance.now()
      const outside = connect({ host: allocation.relayedAddress.address, port: allocation.relayedAddress.port, localAddress: PEER_IP })
      outside.on('error', () => {})
      const [stream, peer] = await arrived
      const acceptMs = performance.now() - t1
      assert.equal(peer.address, PEER_IP)
      if (outside.connecting) await once(outside, 'connect')
      assert.equal(peer.port, outside.localPort, "the peer address is the outside client's")

      const fromPeer = randomBytes(4 * MiB)
      const fromUs = randomBytes(4 * MiB)
      const t2 = performance.now()
      // one direction at a time: coturn's RFC 6062 relay can stall with bulk both ways at once (README, "coturn")
      const weGot = await oneWay(outside, stream, fromPeer)
      const peerGot = await oneWay(stream, outside, fromUs)
      const seconds = (performance.now() - t2) / 1000
      assert.equal(weGot, sha256(fromPeer), 'bytes from the peer arrived intact')
      assert.equal(peerGot, sha256(fromUs), 'bytes to the peer arrived intact')
      assert.equal(allocation.stats.accepted, 1)
      assert.equal(allocation.connections, 1)
      process.stdout.write(
        `TURN/TCP: allocate ${allocateMs.toFixed(1)} ms, inbound relayed connection ${acceptMs.toFixed(1)} ms, 2 × 4 MiB through the relay at ${(8 / seconds).toFixed(1)} MiB/s (informative)\n`,
      )
      outside.destroy()
      await allocation.close()
      assert.equal(allocation.connections, 0, 'close() ends the relayed connections')
    },
  )

  test('connect(): an outside TCP server reached through the relay (4 MiB each way, sha256); an unreachable peer is TURN_UNREACHABLE', { skip, timeout: 60_000 }, async () => {
    const allocation = await allocateOn(main!)
    cleanups.push(() => allocation.close())
    const server: Server = createServer()
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve))
    server.listen(0, PEER_IP)
    await once(server, 'listening')
    cleanups.push(() => new Promise((r) => server.close(r)))
    const port = (server.address() as { port: number }).port
    const t0 = performance.now()
    const stream = await allocation.connect({ address: PEER_IP, port })
    const connectMs = performance.now() - t0
    const far = await accepted
    far.on('error', () => {})
    assert.equal(far.remoteAddress, '127.0.0.1', 'the server sees the relay')
    assert.equal(far.remotePort, allocation.relayedAddress.port, 'from the relayed address')
    assert.deepEqual(allocation.permissions, [PEER_IP], 'connect() gave the peer a permission')
    const up = randomBytes(4 * MiB)
    const down = randomBytes(4 * MiB)
    const farGot = await oneWay(stream, far, up)
    const weGot = await oneWay(far, stream, down)
    assert.equal(farGot, sha256(up))
    assert.equal(weGot, sha256(down))
    assert.equal(allocation.stats.connected, 1)
    process.stdout.write(`TURN/TCP: outbound relayed connection (CONNECT + bind) ${connectMs.toFixed(1)} ms (informative)\n`)
    far.destroy()

    // nobody listens there: coturn answers 447 (or fails the connection) → TURN_UNREACHABLE naming the peer
    const closedPort = await freeTcpPort(PEER_IP)
    await assert.rejects(allocation.connect({ address: PEER_IP, port: closedPort }, { timeoutMs: 20_000 }), (err: DhtnetError) => {
      assert.equal(err.code, 'TURN_UNREACHABLE', err.message)
      assert.match(err.message, new RegExp(`${PEER_IP}:${closedPort}`))
      return true
    })
    assert.equal(allocation.closed, false, 'a failed connect() does not end the allocation')
    await allocation.close()
  })

  test('allocation over TLS (turns:, throwaway CA trusted): relayed connection works; an untrusted certificate is TLS_FAILED', { skip, timeout: 60_000 }, async () => {
    const t0 = performance.now()
    const allocation = await TurnTcpClient.allocate({
      server: `turns:127.0.0.1:${main!.tlsPort}`,
      username: COTURN_USER,
      password: COTURN_PASS,
      tls: { ca: certs!.certPem },
    })
    const allocateMs = performance.now() - t0
    cleanups.push(() => allocation.close())
    assert.equal(allocation.relayedAddress.address, '127.0.0.1')
    assert.match(allocation.serverDescription, /^turns:/)
    await allocation.permit([PEER_IP])
    const arrived = once(allocation, 'connection') as Promise<[Socket, unknown]>
    const outside = connect({ host: '127.0.0.1', port: allocation.relayedAddress.port, localAddress: PEER_IP })
    outside.on('error', () => {})
    const [stream] = await arrived
    const a = randomBytes(256 * 1024)
    const b = randomBytes(256 * 1024)
    const weGot = await oneWay(outside, stream, a)
    const outsideGot = await oneWay(stream, outside, b)
    assert.equal(outsideGot, sha256(b))
    assert.equal(weGot, sha256(a))
    process.stdout.write(`TURN/TLS: allocate ${allocateMs.toFixed(1)} ms (informative)\n`)
    outside.destroy()
    await allocation.close()

    await assert.rejects(
      TurnTcpClient.allocate({ server: `turns:127.0.0.1:${main!.tlsPort}`, username: COTURN_USER, password: COTURN_PASS }),
      (err: DhtnetError) => err.code === 'TLS_FAILED' && !err.message.includes(COTURN_PASS),
    )
  })

  test('a wrong password is TURN_AUTH_FAILED within seconds, and neither the password nor the user name is in any log line or error', { skip, timeout: 60_000 }, async () => {
    const wrong = 'Wrong-Pa55word-xyzzy'
    for (const server of [`127.0.0.1:${main!.port}`, `turn:${encodeURIComponent(COTURN_USER)}:${wrong}@127.0.0.1:${main!.port}?transport=tcp`]) {
      const rec = recorder()
      const t0 = performance.now()
      const err = await TurnTcpClient.allocate({
        server,
        ...(server.includes('@') ? {} : { username: COTURN_USER, password: wrong }),
        logger: rec.logger,
      }).then(
        (a) => {
          void a.close()
          throw new Error('allocated with a wrong password')
        },
        (e: unknown) => e as DhtnetError,
      )
      const ms = performance.now() - t0
      assert.ok(isDhtnetError(err, 'TURN_AUTH_FAILED'), String(err))
      assert.ok(ms < 5000, `took ${ms} ms`)
      assert.ok(err.hint && /password/.test(err.hint))
      const everything = [err.message, err.hint, String(err.stack), String((err.cause as Error | undefined)?.message), ...rec.lines].join('\n')
      for (const secret of [wrong, COTURN_PASS, COTURN_USER]) assert.ok(!everything.includes(secret), `"${secret}" leaked:\n${everything}`)
    }
  })

  test('server down: refused connection and a silent server are TURN_UNREACHABLE within the bound, nothing left open', { skip, timeout: 60_000 }, async () => {
    const before = socketHandles()
    const closedPort = await freeTcpPort()
    const t0 = performance.now()
    await assert.rejects(
      TurnTcpClient.allocate({ server: `127.0.0.1:${closedPort}`, username: 'u', password: 'p' }),
      (err: DhtnetError) => err.code === 'TURN_UNREACHABLE' && /ECONNREFUSED/.test(err.message),
    )
    assert.ok(performance.now() - t0 < 3000)

    // accepts the connection and never answers: the transaction timeout bounds it
    const silent = createServer((s) => s.on('error', () => {}))
    const seen: Socket[] = []
    let closedByUs = 0
    silent.on('connection', (s) => {
      seen.push(s)
      s.on('close', () => closedByUs++)
      s.resume()
    })
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    const port = (silent.address() as { port: number }).port
    const t1 = performance.now()
    await assert.rejects(
      TurnTcpClient.allocate({ server: `127.0.0.1:${port}`, username: 'u', password: 'p', timeouts: { transactionMs: 1000 } }),
      (err: DhtnetError) => err.code === 'TURN_UNREACHABLE' && /no answer/.test(err.message),
    )
    const ms = performance.now() - t1
    assert.ok(ms >= 900 && ms < 4000, `${ms} ms`)
    // the whole-allocation bound applies too
    await assert.rejects(
      TurnTcpClient.allocate({ server: `127.0.0.1:${port}`, username: 'u', password: 'p', timeouts: { allocateMs: 700 } }),
      (err: DhtnetError) => err.code === 'TURN_UNREACHABLE' && /within 700 ms/.test(err.message),
    )
    // aborting is ABORTED
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    await assert.rejects(TurnTcpClient.allocate({ server: `127.0.0.1:${port}`, username: 'u', password: 'p', signal: ac.signal }), (err: DhtnetError) => err.code === 'ABORTED')
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(seen.length, 3)
    assert.equal(closedByUs, 3, 'our side closed every connection')
    silent.close()
    for (const s of seen) s.destroy()
    await new Promise((r) => setTimeout(r, 50))
    assert.ok(socketHandles() <= before, 'no socket left')
  })

  test('a server that allows no TCP relay (442) is TURN_REFUSED naming it', { skip, timeout: 60_000 }, async () => {
    const noRelay = await startLoopbackCoturn({ noTcpRelay: true })
    try {
      await assert.rejects(allocateOn(noRelay), (err: DhtnetError) => {
        assert.equal(err.code, 'TURN_REFUSED', err.message)
        assert.match(err.message, /442|TCP relays are not allowed/)
        return true
      })
    } finally {
      await noRelay.stop()
    }
  })

  test('refresh keeps an allocation and its relayed connection alive past 3 lifetimes (coturn max lifetime 6 s)', { skip, timeout: 90_000 }, async () => {
    const short = await startLoopbackCoturn({ maxLifetimeS: 6 })
    cleanups.push(() => short.stop())
    const allocation = await allocateOn(short)
    cleanups.push(() => allocation.close())
    assert.equal(allocation.lifetimeS, 6, 'coturn granted its maximum')
    await allocation.permit([PEER_IP])
    const arrived = once(allocation, 'connection') as Promise<[Socket, unknown]>
    const outside = connect({ host: '127.0.0.1', port: allocation.relayedAddress.port, localAddress: PEER_IP })
    outside.on('error', () => {})
    const [stream] = await arrived
    stream.on('data', (d: Buffer) => stream.write(d)) // echo
    let closedEarly = false
    allocation.on('close', () => (closedEarly = true))
    const start = Date.now()
    let rounds = 0
    while (Date.now() - start < 19_000) {
      const msg = randomBytes(1000)
      const got = await sendAndReceiveOnce(outside, msg)
      assert.equal(sha256(got), sha256(msg), `round ${rounds}`)
      rounds++
      await new Promise((r) => setTimeout(r, 1000))
    }
    assert.equal(closedEarly, false)
    assert.ok(allocation.stats.refreshes >= 3, `${allocation.stats.refreshes} refreshes in 19 s`)
    assert.ok(allocation.expiresAt > Date.now(), 'not expired')
    assert.ok(short.process.output.filter((l) => /refreshed, realm=<turn.test>, username=<turn-tester>, lifetime=6/.test(l)).length >= 3, 'coturn logged the refreshes')
    // and a new peer can still connect to the relayed address (the allocation exists at the server)
    const second = once(allocation, 'connection') as Promise<[Socket, unknown]>
    const outside2 = connect({ host: '127.0.0.1', port: allocation.relayedAddress.port, localAddress: PEER_IP })
    outside2.on('error', () => {})
    await second
    outside.destroy()
    outside2.destroy()
    await allocation.close()
    // the refresh timer is gone: no refresh in the next 4 s (one would come every 3 s)
    const refreshesAtClose = short.process.output.filter((l) => /refreshed, realm=<turn.test>/.test(l)).length
    await new Promise((r) => setTimeout(r, 4000))
    assert.equal(short.process.output.filter((l) => /refreshed, realm=<turn.test>/.test(l)).length, refreshesAtClose)
  })

  test('close() deallocates (user quota 1 admits a new allocation only after it; coturn logs lifetime 0) and leaves no socket or timer', { skip, timeout: 60_000 }, async () => {
    const quota = await startLoopbackCoturn({ userQuota: 1 })
    cleanups.push(() => quota.stop())
    const before = socketHandles()
    const first = await allocateOn(quota)
    await assert.rejects(allocateOn(quota), (err: DhtnetError) => {
      assert.equal(err.code, 'TURN_REFUSED', err.message)
      assert.match(err.message, /486|quota/i)
      return true
    })
    let closeEvent: unknown = 'none'
    first.on('close', (e) => (closeEvent = e))
    await first.close()
    assert.equal(closeEvent, undefined, "'close' without an error")
    assert.ok(
      quota.process.output.some((l) => /refreshed, realm=<turn.test>, username=<turn-tester>, lifetime=0/.test(l)),
      'coturn saw the deallocation',
    )
    const second = await allocateOn(quota)
    await second.close()
    await first.close() // idempotent
    await new Promise((r) => setTimeout(r, 50))
    assert.ok(socketHandles() <= before, 'no socket left after close()')
    await assert.rejects(first.permit([PEER_IP]), (err: DhtnetError) => err.code === 'TRANSPORT_CLOSED')
  })
})

/** Write `msg` and read back exactly as many bytes (an echo). */
function sendAndReceiveOnce(socket: Socket, msg: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let got = 0
    const timer = setTimeout(() => {
      socket.off('data', onData)
      reject(new Error(`echo: ${got} of ${msg.length} bytes in 10 s`))
    }, 10_000)
    const onData = (d: Buffer): void => {
      parts.push(d)
      got += d.length
      if (got >= msg.length) {
        clearTimeout(timer)
        socket.off('data', onData)
        resolve(Buffer.concat(parts))
      }
    }
    socket.on('data', onData)
    socket.write(msg)
  })
}
