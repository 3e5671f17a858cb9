/**
 * A connection attempt that meets a transient transport failure is retried once, on a new connection; a failure
 * that says something about the peer (a wrong identity) or about the network (no path) is not.
 *
 * Why: libdatachannel (node-datachannel 0.33.4, libdatachannel 0.24.5, OpenSSL 1.1.1) now and then fails a DTLS
 * handshake with "Handshake failed: fatal I/O error" while nothing is wrong on the wire (CI's NAT lab, eim↔eim); a
 * new peer connection succeeds. transport.test.ts checks that a real failed DTLS handshake is reported as retryable;
 * here a transport plug-in wrapped around the real WebRTC transport fails its first session that way, and the
 * connection layer must still deliver the bytes. Real in-process DHT, real WebRTC on loopback.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { DhtnetError, isDhtnetError } from '../src/errors.js'
import { combinedFailure } from '../src/connection/transports.js'
import { Deadline } from '../src/util/deadline.js'
import { toLogger } from '../src/util/log.js'
import { WebRtcTransport } from '../src/transport/webrtc/webrtc-transport.js'
import type { Transport, TransportSession, TransportSessionContext } from '../src/transport/transport.js'
import { livePeerConnections } from '../src/transport/webrtc/native.js'
import { TestNet, type TestDevice } from './helpers/testnet.js'

/** The real WebRTC transport, whose first `failures.length` sessions fail their connect with the given errors. */
class FailingFirst implements Transport {
  readonly name = 'webrtc'
  sessions = 0
  constructor(
    private readonly inner: Transport,
    private readonly failures: Error[],
  ) {}
  async createSession(context: TransportSessionContext): Promise<TransportSession> {
    const session = await this.inner.createSession(context)
    this.sessions++
    const failure = this.failures.shift()
    if (!failure) return session
    return {
      localDescription: session.localDescription,
      connect: () => {
        session.close(failure)
        return Promise.reject(failure)
      },
      close: (err) => session.close(err),
    }
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

let net: TestNet
let bob: TestDevice

before(async () => {
  net = await TestNet.create()
  bob = await net.addDevice('bob', {
    transport: 'webrtc',
    onConnectionReady: (_peer, _name, socket) => {
      if (!('pipe' in socket) || socket.initiator) return
      socket.on('error', () => {}) // the requester resets the channel when it is done
      socket.pipe(socket)
    },
  })
})

after(async () => {
  await (net as TestNet | undefined)?.close()
  assert.equal(livePeerConnections(), 0)
})

async function requester(name: string, failures: Error[]): Promise<{ device: TestDevice; transport: FailingFirst }> {
  const identity = await net.newIdentity(name)
  const transport = new FailingFirst(new WebRtcTransport({ identity, bindAddress: '127.0.0.1', logger: toLogger(undefined) }), failures)
  const device = await net.addDevice(name, { identity, transport: 'webrtc', transports: [transport] })
  return { device, transport }
}

test('a retryable failure (a DTLS handshake that failed after ICE connected) is retried once: the bytes arrive', async () => {
  const dtls = new DhtnetError('ICE_FAILED', 'the DTLS handshake failed after ICE connected (injected)', { retryable: true })
  const { device, transport } = await requester('alice', [dtls])
  const channel = await device.cm.connectDevice(bob.identity.id, 'echo')
  channel.write('after one retry')
  const [data] = (await once(channel, 'data')) as [Buffer]
  assert.equal(String(data), 'after one retry')
  assert.equal(transport.sessions, 2, 'a second session (a new request) after the failed one')
  channel.destroy()
})

test('retried only once: two retryable failures in a row are reported', async () => {
  const fail = () => new DhtnetError('ICE_FAILED', 'the DTLS handshake failed after ICE connected (injected)', { retryable: true })
  const { device, transport } = await requester('carol', [fail(), fail()])
  await assert.rejects(device.cm.connectDevice(bob.identity.id, 'echo'), (e: unknown) => isDhtnetError(e, 'ICE_FAILED') && /injected/.test(e.message))
  assert.equal(transport.sessions, 2)
})

test('a failure that is not transient is not retried', async () => {
  const { device, transport } = await requester('dave', [new DhtnetError('ICE_FAILED', 'ICE found no working path to the peer (injected)')])
  await assert.rejects(device.cm.connectDevice(bob.identity.id, 'echo'), (e: unknown) => isDhtnetError(e, 'ICE_FAILED') && /injected/.test(e.message))
  assert.equal(transport.sessions, 1)
})

test('the combined failure of several transports is retryable when one was transient, not when a peer proved the wrong identity', () => {
  const deadline = new Deadline(10_000, 'test')
  try {
    const transient = new DhtnetError('ICE_FAILED', 'DTLS failed', { retryable: true })
    const noPath = new DhtnetError('ICE_FAILED', 'no TCP path')
    const one = combinedFailure(
      [
        { transport: 'webrtc', error: transient },
        { transport: 'ice-tcp', error: noPath },
      ],
      deadline,
    )
    assert.ok(isDhtnetError(one, 'ICE_FAILED') && one.retryable, 'transient + no path: retry')
    assert.match(one.message, /webrtc: DTLS failed; ice-tcp: no TCP path/)
    const none = combinedFailure(
      [
        { transport: 'webrtc', error: new DhtnetError('UDP_BLOCKED', 'no UDP') },
        { transport: 'ice-tcp', error: noPath },
      ],
      deadline,
    )
    assert.ok(isDhtnetError(none, 'UDP_BLOCKED') && !none.retryable, 'nothing transient: no retry')
    const impostor = combinedFailure(
      [
        { transport: 'webrtc', error: transient },
        { transport: 'ice-tcp', error: new DhtnetError('IDENTITY_MISMATCH', 'another device answered') },
      ],
      deadline,
    )
    assert.ok(isDhtnetError(impostor, 'IDENTITY_MISMATCH') && !impostor.retryable, 'a wrong identity is never retried')
  } finally {
    deadline.dispose()
  }
})
