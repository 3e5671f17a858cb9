// dvpn's command line and configuration: DHTNet's flags (-l -a -b -t -u -w -r -c -p -C -d -v -h), its YAML keys in
// the main file and in the VPN file (-C / configuration_file; the VPN file wins), authorized_peers with pinned
// addresses, the server's networks from DHTNet's prefixes, usage errors naming the flag or the file and key.
import { test, after, mock } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { formatIPv4, formatIPv6, formatSubnet4, formatSubnet6 } from '../src/addresses.js'
import { parseArgs, type ParsedArgs } from '../src/cli.js'
import { resolveOptions, type ClientOptions, type ServerOptions } from '../src/options.js'
import { serverPlan } from '../src/server.js'
import { removeTempDirs, tempDir } from './helpers/dvpn.js'

const dir = tempDir('dvpn-options')
const home = join(dir, 'home')
mkdirSync(home, { recursive: true })
after(() => removeTempDirs())

const ID40 = '2f4975e7b11a0908bd400b27130fe9a496d0f415'
const ID64 = '0ca64f3511c466536ce20acb8d04bc5bfeec8951581fb79acaac382e8ebdbda2'

function args(argv: string[]): ParsedArgs {
  const out = parseArgs(argv)
  assert.equal(out.kind, 'run', `parse ${argv.join(' ')}`)
  return (out as { args: ParsedArgs }).args
}

function file(name: string, text: string): string {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}

test("DHTNet's flags parse; help and usage errors are exit outcomes", () => {
  const a = args(['-l', '-a', '-b', '10.0.0.1:4222', '-t', 'turn.example', '-u', 'u', '-w', 'w', '-r', 'r', '-c', 'c.crt', '-p', 'k.pem', '-C', 'vpn.yaml', '-d', 'main.yaml'])
  assert.equal(a.listen, true)
  assert.equal(a.anonymous, true)
  assert.deepEqual(a.bootstrap, ['10.0.0.1:4222'])
  assert.equal(a.turnHost, 'turn.example')
  assert.equal(a.vpnConfiguration, 'vpn.yaml')
  assert.equal(a.configuration, 'main.yaml')
  const b = args(['--full-tunnel', '--mtu', '1400', '--tun', 'vpn%d', ID40])
  assert.equal(b.peer, ID40)
  assert.equal(b.fullTunnel, true)
  assert.equal(b.mtu, '1400')
  assert.equal(b.tun, 'vpn%d')
  assert.equal(args(['-v']).versionCount, 1)
  // silence commander's help and error output
  const stdout = mock.method(process.stdout, 'write', () => true)
  const stderr = mock.method(process.stderr, 'write', () => true)
  try {
    assert.deepEqual(parseArgs(['-h']), { kind: 'exit', code: 0 })
    assert.deepEqual(parseArgs(['--no-such-flag']), { kind: 'exit', code: 2 })
  } finally {
    stdout.mock.restore()
    stderr.mock.restore()
  }
})

test("the server: networks from DHTNet's keys in the VPN file, which wins over the main file; pins; trust", async () => {
  const vpn = file(
    'vpn.yaml',
    'ip_address: "10.80.77."\nip_peer_address: "10.60.78."\nip_address_ipv6: "fd00:0:0:1::"\nip_peer_address_ipv6: "fd00:0:0:2::"\nscript_path: up.sh\nmasquerade: true\naddress_grace: 30\n',
  )
  const main = file(
    'main.yaml',
    `bootstrap: "127.0.0.1:4222"\nconfiguration_file: "${vpn}"\nip_address: "10.99.0.1/16"\nmtu: 1400\nanonymous: false\nauthorized_peers:\n  - ${ID40}\n  - id: ${ID64}\n    address: 10.60.78.50\n    address_ipv6: "fd00:0:0:2::50"\n`,
  )
  const o = (await resolveOptions(args(['-l', '-d', main]), { home })) as ServerOptions
  assert.equal(o.mode, 'server')
  assert.equal(o.anonymous, false)
  assert.deepEqual(o.allowedPeers, [ID40, ID64])
  assert.equal(formatIPv4(o.pins.get(ID64)!.v4), '10.60.78.50')
  assert.equal(formatIPv6(o.pins.get(ID64)!.v6!), 'fd00:0:0:2::50')
  assert.equal(o.scriptPath, join(dir, 'up.sh'), 'relative to the VPN file')
  assert.equal(o.masquerade, true)
  assert.equal(o.graceMs, 30_000)
  assert.equal(o.mtu, 1400, 'a key only in the main file still counts')
  const plan = serverPlan(o, 'aa'.repeat(32))
  assert.equal(formatIPv4(plan.server4), '10.80.77.1', "the VPN file's ip_address wins")
  assert.equal(formatSubnet4(plan.clients4), '10.60.78.0/24')
  assert.equal(formatIPv6(plan.server6), 'fd00:0:0:1::1')
  assert.equal(formatSubnet6(plan.clients6), 'fd00:0:0:2::/64')
  // -C on the command line names the VPN file too
  const viaFlag = (await resolveOptions(args(['-l', '-b', '127.0.0.1', '-C', vpn]), { home })) as ServerOptions
  assert.equal(viaFlag.masquerade, true)
})

