/**
 * NAT lab, UPnP/NAT-PMP fallback: host A behind a SYMMETRIC NAT whose router runs a real miniupnpd (nftables
 * backend, NAT-PMP + UPnP IGD), host B behind a port-restricted cone (eim), STUN only, no TURN. Direct ICE cannot
 * cross eim↔sym (netlab.md: `failed` at 39.6 s; checked here too, as the control). With A's device using the port
 * mapper (PortMapper through the tool runtime's `upnp` option), A's description carries a srflx candidate for its
 * mapped port: B reaches A there, the bytes are echoed exactly, B's selected pair points at A's mapped external
 * port, and the mapping is gone from miniupnpd once A has closed.
 *
 * Both devices use WebRTC only (transport 'webrtc'): this test is about the UDP mapping; with both transports the
 * ICE-TCP listening port's TCP mapping may carry the connection first (natlab-ice-tcp-upnp.test.ts tests that one).
 *
 * Skipped when not root, without `ip netns`, or without miniupnpd/upnpc/coturn (scripts/setup installs them).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { NET, labUnavailableReason } from './helpers/natlab/topology.js'
import { STUN_URL, startBootstrap, startDevice } from './helpers/natlab/procs.js'
import { miniupnpdRules, upnpLabUnavailableReason, upnpcList } from './helpers/natlab/upnp.js'
import { UpnpLab, miniupnpdTail } from './helpers/natlab/upnp-lab.js'

const skip = labUnavailableReason() ?? upnpLabUnavailableReason()
const MiB = 1024 * 1024
const BYTES = 4 * MiB

let upnpLab: UpnpLab | undefined

interface UpnpCaseResult {
  /** the connecting device's result line */
  result: Record<string, unknown>
  /** B's 'connection' event, when there was one */
  bConnection?: Record<string, unknown>
  exitA: number | null
  outA: string[]
  miniupnpdLog: string[]
  /** router A's miniupnpd rules and `upnpc -l` after A exited (miniupnpd still running) */
  rulesAfter: string
  upnpcAfter: string
  logs: string
}

/** sym (A, miniupnpd on its router) ↔ eim (B), STUN only; A connects to B and echoes BYTES. */
async function runCase(name: string, upnp: boolean, timeoutMs: number): Promise<UpnpCaseResult> {
  assert.ok(upnpLab, 'the lab did not start')
  const lab = upnpLab
  const [a, b] = await Promise.all([lab.identityFiles(`${name}-a`), lab.identityFiles(`${name}-b`)])
  return lab.symEimCase(async ({ net, miniupnpd, start }) => {
    start(await startBootstrap(lab.lab.boot))
    const server = start(startDevice(net.hostB, `${name}:hB`, { mode: 'serve', key: b.key, cert: b.cert, iceServers: [STUN_URL], transport: 'webrtc' }))
    await server.waitFor('device B ready', (_l, j) => j?.event === 'ready' || j?.event === 'result', 30_000)
    const client = start(
      startDevice(
        net.hostA,
        `${name}:hA`,
        { mode: 'connect', key: a.key, cert: a.cert, iceServers: [STUN_URL], transport: 'webrtc', peer: b.id, bytes: BYTES, timeoutMs, ...(upnp ? { upnp: true } : {}) },
        // the runner forbids UPnP in test runs (it would reach the machine's real gateway); inside this host
        // namespace the only gateway is the lab's router A
        upnp ? { DHTNET_FORBID_PUBLIC_BOOTSTRAP: '0' } : {},
      ),
    )
    const bound = 25_000 + timeoutMs + 20_000
    const exited = await Promise.race([client.exited, new Promise<null>((r) => setTimeout(() => r(null), bound).unref())])
    if (exited === null) await client.stop()
    const result = client.jsonLines.find((j) => j.event === 'result') ?? {}
    if (result.ok) await server.waitFor('B connection', (_l, j) => j?.event === 'connection', 2000).catch(() => undefined)
    return {
      result,
      bConnection: server.jsonLines.find((j) => j.event === 'connection'),
      exitA: exited === null ? null : exited.code,
      outA: [...client.output],
      miniupnpdLog: miniupnpd.output,
      rulesAfter: miniupnpdRules(net.routerA),
      upnpcAfter: upnpcList(net.hostA),
      logs: `--- hA (sym, upnp ${upnp}) ---\n${client.output.slice(-30).join('\n')}\n--- hB (eim) ---\n${server.output.slice(-20).join('\n')}\n--- miniupnpd ---\n${miniupnpdTail(miniupnpd)}`,
    }
  })
}

