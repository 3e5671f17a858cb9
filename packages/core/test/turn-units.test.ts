/**
 * TURN/TCP pieces without a server: server address forms (and that credentials in them never reach an error),
 * TURN attribute values, credential checks before any connection.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseTurnServer, TurnTcpClient, encodeConnectionId, encodeRequestedTransport } from '../src/transport/turn/index.js'
import { classifyTurnError } from '../src/transport/turn/attributes.js'
import { isDhtnetError } from '../src/errors.js'

test('parseTurnServer: host:port, [v6]:port, turn:/turns: URIs, default ports, transport, credentials taken out', () => {
  assert.deepEqual(parseTurnServer('turn.example.org'), { host: 'turn.example.org', port: 3478, transport: 'tcp' })
  assert.deepEqual(parseTurnServer('198.51.100.10:3479'), { host: '198.51.100.10', port: 3479, transport: 'tcp' })
  assert.deepEqual(parseTurnServer('[2001:db8::1]:3478'), { host: '2001:db8::1', port: 3478, transport: 'tcp' })
  assert.deepEqual(parseTurnServer('turn:turn.example.org?transport=tcp'), { host: 'turn.example.org', port: 3478, transport: 'tcp' })
  assert.deepEqual(parseTurnServer('turns:turn.example.org'), { host: 'turn.example.org', port: 5349, transport: 'tls' })
  assert.deepEqual(parseTurnServer('turn:h:443?transport=tls'), { host: 'h', port: 443, transport: 'tls' })
  assert.deepEqual(parseTurnServer('h', 'tls'), { host: 'h', port: 5349, transport: 'tls' })
  assert.deepEqual(parseTurnServer(new URL('turns://h:5350')), { host: 'h', port: 5350, transport: 'tls' })
  assert.deepEqual(parseTurnServer('turn:al%40ice:s3cr%3At@h:3478'), { host: 'h', port: 3478, transport: 'tcp', username: 'al@ice', password: 's3cr:t' })
  for (const bad of ['', 'turn:', 'h:0', 'h:99999', '1:2:3', 'http://h', 'turn:h?transport=udp', 'turns:h?transport=tcp', 'turn:user@h']) {
    assert.throws(
      () => parseTurnServer(bad),
      (e) => isDhtnetError(e, 'BAD_ICE_SERVER') || isDhtnetError(e, 'UNSUPPORTED_TRANSPORT'),
      bad,
    )
  }
  // a password in a bad address is not echoed
  assert.throws(
    () => parseTurnServer('turn:user:Hunter2-secret@bad host'),
    (e) => isDhtnetError(e, 'BAD_ICE_SERVER') && !(e as Error).message.includes('Hunter2') && !String((e as Error & { hint?: string }).hint).includes('Hunter2'),
  )
})

test('TURN attribute values and error meanings', () => {
  assert.deepEqual([...encodeRequestedTransport()], [6, 0, 0, 0])
  assert.deepEqual([...encodeConnectionId(0x01020304)], [1, 2, 3, 4])
  assert.throws(
    () => encodeConnectionId(-1),
    (e) => isDhtnetError(e, 'INVALID_ARGUMENT'),
  )
  assert.equal(classifyTurnError(401), 'challenge')
  assert.equal(classifyTurnError(438), 'challenge')
  assert.equal(classifyTurnError(441), 'auth-failed')
  for (const code of [403, 442, 486, 508, 446]) assert.equal(classifyTurnError(code), 'refused')
  assert.equal(classifyTurnError(447), 'peer-unreachable')
  assert.equal(classifyTurnError(437), 'allocation-gone')
})

test('allocate() refuses missing credentials and bad lifetimes before connecting, without echoing anything secret', async () => {
  await assert.rejects(TurnTcpClient.allocate({ server: '127.0.0.1:1' }), (e) => isDhtnetError(e, 'BAD_ICE_SERVER') && /user name and a password/.test((e as Error).message))
  await assert.rejects(TurnTcpClient.allocate({ server: '127.0.0.1:1', username: 'u', password: '' }), (e) => isDhtnetError(e, 'BAD_ICE_SERVER'))
  await assert.rejects(TurnTcpClient.allocate({ server: '127.0.0.1:1', username: 'u', password: 'p', lifetimeS: 0 }), (e) => isDhtnetError(e, 'INVALID_ARGUMENT'))
  const ac = new AbortController()
  ac.abort()
  await assert.rejects(TurnTcpClient.allocate({ server: '127.0.0.1:1', username: 'u', password: 'p', signal: ac.signal }), (e) => isDhtnetError(e, 'ABORTED'))
})
