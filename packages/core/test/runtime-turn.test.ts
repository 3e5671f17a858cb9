/**
 * The tools' TURN settings → each transport's relay (runtime/turn.ts): one server serves both relays by default;
 * turn_transport picks one; URIs name the transport; credentials never appear in an error.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { turnSettings } from '../src/runtime/turn.js'
import { isDhtnetError } from '../src/errors.js'
import { mutateBytes, randomBuffer, rng } from './helpers/fuzz.js'

const cred = { user: 'alice', pass: 'Sesame-secret' }

test('no transport: a UDP relay for WebRTC and a TCP relay for ICE-TCP on the same server', () => {
  const s = turnSettings({ host: 'turn.example.org', ...cred, realm: 'example' })
  assert.deepEqual(s.iceServers, [{ url: 'turn:turn.example.org:3478', username: 'alice', password: 'Sesame-secret' }])
  assert.deepEqual(s.tcpRelay, { server: 'turn.example.org:3478', transport: 'tcp', username: 'alice', password: 'Sesame-secret', realm: 'example' })
  const p = turnSettings({ host: '198.51.100.10:3479', ...cred })
  assert.equal(p.tcpRelay?.server, '198.51.100.10:3479')
  assert.equal((p.iceServers[0] as { url: string }).url, 'turn:198.51.100.10:3479')
})

test('turn_transport udp / tcp / tls picks one relay; tls defaults to port 5349', () => {
  const udp = turnSettings({ host: 'h', ...cred, transport: 'udp' })
  assert.equal(udp.iceServers.length, 1)
  assert.equal(udp.tcpRelay, undefined)
  const tcp = turnSettings({ host: 'h', ...cred, transport: 'tcp' })
  assert.deepEqual(tcp.iceServers, [])
  assert.equal(tcp.tcpRelay?.server, 'h:3478')
  assert.equal(tcp.tcpRelay.transport, 'tcp')
  const tls = turnSettings({ host: 'h', ...cred, transport: 'tls' })
  assert.deepEqual(tls.iceServers, [])
  assert.deepEqual([tls.tcpRelay?.server, tls.tcpRelay?.transport], ['h:5349', 'tls'])
})

test('URIs name the transport (the option wins): turns:, ?transport=tcp, ?transport=udp, IPv6 in brackets', () => {
  assert.equal(turnSettings({ host: 'turns:h', ...cred }).tcpRelay?.transport, 'tls')
  assert.deepEqual(turnSettings({ host: 'turn:h?transport=tcp', ...cred }).iceServers, [])
  assert.equal(turnSettings({ host: 'turn:h:3478?transport=udp', ...cred }).tcpRelay, undefined)
  assert.equal(turnSettings({ host: 'turn:h?transport=udp', ...cred, transport: 'tcp' }).tcpRelay?.transport, 'tcp')
  assert.equal(turnSettings({ host: '[2001:db8::1]:3478', ...cred }).tcpRelay?.server, '[2001:db8::1]:3478')
})

test('bad settings are typed errors that never show the password', () => {
  const cases: Array<[Parameters<typeof turnSettings>[0], string, RegExp]> = [
    [{ host: 'h' }, 'BAD_ICE_SERVER', /needs a user name and a password/],
    [{ host: 'h', user: 'alice' }, 'BAD_ICE_SERVER', /needs a user name and a password/],
    [{ host: 'turn:h?transport=sctp', ...cred }, 'BAD_ICE_SERVER', /unknown transport "sctp"/],
    [{ host: 'turn:alice:Sesame-secret@h', ...cred }, 'BAD_ICE_SERVER', /give the credentials with -u and -w/],
    [{ host: 'stun:h', ...cred }, 'BAD_ICE_SERVER', /not a TURN server/],
    [{ host: 'h:99999', ...cred }, 'BAD_ICE_SERVER', /invalid port/],
    [{ host: 'h', ...cred, transport: 'quic' as never }, 'BAD_OPTION', /unknown TURN transport/],
  ]
  for (const [input, code, message] of cases) {
    assert.throws(
      () => turnSettings(input),
      (err: unknown) => {
        assert.ok(isDhtnetError(err, code as never), String(err))
        assert.match((err as Error).message, message)
        assert.doesNotMatch(`${(err as Error).message} ${(err as { hint?: string }).hint ?? ''}`, /Sesame-secret/)
        return true
      },
    )
  }
})

test('fuzz: 20,000 random and mutated TURN settings give a result or a DhtnetError, never another exception', () => {
  const next = rng(0x7e4a)
  const seeds = ['turn.example.org', 'turn:h:3478?transport=tcp', 'turns:[2001:db8::1]:5349', '198.51.100.10:3478', 'turn:u:p@h', 'stun:h']
  const transports = [undefined, 'udp', 'tcp', 'tls', 'quic', ''] as const
  let errors = 0
  for (let i = 0; i < 20_000; i++) {
    const base = Buffer.from(seeds[next() % seeds.length]!)
    const host = (next() % 3 === 0 ? randomBuffer(next, 40) : mutateBytes(base, next)).toString('latin1')
    const input = { host, user: next() % 5 === 0 ? '' : 'u', pass: next() % 7 === 0 ? undefined : 'secret-Xy', transport: transports[next() % transports.length] as never }
    try {
      const s = turnSettings(input)
      assert.ok(s.iceServers.length > 0 || s.tcpRelay !== undefined)
    } catch (err) {
      assert.ok(isDhtnetError(err), `not a DhtnetError for ${JSON.stringify(host)}: ${String(err)}`)
      assert.ok(!(err as Error).message.includes('secret-Xy'))
      errors++
    }
  }
  assert.ok(errors > 1000 && errors < 20_000, `${errors} refused`)
})