describe('NAT lab: UPnP/NAT-PMP port mapping lets a device behind a symmetric NAT be reached directly', () => {
  before(async () => {
    if (skip) return
    upnpLab = await UpnpLab.start('natlab-upnp-ca')
  })

  after(async () => {
    await upnpLab?.close()
  })

  test('control: sym ↔ eim with STUN only and no port mapping does not connect (typed error within the bound)', { skip }, async () => {
    const timeoutMs = 8000
    const r = await runCase('upnp-off', false, timeoutMs)
    const why = `${String(r.result.code)} ${String(r.result.message)}\n${r.logs}`
    assert.equal(r.result.ok, false, `connected without a mapping (the control is meaningless): ${why}`)
    assert.ok(r.result.code === 'ICE_FAILED' || r.result.code === 'TIMEOUT', `expected ICE_FAILED or TIMEOUT: ${why}`)
    assert.equal(r.exitA, 1, why)
    assert.ok(!r.miniupnpdLog.some((l) => /NAT-PMP port mapping request|AddAnyPortMapping|AddPortMapping/.test(l)), 'no mapping was asked for')
  })

  test('sym (+ miniupnpd) ↔ eim with STUN only and A mapping its port: direct, B uses the mapped port, bytes exact, mapping removed', { skip }, async () => {
    const r = await runCase('upnp-on', true, 20_000)
    const why = `${String(r.result.code)} ${String(r.result.message)}\n${r.logs}`
    assert.equal(r.result.ok, true, why)
    assert.equal(r.exitA, 0, why)
    assert.equal(r.result.receivedBytes, BYTES, why)
    assert.match(String(r.result.sha256Sent), /^[0-9a-f]{64}$/)
    assert.equal(r.result.sha256Received, r.result.sha256Sent, why)

    // A's mapping, as A's port mapper reported it (NAT-PMP, preferred) and as miniupnpd logged it
    const line = r.outA.find((l) => /UPnP: UDP \S+ → local port \d+ \(natpmp\)/.test(l))
    assert.ok(line, `A reported no NAT-PMP mapping: ${why}`)
    const [, extIp, extPort, localPort] = /UPnP: UDP ([\d.]+):(\d+) → local port (\d+)/.exec(line)!
    assert.equal(extIp, NET.routerWan.A, "the mapping is on router A's WAN address")
    assert.ok(
      r.miniupnpdLog.some((l) => l.includes(`NAT-PMP port mapping request : ${extPort}->${NET.host.A}:${localPort} udp`)),
      `miniupnpd did not log the mapping of ${extPort} → ${localPort}:\n${r.logs}`,
    )

    // B reached A at the mapped address: its selected pair's remote end is A's mapped external port
    assert.ok(r.bConnection, `B reported no connection: ${why}`)
    assert.equal(r.bConnection.remote, `${extIp}:${extPort}`, `B's selected pair (${String(r.bConnection.pair)}) must point at A's mapped port: ${why}`)
    for (const t of String(r.bConnection.pair).split('/'))
      assert.ok(t === 'srflx' || t === 'prflx' || t === 'host', `B selected ${String(r.bConnection.pair)}: expected a direct pair`)
    assert.ok(!String(r.result.pair).includes('relay'), `A selected ${String(r.result.pair)}`)
    process.stdout.write(
      `UPnP case: mapping ${extIp}:${extPort} → ${NET.host.A}:${localPort}; pair A ${String(r.result.pair)} (remote ${String(r.result.remote)}), B ${String(r.bConnection.pair)} (remote ${String(r.bConnection.remote)}); connect ${String(r.result.connectMs)} ms, ${String(r.result.mbPerS)} MB/s (informative)\n`,
    )

    // After A closed: no rule for the port on router A, no entry in the IGD's list, and miniupnpd saw the removal
    assert.doesNotMatch(r.rulesAfter, new RegExp(`dport ${extPort}\\b`), `router A still forwards ${extPort}:\n${r.rulesAfter}`)
    assert.match(r.upnpcAfter, /ExternalIPAddress = 198\.51\.100\.101/, `upnpc could not list the mappings:\n${r.upnpcAfter}`)
    assert.doesNotMatch(r.upnpcAfter, new RegExp(`UDP\\s+${extPort}->`), `miniupnpd still lists the mapping:\n${r.upnpcAfter}`)
    assert.ok(
      r.miniupnpdLog.some((l) => l.includes(`NAT-PMP UDP port ${extPort} mapping removed`)),
      `miniupnpd did not log the removal:\n${r.logs}`,
    )
  })
})
