/**
 * NAT lab, networks that block UDP (issue 9): routers that drop UDP except to the DHT bootstrap ('blockudp'), coturn
 * with TCP relays (RFC 6062) and a short allocation lifetime (10 s), devices configured as the tools configure them
 * (the runtime's `turn`: one server for WebRTC's UDP relay and ICE-TCP's TCP relay).
 *
 *  - blockudp ↔ eim and blockudp ↔ blockudp with TURN, and blockudp with TURN ↔ eim without (the peer connects to
 *    our relay once we permitted it, on the answer): connected through coturn's TCP relay, 16 MiB echoed with SHA-256,
 *    `connections()` reporting `ice-tcp relay (TCP)` on both sides;
 *  - blockudp ↔ eim with no TURN: UDP_BLOCKED (naming blocked UDP, suggesting TURN over TCP) within 10 s;
 *  - a wrong TURN password: TURN_AUTH_FAILED within the connect timeout, and neither password in any log line of
 *    either device (every level) nor in coturn's output;
 *  - eim ↔ eim with TURN: direct, the relay unused;
 *  - a relayed connection held 2.5 allocation lifetimes (bytes paced over ~25 s): every byte echoed, the allocation
 *    refreshed on the way.
 *
 * Skipped when not root or without `ip netns` (and coturn, installed by scripts/setup).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { labUnavailableReason } from './helpers/natlab/topology.js'
import { NatLabRun, formatTable, type CaseResult, type CaseSpec } from './helpers/natlab/harness.js'
import { TURN_PASS } from './helpers/natlab/procs.js'
import { coturnUnavailableReason } from './helpers/coturn.js'

const skip = labUnavailableReason() ?? coturnUnavailableReason()
const MiB = 1024 * 1024
const LIFETIME_S = 10
const results: CaseResult[] = []
let lab: NatLabRun | undefined

async function run(spec: Omit<CaseSpec, 'timeoutMs' | 'bytes'> & Partial<Pick<CaseSpec, 'timeoutMs' | 'bytes'>>): Promise<CaseResult> {
  assert.ok(lab, 'the lab did not start')
  const r = await lab.runCase({ bytes: 16 * MiB, timeoutMs: 30_000, ...spec })
  results.push(r)
  return r
}

function assertEchoed(r: CaseResult): void {
  const why = `${r.spec.name}: ${r.code ?? ''} ${r.message ?? ''}\n${r.logs}`
  assert.equal(r.ok, true, why)
  assert.equal(r.exitCode, 0, why)
  assert.equal(r.receivedBytes, r.spec.bytes, why)
  assert.match(r.sha256Sent ?? '', /^[0-9a-f]{64}$/)
  assert.equal(r.sha256Received, r.sha256Sent, why)
}

function assertTcpRelay(r: CaseResult): void {
  const why = `${r.spec.name}: A ${r.pathA} / B ${r.pathB}\n${r.logs}`
  assert.equal(r.relayA, 'tcp', why)
  assert.equal(r.relayB, 'tcp', why)
  assert.match(r.pathA ?? '', /^ice-tcp relay \(TCP\) (host\/relay|relay\/\w+) /, why)
  assert.match(r.pathB ?? '', /^ice-tcp relay \(TCP\) /, why)
}

describe('NAT lab: networks that block UDP (TURN over TCP, UDP_BLOCKED)', { timeout: 600_000 }, () => {
  before(async () => {
    if (skip) return
    lab = await NatLabRun.start({ maxAllocateLifetimeS: LIFETIME_S })
  })

  after(async () => {
    await lab?.close()
    if (results.length > 0) process.stdout.write(`\nNAT lab, UDP blocked (timings informative only)\n${formatTable(results)}\n\n`)
  })

  test('UDP blocked ↔ eim with TURN: through coturn\'s TCP relay, 16 MiB echoed byte-exact, path "relay (TCP)"', { skip }, async () => {
    const r = await run({ name: 'blockudp-eim turn/tcp', natA: 'blockudp', natB: 'eim', servers: 'stun', turn: {} })
    assertEchoed(r)
    assertTcpRelay(r)
  })

  test('UDP blocked with TURN ↔ eim without TURN: the peer reaches our relay (permission given on the answer), 16 MiB echoed', { skip }, async () => {
    const r = await run({ name: 'blockudp-eim turn on A only', natA: 'blockudp', natB: 'eim', servers: 'stun', turn: { onlyA: true } })
    assertEchoed(r)
    assertTcpRelay(r)
    assert.match(r.pathA ?? '', /relay \(TCP\) relay\//, `A's own relay carries it: ${r.pathA}`)
  })

  test('UDP blocked on both sides with TURN: through the TCP relay, 16 MiB echoed byte-exact', { skip }, async () => {
    const r = await run({ name: 'blockudp-blockudp turn/tcp', natA: 'blockudp', natB: 'blockudp', servers: 'stun', turn: {} })
    assertEchoed(r)
    assertTcpRelay(r)
  })

  test('UDP blocked with no TURN: UDP_BLOCKED naming blocked UDP and suggesting TURN over TCP, within 10 s', { skip }, async () => {
    const r = await run({ name: 'blockudp-eim no turn', natA: 'blockudp', natB: 'eim', servers: 'stun', bytes: MiB, timeoutMs: 20_000 })
    const why = `${r.code ?? ''} ${r.message ?? ''}\n${r.logs}`
    assert.equal(r.ok, false, `connected although UDP is blocked and no relay exists: ${why}`)
    assert.equal(r.code, 'UDP_BLOCKED', why)
    assert.match(r.message ?? '', /UDP seems blocked/, why)
    assert.match(r.message ?? '', /answered a STUN request over TCP but none over UDP/, why)
    assert.match(r.hint ?? '', /TURN server over TCP/, `hint: ${r.hint}`)
    assert.ok(r.elapsedMs !== undefined && r.elapsedMs <= 10_000, `gave up after ${r.elapsedMs} ms (goal: 10 s)`)
    assert.equal(r.exitCode, 1)
  })

  test('a wrong TURN password: TURN_AUTH_FAILED within the timeout, no password in any log', { skip }, async () => {
    const wrong = 'Wr0ng-natlab-passw0rd-7c1e'
    const r = await run({
      name: 'blockudp-eim bad password',
      natA: 'blockudp',
      natB: 'eim',
      servers: 'stun',
      turn: { passA: wrong, onlyA: true },
      bytes: MiB,
      timeoutMs: 20_000,
      keepLogs: true,
    })
    const why = `${r.code ?? ''} ${r.message ?? ''}\n${r.logs}`
    assert.equal(r.ok, false, why)
    assert.equal(r.code, 'TURN_AUTH_FAILED', why)
    assert.match(r.message ?? '', /TCP relay on turn:198\.51\.100\.10:3478 is unavailable/, why)
    assert.ok(r.elapsedMs !== undefined && r.elapsedMs <= 20_000 + 2000, `gave up after ${r.elapsedMs} ms`)
    assert.ok(r.allLogs && r.allLogs.length > 10_000, 'the devices logged at every level')
    assert.ok(r.allLogs.includes('TURN'), 'the logs talk about TURN')
    assert.ok(!r.allLogs.includes(wrong), 'the wrong password appears in a log')
    assert.ok(!r.allLogs.includes(TURN_PASS), "the lab's password appears in a log")
  })

  test('eim ↔ eim with TURN configured: direct, the relay unused', { skip }, async () => {
    const r = await run({ name: 'eim-eim turn', natA: 'eim', natB: 'eim', servers: 'stun', turn: {} })
    assertEchoed(r)
    const why = `A ${r.pathA} / B ${r.pathB}`
    assert.equal(r.relayA, undefined, why)
    assert.equal(r.relayB, undefined, why)
    for (const t of [...(r.pairA?.split('/') ?? []), ...(r.pairB?.split('/') ?? [])]) assert.notEqual(t, 'relay', why)
  })

  test(`a relayed connection held 2.5 allocation lifetimes (${LIFETIME_S} s): every byte echoed, the allocation refreshed`, { skip }, async () => {
    // 4 MiB in 256 KiB blocks, 1.6 s apart: ~25 s of traffic on the relay
    const r = await run({ name: 'blockudp-eim refresh', natA: 'blockudp', natB: 'eim', servers: 'stun', turn: {}, bytes: 4 * MiB, paceMs: 1600, timeoutMs: 30_000, keepLogs: true })
    assertEchoed(r)
    assertTcpRelay(r)
    const refreshes = (r.allLogs ?? '').split('\n').filter((l) => l.includes('turn: allocation refreshed')).length
    assert.ok(refreshes >= 2 * 2, `${refreshes} refreshes logged by both devices (expected at least 2 each over ~25 s)`)
  })
})
