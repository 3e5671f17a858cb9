/**
 * NAT lab, TCP port mapping: host A behind a router running a real miniupnpd (nftables backend, NAT-PMP + UPnP
 * IGD). A process in host A listens on a TCP port and maps it with PortMapper.mapTcp (once over NAT-PMP, once over
 * UPnP IGD found by SSDP). A client on the public side (the bootstrap host, 198.51.100.20) connects to router A's WAN
 * address at the mapped port: the bytes are echoed by host A, which saw the client's public address. After the
 * mapper closed: no rule for the port on the router, no entry in the IGD's list, and the same connection fails.
 * A control first: before any mapping, the public client cannot reach the port.
 *
 * Skipped when not root, without `ip netns`, or without miniupnpd/upnpc/coturn (scripts/setup installs them).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NET, labUnavailableReason } from './helpers/natlab/topology.js'
import { spawnInNs } from './helpers/natlab/procs.js'
import { miniupnpdRules, upnpLabUnavailableReason, upnpcList } from './helpers/natlab/upnp.js'
import { UpnpLab, miniupnpdTail } from './helpers/natlab/upnp-lab.js'

const skip = labUnavailableReason() ?? upnpLabUnavailableReason()
const HOST_SCRIPT = join(fileURLToPath(new URL('.', import.meta.url)), 'helpers/natlab/tcp-mapper-host.ts')

let upnpLab: UpnpLab | undefined

/** From the bootstrap host (public side) or another namespace: connect to host:port, send a token, expect it echoed. */
async function probe(host: string, port: number, from?: string): Promise<{ ok: boolean; detail: string }> {
  const token = `probe-${Math.random().toString(36).slice(2)}`
  const script = `
    const net = require('node:net')
    const s = net.connect({ host: ${JSON.stringify(host)}, port: ${port} })
    let got = ''
    const done = (ok, detail) => { console.log(JSON.stringify({ ok, detail })); s.destroy(); process.exit(0) }
    setTimeout(() => done(false, 'timeout (got ' + JSON.stringify(got) + ')'), 3000)
    s.on('connect', () => s.write(${JSON.stringify(token)}))
    s.on('data', (d) => { got += d; if (got === ${JSON.stringify(token)}) done(true, 'echoed') })
    s.on('error', (e) => done(false, e.code || e.message))
  `
  const p = spawnInNs(from ?? upnpLab!.lab.boot, 'probe', process.execPath, ['-e', script])
  const line = await p.waitFor('probe result', (_l, j) => j !== undefined && 'ok' in j, 10_000).catch((err: Error) => JSON.stringify({ ok: false, detail: err.message }))
  await p.stop()
  return JSON.parse(line) as { ok: boolean; detail: string }
}

