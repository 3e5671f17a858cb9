/**
 * NAT lab, ICE-TCP through a TCP port mapping (issue 9): device A behind a SYMMETRIC NAT whose router runs a real
 * miniupnpd (nftables backend, NAT-PMP + UPnP IGD), device B behind a port-restricted cone (eim); both ICE-TCP only
 * (transport 'tcp'), STUN only, no TURN. A serves with UPnP on (the tools' enable_upnp): its ICE-TCP listening port
 * is mapped on the router at start and offered as a srflx passive candidate. B connects to A and is reached through
 * the mapped port: 4 MiB echoed with SHA-256, B's selected pair is host/srflx pointing at router A's WAN address and
 * the mapped port. After A closed: no rule, no IGD entry, miniupnpd logged the removal. Control: without UPnP, the
 * same connection fails (ICE-TCP has no other path between these NATs).
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

/** A (sym + miniupnpd, serving, UPnP as asked) ← B (eim, connecting); ICE-TCP only. */
async function runCase(name: string, upnp: boolean, timeoutMs: number) {
  assert.ok(upnpLab, 'the lab did not start')
  const lab = upnpLab
  const [a, b] = await Promise.all([lab.identityFiles(`${name}-a`), lab.identityFiles(`${name}-b`)])
  return lab.symEimCase(async ({ net, miniupnpd, start }) => {
    start(await startBootstrap(lab.lab.boot))
    const server = start(
      startDevice(
        net.hostA,
        `${name}:hA`,
        { mode: 'serve', key: a.key, cert: a.cert, iceServers: [STUN_URL], transport: 'tcp', ...(upnp ? { upnp: true } : {}) },
        // the runner forbids UPnP in test runs (the machine's real gateway); in this namespace the gateway is router A
        upnp ? { DHTNET_FORBID_PUBLIC_BOOTSTRAP: '0' } : {},
      ),
    )
    await server.waitFor('device A ready', (_l, j) => j?.event === 'ready' || j?.event === 'result', 30_000)
    // the mapping is made in the background at start: let it finish before B asks (it takes ~20 ms over NAT-PMP)
    if (upnp) await server.waitFor('the TCP mapping', (l) => l.includes('ice-tcp: TCP port'), 10_000).catch(() => undefined)
    const client = start(
      startDevice(net.hostB, `${name}:hB`, { mode: 'connect', key: b.key, cert: b.cert, iceServers: [STUN_URL], transport: 'tcp', peer: a.id, bytes: BYTES, timeoutMs }),
    )
    const exited = await Promise.race([client.exited, new Promise<null>((r) => setTimeout(() => r(null), 25_000 + timeoutMs + 20_000).unref())])
    if (exited === null) await client.stop()
    const result = client.jsonLines.find((j) => j.event === 'result') ?? {}
    if (result.ok) await server.waitFor('A connection', (_l, j) => j?.event === 'connection', 2000).catch(() => undefined)
    const aConnection = server.jsonLines.find((j) => j.event === 'connection')
    const outA = [...server.output]
    const stopA = await server.stop(10_000)
    return {
      result,
      aConnection,
      exitB: exited === null ? null : exited.code,
      exitA: stopA.code,
      outA,
      miniupnpdLog: miniupnpd.output,
      rulesAfter: miniupnpdRules(net.routerA),
      upnpcAfter: upnpcList(net.hostA),
      logs: `--- hB (eim, connecting) ---\n${client.output.slice(-25).join('\n')}\n--- hA (sym, upnp ${upnp}) ---\n${outA.slice(-25).join('\n')}\n--- miniupnpd ---\n${miniupnpdTail(miniupnpd)}`,
    }
  })
}

