/**
 * dvpn end to end in the NAT lab (packages/core/test/helpers/natlab): the server on a host behind NAT router B, the
 * first client behind NAT router A, a second (full-tunnel) client and a stranger on the public side, a bootstrap and
 * coturn (STUN/TURN) on the public side. The server is configured with DHTNet's keys (ip_address, ip_peer_address and
 * their IPv6) plus masquerade and a 3 s grace period; every client has a certificate from the lab CA (the server is
 * not anonymous), the stranger from another one. The built CLI runs in the namespaces; every process is stopped by its
 * pid, every namespace deleted.
 *
 * Proved here: ping both ways through the tunnel, IPv4 and IPv6; 100 MiB over TCP through the tunnel with checksums;
 * two clients at once with distinct addresses that reach the server and each other; a full-tunnel client's traffic
 * leaves through the server's masquerade; the link of router A down for 10 s: the client reconnects with its
 * addresses and a TCP session through the tunnel survives; a SIGKILLed client's addresses are freed on the server
 * after dead-peer detection and the grace period; a refused peer gets a clear error and no TUN; after a clean exit
 * (SIGTERM) both sides have exactly the links, addresses, routes, rules, nftables ruleset and forwarding they had.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { NatLab, NET, labUnavailableReason } from '../../../packages/core/test/helpers/natlab/topology.js'
import { startBootstrap, startCoturn, type LabProcess } from '../../../packages/core/test/helpers/natlab/procs.js'
import { Processes, run } from '../../../packages/cli-kit/test/helpers/processes.js'
import type { Proc } from '../../../packages/cli-kit/test/helpers/processes.js'
import {
  assertBuilt,
  dvpnLinks,
  labYaml,
  lastEcho,
  networkState,
  newCa,
  ping as pingOnce,
  removeTempDirs,
  startDvpn,
  tcpProbe,
  tcpSend,
  tcpService,
  tempDir,
  waitJoined,
  writeIdentity,
  type Joined,
  type LabIdentity,
} from './helpers/dvpn.js'

const MiB = 1024 * 1024
const procs = new Processes()
let skipReason: string | undefined
let lab: NatLab | undefined
const labProcs: LabProcess[] = []
let dir: string
let hostA: string // client 1, behind router A
let hostB: string // server, behind router B
let routerA: string
let pubC2: string // client 2 (full tunnel), public side
let pubC3: string // the stranger
let server: Proc
let client1: Proc
let client2: Proc
let joined1: Joined
let joined2: Joined
let serverId: LabIdentity
let id2: LabIdentity
let stateA: string
let stateB: string
let stateC3: string

/** An address of the internet's core outside the lab's public subnet (TEST-NET-3). */
const FAR_HOST = '203.0.113.1'

const VPN_YAML = `ip_address: "10.80.77."
ip_peer_address: "10.60.78."
ip_address_ipv6: "fd00:0:0:1::"
ip_peer_address_ipv6: "fd00:0:0:2::"
masquerade: true
address_grace: 3
`

function failure(msg: string): string {
  return `${msg}\n${procs.describeAll()}`
}

/** Equal network states, or a failure that lists the lines that differ. */
function sameState(after: string, before: string, where: string): void {
  if (after === before) return
  const a = new Set(after.split('\n'))
  const b = new Set(before.split('\n'))
  const added = [...a].filter((l) => !b.has(l))
  const removed = [...b].filter((l) => !a.has(l))
  assert.fail(`${where} is not as before:\n+ ${added.join('\n+ ')}\n- ${removed.join('\n- ')}`)
}

/** ping, failing with every process's output. */
async function ping(netns: string, address: string): Promise<void> {
  await pingOnce(netns, address).catch((err: Error) => assert.fail(failure(err.message)))
}

before(async () => {
  skipReason = labUnavailableReason()
  if (skipReason) return
  assertBuilt()
  dir = tempDir('dvpn-e2e')
  lab = NatLab.create()
  labProcs.push(await startCoturn(lab.pub, dir))
  labProcs.push(await startBootstrap(lab.boot))
  const net = lab.addCase('eim', 'eim')
  hostA = net.hostA
  hostB = net.hostB
  routerA = net.routerA
  pubC2 = lab.addPublicNamespace('c2', '198.51.100.30')
  pubC3 = lab.addPublicNamespace('c3', '198.51.100.31')
  stateA = await networkState(hostA)
  stateB = await networkState(hostB)
  stateC3 = await networkState(pubC3)

  const ca = await newCa('dvpn-lab-ca')
  serverId = await writeIdentity(join(dir, 'ids'), 'server', ca)
  const id1 = await writeIdentity(join(dir, 'ids'), 'client1', ca)
  id2 = await writeIdentity(join(dir, 'ids'), 'client2', ca)

  const vpnConfig = join(dir, 'vpn.yaml')
  writeFileSync(vpnConfig, VPN_YAML)
  server = startDvpn(procs, 'dvpn -l', hostB, join(dir, 'server'), `${labYaml(serverId)}configuration_file: "${vpnConfig}"\n`, ['-l']).proc
  await server.waitFor(/^id [0-9a-f]{40}$/m, 60_000, 'stdout')
  // client 1 notices a dead path within 3 s (keepalive 1 s): the link test below needs a real reconnection
  client1 = startDvpn(procs, 'dvpn client1', hostA, join(dir, 'client1'), `${labYaml(id1)}keepalive: 1\n`, [serverId.id]).proc
  joined1 = await waitJoined(client1)
})

