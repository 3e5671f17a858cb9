/**
 * The responder's race between transports (connection/transports.ts firstLink) prefers a direct link to a relayed one:
 * a relayed link waits for a direct one until RELAYED_LINK_GRACE_MS after the start while another attempt is pending;
 * it wins at once when nothing else can come; a second relayed link loses to the first; a deadline that expires
 * while a relayed link waits closes it. Links and sessions are small fakes: only the race is under test.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { firstLink, type Attempt } from '../src/connection/transports.js'
import type { Link, PathInfo, TransportName, TransportSession } from '../src/transport/transport.js'
import { Deadline } from '../src/util/deadline.js'
import { DhtnetError } from '../src/errors.js'

class FakeLink extends EventEmitter implements Link {
  closed = false
  readonly wireBytesIn = 0
  readonly wireBytesOut = 0
  constructor(
    readonly transport: TransportName,
    readonly path: PathInfo,
  ) {
    super()
  }
  close(err?: Error): void {
    if (this.closed) return
    this.closed = true
    this.emit('close', err)
  }
}

function attempt(transport: TransportName): { attempt: Attempt; closed: () => boolean } {
  let closed = false
  const session: TransportSession = {
    localDescription: '',
    connect: () => Promise.reject(new Error('not used')),
    close: () => {
      closed = true
    },
  }
  return { attempt: { transport, session, controller: new AbortController() }, closed: () => closed }
}

const relayed = (t: TransportName): FakeLink => new FakeLink(t, { transport: t, candidatePair: 'host/relay', relay: t === 'ice-tcp' ? 'tcp' : 'udp' })
const direct = (t: TransportName): FakeLink => new FakeLink(t, { transport: t, candidatePair: 'srflx/srflx' })
const later = <T>(ms: number, value: T | Error): Promise<T> => new Promise((resolve, reject) => setTimeout(() => (value instanceof Error ? reject(value) : resolve(value)), ms))

test('a relayed link waits for the direct one another transport brings within the grace', async () => {
  const tcp = attempt('ice-tcp')
  const rtc = attempt('webrtc')
  const relay = relayed('ice-tcp')
  const straight = direct('webrtc')
  const deadline = new Deadline(10_000, 'test')
  const t0 = performance.now()
  const { link, attempt: winner } = await firstLink([tcp.attempt, rtc.attempt], (a) => (a === tcp.attempt ? later(20, relay) : later(300, straight)), deadline, 6000)
  deadline.dispose()
  assert.equal(link, straight)
  assert.equal(winner, rtc.attempt)
  assert.ok(relay.closed, 'the relayed link was closed')
  assert.ok(tcp.closed(), 'the losing session was closed')
  assert.ok(performance.now() - t0 < 5000, 'taken when the direct link came, not at the grace')
})

test('a relayed link wins at once when the other transport fails, and at the grace when it is still trying', async () => {
  const a = attempt('ice-tcp')
  const b = attempt('webrtc')
  const relay = relayed('ice-tcp')
  const d1 = new Deadline(10_000, 'test')
  const t0 = performance.now()
  const first = await firstLink([a.attempt, b.attempt], (x) => (x === a.attempt ? later(20, relay) : later<Link>(100, new DhtnetError('UDP_BLOCKED', 'no UDP'))), d1, 6000)
  d1.dispose()
  assert.equal(first.link, relay)
  assert.ok(performance.now() - t0 < 5000, 'no need to wait (for the grace) once nothing else can come')

  const c = attempt('ice-tcp')
  const d = attempt('webrtc')
  const relay2 = relayed('ice-tcp')
  const d2 = new Deadline(10_000, 'test')
  const t1 = performance.now()
  const second = await firstLink([c.attempt, d.attempt], (x) => (x === c.attempt ? later(20, relay2) : new Promise<Link>(() => {})), d2, 400)
  d2.dispose()
  assert.equal(second.link, relay2)
  const waited = performance.now() - t1
  assert.ok(waited >= 390 && waited < 9000, `waited ${waited} ms: at the grace, not at the deadline`)
  assert.ok(d.closed(), 'the attempt still trying was closed')
})

test('two relayed links: the first is kept, the second closed', async () => {
  const a = attempt('ice-tcp')
  const b = attempt('webrtc')
  const r1 = relayed('ice-tcp')
  const r2 = relayed('webrtc')
  const deadline = new Deadline(10_000, 'test')
  const { link } = await firstLink([a.attempt, b.attempt], (x) => (x === a.attempt ? later(10, r1) : later(50, r2)), deadline, 5000)
  deadline.dispose()
  assert.equal(link, r1)
  assert.ok(r2.closed)
  assert.ok(!r1.closed)
})

test('the deadline expires while a relayed link waits: the link is closed and the race rejects', async () => {
  const a = attempt('ice-tcp')
  const b = attempt('webrtc')
  const relay = relayed('ice-tcp')
  const deadline = new Deadline(200, 'test')
  const race = firstLink(
    [a.attempt, b.attempt],
    (x) =>
      x === a.attempt
        ? later(10, relay)
        : new Promise<Link>((_resolve, reject) => deadline.signal.addEventListener('abort', () => reject(new DhtnetError('ABORTED', 'aborted')), { once: true })),
    deadline,
    5000,
  )
  await assert.rejects(race, (err: unknown) => err instanceof DhtnetError && err.code === 'TIMEOUT')
  deadline.dispose()
  assert.ok(relay.closed, 'nobody may be left holding the relayed link')
})