async function runCase(via: 'natpmp' | 'upnp'): Promise<void> {
  assert.ok(upnpLab, 'the lab did not start')
  await upnpLab.symEimCase(async ({ net, miniupnpd, start }) => {
    const host = start(spawnInNs(net.hostA, `mapper-${via}`, process.execPath, ['--import', 'tsx', HOST_SCRIPT], { NATLAB_TCP_MAPPER: JSON.stringify({ via }) }))
    const line = await host.waitFor('the TCP mapping', (_l, j) => j?.event === 'mapped' || j?.event === 'failed', 30_000)
    const mapped = JSON.parse(line) as {
      event: string
      port: number
      ms: number
      mapping: { externalIp: string; externalPort: number; internalPort: number; protocol: string; via: string; internalIp: string }
      candidate: { address: string; port: number; localAddress: string }
      message?: string
    }
    const logs = (): string => `--- host A ---\n${host.output.slice(-20).join('\n')}\n--- miniupnpd ---\n${miniupnpdTail(miniupnpd)}`
    assert.equal(mapped.event, 'mapped', `${mapped.message}\n${logs()}`)
    const m = mapped.mapping
    assert.equal(m.protocol, 'TCP')
    assert.equal(m.via, via)
    assert.equal(m.externalIp, NET.routerWan.A, "the mapping is on router A's WAN address")
    assert.equal(m.internalPort, mapped.port)
    assert.equal(m.internalIp, NET.host.A, 'it forwards to host A')
    assert.deepEqual(mapped.candidate, { address: NET.routerWan.A, port: m.externalPort, localAddress: NET.host.A })
    const rules = miniupnpdRules(net.routerA)
    assert.match(rules, new RegExp(`dport ${m.externalPort}\\b`), `router A has no rule for the mapping:\n${rules}`)
    assert.match(upnpcList(net.hostA), new RegExp(`TCP\\s+${m.externalPort}->${NET.host.A.replace(/\./g, '\\.')}:${m.internalPort}`), 'the IGD lists the TCP mapping')

    // the public client reaches host A through the mapped port; host A sees the client's public address
    const through = await probe(NET.routerWan.A, m.externalPort)
    assert.ok(through.ok, `no echo through the mapped port: ${through.detail}\n${logs()}`)
    const accepted = await host.waitFor('the connection', (_l, j) => j?.event === 'accepted', 5000)
    assert.match(accepted, new RegExp(`"remote":"(::ffff:)?${NET.boot.replace(/\./g, '\\.')}:`), accepted)
    process.stdout.write(`TCP mapping via ${via}: ${m.externalIp}:${m.externalPort} → ${m.internalIp}:${m.internalPort} in ${mapped.ms} ms (informative)\n`)

    // close: the mapping is removed and the port is closed again
    const exit = await host.stop(10_000)
    assert.equal(exit.code, 0, logs())
    assert.ok(
      host.output.some((l) => l.includes('"event":"closed"')),
      logs(),
    )
    const rulesAfter = miniupnpdRules(net.routerA)
    assert.doesNotMatch(rulesAfter, new RegExp(`dport ${m.externalPort}\\b`), `router A still forwards ${m.externalPort}:\n${rulesAfter}`)
    const listAfter = upnpcList(net.hostA)
    assert.match(listAfter, /ExternalIPAddress = 198\.51\.100\.101/, `upnpc could not list the mappings:\n${listAfter}`)
    assert.doesNotMatch(listAfter, new RegExp(`TCP\\s+${m.externalPort}->`), `miniupnpd still lists the mapping:\n${listAfter}`)
    if (via === 'natpmp')
      assert.ok(
        miniupnpd.output.some((l) => l.includes(`NAT-PMP TCP port ${m.externalPort} mapping removed`)),
        `miniupnpd did not log the removal:\n${logs()}`,
      )
    const closed = await probe(NET.routerWan.A, m.externalPort)
    assert.equal(closed.ok, false, 'the port is no longer reachable')
  })
}

describe('NAT lab: TCP port mapping (PortMapper.mapTcp) against miniupnpd', { timeout: 240_000 }, () => {
  before(async () => {
    if (skip) return
    upnpLab = await UpnpLab.start('natlab-upnp-tcp-ca')
  })

  after(async () => {
    await upnpLab?.close()
  })

  test('control: with no mapping, a public client cannot reach the listening port of a host behind the router', { skip }, async () => {
    await upnpLab!.symEimCase(async ({ net, start }) => {
      const host = start(spawnInNs(net.hostA, 'listener', process.execPath, ['--import', 'tsx', HOST_SCRIPT], { NATLAB_TCP_MAPPER: JSON.stringify({ via: 'none' }) }))
      const line = await host.waitFor('the listener', (_l, j) => j?.event === 'listening', 30_000)
      const port = (JSON.parse(line) as { port: number }).port
      const fromRouter = await probe(NET.host.A, port, net.routerA)
      assert.ok(fromRouter.ok, `the listener does not answer on the LAN: ${fromRouter.detail}`)
      const fromOutside = await probe(NET.routerWan.A, port)
      assert.equal(fromOutside.ok, false, `reached without a mapping: ${fromOutside.detail}`)
    })
  })

  test('NAT-PMP (opcode 2): mapped, reached from the public side with bytes echoed, removed on close', { skip }, async () => {
    await runCase('natpmp')
  })

  test('UPnP IGD (SSDP, AddAnyPortMapping TCP): mapped, reached from the public side with bytes echoed, removed on close', { skip }, async () => {
    await runCase('upnp')
  })
})