after(async () => {
  await procs.stopAll()
  if (process.env.DHTNET_TEST_VERBOSE) {
    const all: Array<[string, { stderrText: string } | undefined]> = [
      ['server', server],
      ['client1', client1],
      ['client2', client2],
    ] // undefined when before() failed
    for (const [name, p] of all) if (p) process.stderr.write(`--- ${name}\n${p.stderrText}\n`)
  }
  await Promise.all(labProcs.map((p) => p.stop()))
  lab?.destroy()
  removeTempDirs()
})

test("the server uses DHTNet's keys: its address in ip_address, clients from ip_peer_address (IPv4 and IPv6)", (t) => {
  if (skipReason) return t.skip(skipReason)
  assert.match(server.stderrText, /TUN dvpn0 \(MTU \d+\): 10\.80\.77\.1 in 10\.80\.77\.0\/24, fd00:0:0:1::1 in fd00:0:0:1::\/64/)
  assert.match(server.stderrText, /masquerading what clients send beyond dvpn0/)
  assert.deepEqual(joined1, { tun: 'dvpn0', client4: '10.60.78.1', server4: '10.80.77.1', client6: 'fd00:0:0:2::1', server6: 'fd00:0:0:1::1' })
  assert.match(server.stderrText, new RegExp(`client ${'[0-9a-f]{40}'} joined: 10\\.60\\.78\\.1, fd00:0:0:2::1`))
})

test('ping both ways through the tunnel, IPv4 and IPv6', async (t) => {
  if (skipReason) return t.skip(skipReason)
  await ping(hostA, joined1.server4)
  await ping(hostA, joined1.server6)
  await ping(hostB, joined1.client4)
  await ping(hostB, joined1.client6)
  // the verbose log shows the path (our multiplexer over WebRTC, through the NATs)
  assert.match(client1.stderrText, /path: webrtc .* → \S+ \(our multiplexer\)/)
})

test('100 MiB over TCP through the tunnel: the checksums match', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const sink = tcpService(procs, hostB, 'sink', joined1.server4, 7001)
  await sink.waitFor(/listening/, 10_000)
  const sender = tcpSend(procs, hostA, joined1.server4, 7001, 100 * MiB)
  const sent = await sender.waitFor(/sent ([0-9a-f]{64}) (\d+)/, 180_000)
  const got = await sink.waitFor(/sha256 ([0-9a-f]{64}) (\d+)/, 10_000)
  assert.equal(Number(got[2]), 100 * MiB, failure('bytes received'))
  assert.equal(got[1], sent[1], 'same SHA-256 on both sides')
})

test('two clients at once: distinct addresses, both reach the server and each other; the full tunnel leaves through the server', async (t) => {
  if (skipReason) return t.skip(skipReason)
  client2 = startDvpn(procs, 'dvpn client2', pubC2, join(dir, 'client2'), labYaml(id2), ['--full-tunnel', serverId.id]).proc
  joined2 = await waitJoined(client2)
  assert.equal(joined2.client4, '10.60.78.2')
  assert.equal(joined2.client6, 'fd00:0:0:2::2')
  assert.match(client2.stderrText, /full tunnel/)
  await ping(pubC2, joined2.server4)
  await ping(pubC2, joined2.server6)
  // client to client, both families, through the server
  await ping(hostA, joined2.client4)
  await ping(hostA, joined2.client6)
  await ping(pubC2, joined1.client6)
  // full tunnel: a host beyond the public subnet (client 2's own subnet stays on its link, as with any full tunnel)
  // sees client 2 coming from router B (the server's side), not from its own address
  await run('ip', ['-n', lab!.inet, 'addr', 'add', `${FAR_HOST}/32`, 'dev', 'lo'])
  const whoami = tcpService(procs, lab!.inet, 'whoami', FAR_HOST, 7002)
  await whoami.waitFor(/listening/, 10_000)
  const r = await run(
    'ip',
    [
      'netns',
      'exec',
      pubC2,
      process.execPath,
      '-e',
      `const s=require('net').connect(7002,'${FAR_HOST}');s.on('data',d=>process.stdout.write(d));s.on('error',e=>{console.error(e.message);process.exit(1)})`,
    ],
    { timeoutMs: 20_000 },
  )
  assert.equal(r.stdout, 'hi\n')
  await whoami.waitFor(/from /, 5000)
  assert.match(whoami.stdoutText, new RegExp(`from ${NET.routerWan.B.replace(/\./g, '\\.')}`), 'masqueraded by the server, then NATed by router B')
  // the bootstrap stays outside the tunnel (a host route through the underlay)
  const route = await run('ip', ['netns', 'exec', pubC2, 'ip', 'route', 'get', NET.boot])
  assert.match(route.stdout, /dev eth0/)
})