describe('NAT lab: ICE-TCP reached through its UPnP/NAT-PMP TCP port mapping (miniupnpd)', { timeout: 240_000 }, () => {
  before(async () => {
    if (skip) return
    upnpLab = await UpnpLab.start('natlab-ice-tcp-upnp-ca')
  })

  after(async () => {
    await upnpLab?.close()
  })

  test('control: without a mapping, eim → sym over ICE-TCP finds no path (typed error)', { skip }, async () => {
    const r = await runCase('ice-tcp-upnp-off', false, 8000)
    const why = `${String(r.result.code)} ${String(r.result.message)}\n${r.logs}`
    assert.equal(r.result.ok, false, `connected without a mapping (the control is meaningless): ${why}`)
    assert.ok(r.result.code === 'ICE_FAILED' || r.result.code === 'TIMEOUT', why)
    assert.ok(!r.miniupnpdLog.some((l) => /port mapping request|AddAnyPortMapping|AddPortMapping/.test(l)), 'no mapping was asked for')
  })

  test('with UPnP: B reaches A through the mapped TCP port (host/srflx), 4 MiB echoed byte-exact, mapping gone after close', { skip }, async () => {
    const r = await runCase('ice-tcp-upnp-on', true, 20_000)
    const why = `${String(r.result.code)} ${String(r.result.message)}\n${r.logs}`
    assert.equal(r.result.ok, true, why)
    assert.equal(r.exitB, 0, why)
    assert.equal(r.result.receivedBytes, BYTES, why)
    assert.equal(r.result.sha256Received, r.result.sha256Sent, why)

    // A's mapping as A logged it, and as miniupnpd logged the NAT-PMP request
    const line = r.outA.find((l) => /ice-tcp: TCP port \d+ mapped on the gateway as [\d.]+:\d+ \(natpmp\)/.test(l))
    assert.ok(line, `A reported no TCP mapping: ${why}`)
    const [, localPort, extIp, extPort] = /TCP port (\d+) mapped on the gateway as ([\d.]+):(\d+)/.exec(line)!
    assert.equal(extIp, NET.routerWan.A, "the mapping is on router A's WAN address")
    assert.ok(
      r.miniupnpdLog.some((l) => l.includes(`NAT-PMP port mapping request : ${extPort}->${NET.host.A}:${localPort} tcp`)),
      `miniupnpd did not log the TCP mapping:\n${r.logs}`,
    )

    // B's path: ICE-TCP, its host active candidate to A's mapped srflx passive one; no relay anywhere
    assert.equal(r.result.transport, 'ice-tcp', why)
    assert.equal(r.result.pair, 'host/srflx', why)
    assert.equal(r.result.remote, `${extIp}:${extPort}`, `B must reach A at its mapped port: ${why}`)
    assert.equal(r.result.relay, undefined, why)
    assert.ok(r.aConnection, `A reported no connection: ${why}`)
    assert.equal(r.aConnection.local, `${NET.host.A}:${localPort}`, 'A accepted it on its listening port')

    // after A closed: no forwarding rule, no IGD entry, the removal logged by miniupnpd
    assert.equal(r.exitA, 0, why)
    assert.doesNotMatch(r.rulesAfter, new RegExp(`dport ${extPort}\\b`), `router A still forwards ${extPort}:\n${r.rulesAfter}`)
    assert.match(r.upnpcAfter, /ExternalIPAddress = 198\.51\.100\.101/, `upnpc could not list the mappings:\n${r.upnpcAfter}`)
    assert.doesNotMatch(r.upnpcAfter, new RegExp(`TCP\\s+${extPort}->`), `miniupnpd still lists the mapping:\n${r.upnpcAfter}`)
    assert.ok(
      r.miniupnpdLog.some((l) => l.includes(`NAT-PMP TCP port ${extPort} mapping removed`)),
      `miniupnpd did not log the removal:\n${r.logs}`,
    )
    process.stdout.write(
      `ICE-TCP via TCP mapping: ${extIp}:${extPort} → ${NET.host.A}:${localPort}; connect ${String(r.result.connectMs)} ms, ${String(r.result.mbPerS)} MB/s (informative)\n`,
    )
  })
})