test('no configuration at all: the server gets default networks derived from its id', async () => {
  const o = (await resolveOptions(args(['-l', '-b', '127.0.0.1']), { home })) as ServerOptions
  const plan = serverPlan(o, 'bb'.repeat(32))
  assert.ok(plan.defaults4 && plan.defaults6)
  assert.match(formatSubnet4(plan.subnet4), /^10\.\d+\.\d+\.0\/24$/)
  assert.equal(formatIPv4(plan.server4), formatSubnet4(plan.subnet4).replace(/0\/24$/, '1'))
  assert.match(formatSubnet6(plan.subnet6), /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/64$/)
  assert.equal(o.mtu, 65535)
  assert.equal(o.graceMs, 120_000)
  assert.equal(o.tunName, 'dvpn%d')
})

test('the client: full_tunnel, keepalive, mtu from the files; flags win', async () => {
  const vpn = file('client-vpn.yaml', 'full_tunnel: true\nkeepalive: 2\nmtu: 1400\ntun_name: "vpn7"\n')
  const c = (await resolveOptions(args(['-b', '127.0.0.1', '-C', vpn, ID64]), { home })) as ClientOptions
  assert.equal(c.mode, 'client')
  assert.equal(c.peer.hex, ID64)
  assert.equal(c.fullTunnel, true)
  assert.equal(c.keepaliveMs, 2000)
  assert.equal(c.mtu, 1400)
  assert.equal(c.tunName, 'vpn7')
  const d = (await resolveOptions(args(['-b', '127.0.0.1', '-C', vpn, '--mtu', '1280', '--tun', 'x%d', ID64]), { home })) as ClientOptions
  assert.equal(d.mtu, 1280)
  assert.equal(d.tunName, 'x%d')
})

test('usage errors name the flag, or the file and the key', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['-b', '127.0.0.1'], /missing PEER_ID/],
    [['-l', ID40], /takes no PEER_ID/],
    [['-a', '-b', '127.0.0.1', ID40], /-a\/--anonymous is a server option/],
    [['-l', '--full-tunnel', '-b', '127.0.0.1'], /--full-tunnel is a client option/],
    [['--mtu', '70000', ID40], /--mtu must be a number from 576 to 65535/],
    [['--tun', 'a/b', ID40], /--tun: "a\/b" is not an interface name/],
    [['-C', join(dir, 'missing.yaml'), ID40], /cannot read configuration file .*missing\.yaml: no such file/],
    [['-l', '-b', '127.0.0.1', '-C', file('bad4.yaml', 'ip_address: "10.80.77.0/31"\n')], /bad4\.yaml: ip_address: .*8 to 30/],
    [['-l', '-b', '127.0.0.1', '-C', file('badkey.yaml', 'masquerade: "yes"\n')], /badkey\.yaml: `masquerade` must be true or false/],
    [['-l', '-b', '127.0.0.1', '-d', file('badpeer.yaml', 'authorized_peers:\n  - id: nothex\n')], /authorized_peers\[0\] must be a 40- or 64-hex device id/],
    [['-l', '-b', '127.0.0.1', '-d', file('badpin.yaml', `authorized_peers:\n  - id: ${ID40}\n    address: 10.1.2\n`)], /authorized_peers\[0\]\.address/],
  ]
  for (const [argv, re] of cases) {
    await assert.rejects(resolveOptions(args(argv), { home }), (err: Error) => err.name === 'UsageError' && re.test(err.message), argv.join(' '))
  }
})