test('the link of router A down for 10 s: the client comes back with its addresses and a TCP session survives', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const echo = tcpService(procs, hostB, 'echo', joined1.server4, 7000)
  await echo.waitFor(/listening/, 10_000)
  const probe = tcpProbe(procs, hostA, joined1.server4, 7000)
  await probe.waitFor(/^echo 3$/m, 20_000)
  const reconnectsBefore = (client1.stderrText.match(/reconnected:/g) ?? []).length
  await run('ip', ['-n', routerA, 'link', 'set', 'wan0', 'down'])
  await new Promise((r) => setTimeout(r, 10_000))
  await run('ip', ['-n', routerA, 'link', 'set', 'wan0', 'up'])
  await run('ip', ['-n', routerA, 'route', 'replace', 'default', 'via', NET.core])
  const atRestore = lastEcho(probe)
  // the keepalive noticed (3 s) and the client reconnected, with its addresses
  assert.match(client1.stderrText, /connection to the server lost/, failure('the client did not notice the cut'))
  const deadline = Date.now() + 60_000
  while ((client1.stderrText.match(/reconnected:/g) ?? []).length === reconnectsBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200))
  const line = client1.stderrText
    .split('\n')
    .filter((l) => l.includes('reconnected:'))
    .at(-1)
  assert.ok(line, failure('no reconnection within 60 s of the restore'))
  assert.match(line, new RegExp(`reconnected: ${joined1.client4}, ${joined1.client6}`))
  // the same TCP connection carries on: new echoes, never closed
  await probe.waitFor(new RegExp(`^echo ${atRestore + 10}$`, 'm'), 60_000)
  assert.doesNotMatch(probe.stdoutText, /closed/)
  assert.equal((probe.stdoutText.match(/^open$/gm) ?? []).length, 1)
  await ping(hostA, joined1.server6)
  await probe.stop()
  await echo.stop()
})

test('a SIGKILLed client: the server notices, keeps its addresses for the grace period, then frees them', async (t) => {
  if (skipReason) return t.skip(skipReason)
  client2.kill('SIGKILL')
  await client2.exited
  await server.waitFor(new RegExp(`client ${id2.id} left \\([^)]*\\): 10\\.60\\.78\\.2, fd00:0:0:2::2 kept for it 3 s`), 60_000, 'stderr')
  await server.waitFor(new RegExp(`freed 10\\.60\\.78\\.2, fd00:0:0:2::2 \\(held for ${id2.id}`), 20_000, 'stderr')
  // the kernel took the TUN with the process
  assert.deepEqual(await dvpnLinks(pubC2), [])
})

test('a peer the server does not trust gets a clear error, exit 1, and no TUN is left behind', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const strangerCa = await newCa('stranger-ca')
  const stranger = await writeIdentity(join(dir, 'ids'), 'stranger', strangerCa)
  const c = startDvpn(procs, 'dvpn stranger', pubC3, join(dir, 'stranger'), labYaml(stranger), ['--timeout', '15', serverId.id]).proc
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 1, failure('exit 1'))
  assert.match(c.stderrText, /dvpn: error: .*(trust|refused|timeout)/i)
  assert.doesNotMatch(c.stderrText, /\n\s+at /, 'no stack trace')
  assert.doesNotMatch(c.stderrText, /connected: dvpn/)
  assert.deepEqual(await dvpnLinks(pubC3), [])
  sameState(await networkState(pubC3), stateC3, "the stranger's namespace")
})

test('after SIGTERM both sides have exactly their network configuration from before (links, addresses, routes, rules, nftables, forwarding)', async (t) => {
  if (skipReason) return t.skip(skipReason)
  assert.notEqual(await networkState(hostB), stateB, 'the server changed things while running (TUN, nftables, forwarding)')
  const s1 = await client1.stop(10_000)
  assert.equal(s1.code, 0, failure('client exit'))
  await server.waitFor(/client [0-9a-f]{40} left \(its control channel closed\): 10\.60\.78\.1/, 10_000, 'stderr')
  sameState(await networkState(hostA), stateA, "the client's host")
  const s0 = await server.stop(10_000)
  assert.equal(s0.code, 0, failure('server exit'))
  sameState(await networkState(hostB), stateB, "the server's host")
})
