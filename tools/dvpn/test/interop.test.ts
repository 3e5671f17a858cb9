/**
 * Live interop with DHTNet's C++ dvpn (ICE-TCP + TLS, DHTNet's MultiplexedSocket, channel `dvpn://`): our client with
 * a C++ server, and a C++ client with our server, IPv4 and IPv6 pings through the tunnel. Runs when a C++ DHTNet build
 * is available (DHTNET_CPP_BIN, default /work/cpp/install/bin: `dvpn` and `dhtnode`), skipped otherwise. Two network
 * namespaces joined by a veth (as the captures'), C++ `dhtnode` as the bootstrap, identities made here (two CAs: the
 * servers run anonymous, as DHTNet's sample configuration). Every up-script call is logged with its arguments, which
 * must be DHTNet's order; the script brings the link up before it adds the addresses (DHTNet's dvpn_up.sh adds the
 * IPv6 one first, which on a TUN that is still down leaves no route to the peer: IPv6 then fails with C++ on both
 * ends too).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes, run } from '../../../packages/cli-kit/test/helpers/processes.js'
import { NetnsSet, type Netns } from '../../../packages/cli-kit/test/helpers/netns.js'
import { cppInteropSkipReason, startCppInteropLab, CPP_BIN } from '../../../packages/cli-kit/test/helpers/cpp-interop.js'
import { userEnv } from '../../../packages/cli-kit/test/helpers/tools.js'
import { DVPN, assertBuilt, ping, removeTempDirs, tempDir, type LabIdentity } from './helpers/dvpn.js'

const procs = new Processes()
const namespaces = new NetnsSet()
let skipReason: string | undefined
let dir: string
let s: Netns
let c: Netns
let bootstrap: string
let serverId: LabIdentity
let clientId: LabIdentity
let script: string
let vpnConfig: string

before(async () => {
  skipReason = await cppInteropSkipReason('dvpn')
  if (skipReason) return
  assertBuilt()
  dir = tempDir('dvpn-interop')
  ;({ server: s, client: c, bootstrap, serverId, clientId } = await startCppInteropLab({ tag: 'ip', dir, procs, namespaces, dhtnodeArgs: ['-v'] }))
  script = join(dir, 'vpn-up.sh')
  writeFileSync(
    script,
    `#!/bin/sh\necho "$*" >> "${join(dir, 'up-args.txt')}"\nip link set dev "$3" up\nip -6 addr add "$6" peer "$7" dev "$3" nodad\nip addr add "$2" peer "$1" dev "$3"\n`,
    { mode: 0o755 },
  )
  vpnConfig = join(dir, 'vpn-config.yaml')
  writeFileSync(
    vpnConfig,
    `script_path: "${script}"\nip_address: "10.80.77."\nip_peer_address: "10.60.78."\nip_address_ipv6: "fd00:0:0:1::"\nip_peer_address_ipv6: "fd00:0:0:2::"\n`,
  )
})

after(async () => {
  await procs.stopAll()
  await namespaces.remove()
  removeTempDirs()
})

function yaml(id: LabIdentity, extra = ''): string {
  return `bootstrap: "${bootstrap}"\ncertificate: "${id.cert}"\nprivateKey: "${id.key}"\n${extra}`
}

function upArgs(): string[] {
  return existsSync(join(dir, 'up-args.txt')) ? readFileSync(join(dir, 'up-args.txt'), 'utf8').trim().split('\n') : []
}

async function waitAddress(ns: string, address: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    const r = await run('ip', ['-n', ns, 'addr'], { allowFailure: true })
    if (r.stdout.includes(address)) return
    await new Promise((res) => setTimeout(res, 250))
  }
  assert.fail(`${address} never appeared in ${ns}\n${procs.describeAll()}`)
}

test('our client joins a C++ dvpn server: DHTNet metadata, addresses set directly, IPv4 and IPv6 through the tunnel', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const home = join(dir, 'cpp-server')
  writeFileSync(join(dir, 'cpp-server.yaml'), yaml(serverId, `anonymous: true\nconfiguration_file: "${vpnConfig}"\n`))
  const server = procs.start('dvpn -l (C++)', join(CPP_BIN, 'dvpn'), ['-l', '-d', join(dir, 'cpp-server.yaml'), '-C', vpnConfig], {
    netns: s.name,
    stdin: 'ignore',
    env: userEnv(home),
  })
  await new Promise((r) => setTimeout(r, 3000))
  writeFileSync(join(dir, 'ts-client.yaml'), yaml(clientId))
  const client = procs.start('dvpn (ours)', process.execPath, [DVPN, '-d', join(dir, 'ts-client.yaml'), '--verbose', serverId.longId], {
    netns: c.name,
    stdin: 'ignore',
    env: userEnv(join(dir, 'ts-client')),
  })
  const m = await client.waitFor(/connected: (\S+) (\S+) ↔ (\S+), (\S+) ↔ (\S+);.*\(dvpn:\/\/, one packet per message\)/, 90_000, 'stderr')
  // DHTNet's numbering: tun0 → .0; the IPv6 ends as the C++ peers set them (capture: client fd00:0:0:1::)
  assert.deepEqual(m.slice(2, 6), ['10.60.78.0', '10.80.77.0', 'fd00:0:0:1::0', 'fd00:0:0:2::0'])
  assert.match(client.stderrText, /path: ice-tcp .* \(a C\+\+ DHTNet device: DHTNet's dvpn:\/\/ protocol\)/)
  await waitAddress(s.name, '10.80.77.0', 20_000)
  await ping(c.name, '10.80.77.0')
  await ping(c.name, 'fd00:0:0:2::')
  await ping(s.name, '10.60.78.0')
  // the C++ server called its script in DHTNet's order
  assert.ok(
    upArgs().some((l) => /^10\.60\.78\.0 10\.80\.77\.0 tun0 \S+ false fd00:0:0:2::0 fd00:0:0:1::0$/.test(l)),
    upArgs().join('\n'),
  )
  assert.equal((await client.stop(10_000)).code, 0)
  await server.stop()
})

test('a C++ dvpn client joins our server: the metadata map it needs, script_path on both sides, IPv4 and IPv6', async (t) => {
  if (skipReason) return t.skip(skipReason)
  writeFileSync(join(dir, 'ts-server.yaml'), yaml(serverId, `anonymous: true\nconfiguration_file: "${vpnConfig}"\n`))
  const server = procs.start('dvpn -l (ours)', process.execPath, [DVPN, '-l', '-d', join(dir, 'ts-server.yaml'), '--verbose'], {
    netns: s.name,
    stdin: 'ignore',
    env: userEnv(join(dir, 'ts-server')),
  })
  await server.waitFor(/^id [0-9a-f]{40}$/m, 60_000, 'stdout')
  writeFileSync(join(dir, 'cpp-client.yaml'), yaml(clientId, `configuration_file: "${vpnConfig}"\n`))
  procs.start('dvpn (C++)', join(CPP_BIN, 'dvpn'), ['-d', join(dir, 'cpp-client.yaml'), '-C', vpnConfig, serverId.longId], {
    netns: c.name,
    stdin: 'ignore',
    env: userEnv(join(dir, 'cpp-client')),
  })
  await server.waitFor(new RegExp(`client ${clientId.id} joined: 10\\.60\\.78\\.1, fd00:0:0:2::1 \\(session #\\d+, DHTNet's dvpn://`), 90_000, 'stderr')
  await waitAddress(c.name, '10.60.78.1', 20_000)
  await ping(c.name, '10.80.77.1')
  await ping(c.name, 'fd00:0:0:1::1')
  await ping(s.name, '10.60.78.1')
  await ping(s.name, 'fd00:0:0:2::1')
  const args = upArgs()
  // our server: its address and the client's, in DHTNet's order; the C++ client: the map read the C++ way
  assert.ok(
    args.some((l) => /^10\.60\.78\.1 10\.80\.77\.1 dvpn\d+ \S+ false fd00:0:0:1::1 fd00:0:0:2::1$/.test(l)),
    args.join('\n'),
  )
  assert.ok(
    args.some((l) => /^10\.80\.77\.1 10\.60\.78\.1 tun0 \S+ true fd00:0:0:2::1 fd00:0:0:1::1$/.test(l)),
    args.join('\n'),
  )
  assert.equal((await server.stop(10_000)).code, 0)
})
