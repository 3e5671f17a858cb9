/**
 * Command line: parsing and precedence in process; exit codes and messages from the built binary, as a user sees
 * them (usage errors exit 2 with a message and a hint, never a stack trace; runtime failures exit 1).
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs, type ParsedArgs } from '../src/cli.js'
import { parseLocalForward, parsePeer, resolveOptions } from '../src/options/resolve.js'
import { UsageError } from '../src/errors.js'
import { DNC, assertBuilt, removeTempDirs, tempDir, userEnv } from './helpers/dnc.js'

after(removeTempDirs)

const ID40 = '2f4975e7b11a0908bd400b27130fe9a496d0f415'
const ID64 = '7364c5e4f95fbcecac0abe7739a869f2b338e1318687d5ab842df1cf0b438696'

function parsed(argv: string[]): ParsedArgs {
  const r = parseArgs(argv)
  assert.equal(r.kind, 'run', `parse of ${argv.join(' ')}`)
  return (r as { args: ParsedArgs }).args
}

test('DHTNet flags parse with their meaning, in any order', () => {
  const a = parsed([
    ID40,
    '-P',
    '2222',
    '-i',
    '::1',
    '-b',
    'h1:4222',
    '-b',
    'h2,h3',
    '-t',
    'turn.example',
    '-u',
    'u',
    '-w',
    'p',
    '-r',
    'r',
    '-c',
    'c.crt',
    '-p',
    'k.pem',
    '-d',
    'x.yaml',
    '-a',
  ])
  assert.equal(a.peer, ID40)
  assert.equal(a.port, '2222')
  assert.equal(a.ip, '::1')
  assert.deepEqual(a.bootstrap, ['h1:4222', 'h2', 'h3'])
  assert.deepEqual([a.turnHost, a.turnUser, a.turnPass, a.turnRealm], ['turn.example', 'u', 'p', 'r'])
  assert.deepEqual([a.certificate, a.privateKey, a.configuration, a.anonymous], ['c.crt', 'k.pem', 'x.yaml', true])
  assert.equal(parsed(['-v']).versionCount, 1)
  assert.equal(parsed(['-vv', ID40]).versionCount, 2)
  assert.equal(parsed(['-l', '--allow', '22', '--allow', '[::1]:80']).allow.length, 2)
})

test('peer ids: 40 and 64 hex, any case, and dnc/<id> as ssh %h gives it', () => {
  assert.deepEqual(parsePeer(ID40.toUpperCase()), { hex: ID40, kind: 'id' })
  assert.deepEqual(parsePeer(ID64), { hex: ID64, kind: 'longId' })
  assert.deepEqual(parsePeer(`dnc/${ID40}`), { hex: ID40, kind: 'id' })
  assert.throws(() => parsePeer('dnc/1234'), UsageError)
  assert.throws(() => parsePeer(`${ID40}0`), UsageError)
})

test('-L [bind:]port', () => {
  assert.deepEqual(parseLocalForward('8080'), { host: '127.0.0.1', port: 8080 })
  assert.deepEqual(parseLocalForward('0.0.0.0:80'), { host: '0.0.0.0', port: 80 })
  assert.deepEqual(parseLocalForward('[::1]:0'), { host: '::1', port: 0 })
  assert.deepEqual(parseLocalForward('*:22'), { host: '0.0.0.0', port: 22 })
  assert.throws(() => parseLocalForward('x:y'), UsageError)
  assert.throws(() => parseLocalForward('99999'), UsageError)
})

test('precedence: flags win over YAML, YAML over defaults; YAML bools only turn things on', async () => {
  const home = tempDir('cli-home')
  const yaml = join(home, 'c.yaml')
  writeFileSync(yaml, 'bootstrap: yaml.example\nip: 10.1.2.3\nport: 2022\nverbose: true\nanonymous: true\ntimeout: 7\ncertificate: id/c.crt\nprivateKey: id/c.pem\n')
  const fromYaml = await resolveOptions(parsed(['-d', yaml, ID40]), { home })
  assert.equal(fromYaml.mode, 'client')
  assert.deepEqual(fromYaml.bootstrap, ['yaml.example'])
  assert.equal(fromYaml.host, '10.1.2.3')
  assert.equal(fromYaml.port, 2022)
  assert.equal(fromYaml.timeoutMs, 7000)
  assert.equal(fromYaml.verbosity, 'verbose')
  assert.deepEqual(fromYaml.identityFiles, { certificate: join(home, 'id/c.crt'), privateKey: join(home, 'id/c.pem') })

  const fromFlags = await resolveOptions(parsed(['-d', yaml, '-b', 'flag.example', '-i', '127.0.0.1', '-P', '22', '--timeout', '1.5', '-q', ID40]), { home })
  assert.equal(fromFlags.mode, 'client')
  assert.deepEqual(fromFlags.bootstrap, ['flag.example'])
  assert.equal(fromFlags.host, '127.0.0.1')
  assert.equal(fromFlags.port, 22)
  assert.equal(fromFlags.timeoutMs, 1500)
  assert.equal(fromFlags.verbosity, 'quiet')

  const defaults = await resolveOptions(parsed([ID40]), { home })
  assert.equal(defaults.mode, 'client')
  assert.deepEqual([defaults.host, defaults.port, defaults.timeoutMs, defaults.configPath], ['127.0.0.1', 22, 30000, undefined])

  const srv = await resolveOptions(parsed(['-l', '-d', yaml, '--allow', '8080']), { home })
  assert.equal(srv.mode, 'server')
  assert.equal(srv.anonymous, true)
  assert.deepEqual(srv.services, [{ ip: '127.0.0.1', port: 8080 }])
})

test('TURN: --turn_transport and the YAML turn_transport reach the options (the flag wins); absent: both relays', async () => {
  const home = tempDir('cli-home')
  const yaml = join(home, 'turn.yaml')
  writeFileSync(yaml, 'turn_host: turn.example\nturn_user: u\nturn_pass: p\nturn_realm: r\nturn_transport: tls\n')
  const fromYaml = await resolveOptions(parsed(['-d', yaml, ID40]), { home })
  assert.deepEqual(fromYaml.turn, { host: 'turn.example', user: 'u', pass: 'p', realm: 'r', transport: 'tls' })
  const fromFlag = await resolveOptions(parsed(['-d', yaml, '--turn_transport', 'udp', ID40]), { home })
  assert.equal(fromFlag.turn?.transport, 'udp')
  const both = await resolveOptions(parsed(['-t', 'turn.example', '-u', 'u', '-w', 'p', ID40]), { home })
  assert.deepEqual(both.turn, { host: 'turn.example', user: 'u', pass: 'p' })
  await assert.rejects(resolveOptions(parsed(['--turn_transport', 'tcp', ID40]), { home }), /no TURN server was named/)
})

test('the default configuration ~/.dnc/config.yml is read without -d', async () => {
  const home = tempDir('cli-home')
  mkdirSync(join(home, '.dnc'))
  writeFileSync(join(home, '.dnc', 'config.yml'), 'port: 2200\n')
  const o = await resolveOptions(parsed([ID40]), { home })
  assert.equal(o.mode === 'client' && o.port, 2200)
  assert.equal(o.configPath, join(home, '.dnc', 'config.yml'))
  assert.equal(o.configSource, 'default')
})

test('contradictions are usage errors', async () => {
  const home = tempDir('cli-home')
  const bad: Array<[string[], RegExp]> = [
    [['-c', 'x.crt', ID40], /without -p\/privateKey/],
    [['-u', 'user', ID40], /no TURN server/],
    [['-l', '-L', '80'], /-L is a client option/],
    [['--allow', '22', ID40], /--allow is a server option/],
    [['--verbose', '-q', ID40], /contradict/],
    [['--timeout', 'soon', ID40], /--timeout must be a number/],
    [['-b', 'a:b:c', ID40], /is not host\[:port\]/],
    [['--bind', 'localhost', ID40], /--bind: "localhost" is not an IPv4 or IPv6 address/],
    [[ID40, 'extra'], /unexpected argument: extra/],
  ]
  for (const [argv, message] of bad) {
    await assert.rejects(resolveOptions(parsed(argv), { home }), (err: unknown) => err instanceof UsageError && message.test(err.message), argv.join(' '))
  }
})

function dnc(args: string[], home: string) {
  return spawnSync(process.execPath, [DNC, ...args], { env: userEnv(home), encoding: 'utf8', timeout: 30_000, input: '' })
}

test('the binary: help and version on stdout with exit 0', () => {
  assertBuilt()
  const home = tempDir('cli-bin')
  const h = dnc(['-h'], home)
  assert.equal(h.status, 0)
  assert.match(h.stdout, /^Usage: dnc \[options\] \[PEER_ID\]/)
  for (const flag of [
    '-P, --port',
    '-i, --ip',
    '-l, --listen',
    '-L, --local-forward',
    '-b, --bootstrap',
    '-t, --turn_host',
    '-u, --turn_user',
    '-w, --turn_pass',
    '-r, --turn_realm',
    '-c, --certificate',
    '-p, --privateKey',
    '-d, --configuration',
    '-a, --anonymous',
    '-v, --version',
    '--verbose',
    '-q, --quiet',
    '--timeout',
  ]) {
    assert.ok(h.stdout.includes(flag), `help lists ${flag}`)
  }
  const v = dnc(['-v'], home)
  assert.equal(v.status, 0)
  assert.match(v.stdout, /^dnc \d+\.\d+\.\d+\n$/)
  assert.equal(v.stderr, '')
})

test('the binary: usage errors exit 2 with a message and a hint, no stack trace, nothing on stdout', () => {
  const home = tempDir('cli-bin')
  const cases: Array<[string[], RegExp]> = [
    [[], /missing PEER_ID/],
    [['--bogus'], /unknown option '--bogus'/],
    [['1234'], /"1234" is not a peer id: expected 40 hex characters/],
    [['-P', 'ssh', ID40], /-P\/--port must be a port number from 1 to 65535, got "ssh"/],
    [['-d', '/nonexistent/dnc.yaml', ID40], /cannot read configuration file \/nonexistent\/dnc\.yaml: no such file/],
    [['-P'], /option '-P, --port <port>' argument missing/],
  ]
  for (const [argv, message] of cases) {
    const r = dnc(argv, home)
    assert.equal(r.status, 2, `${argv.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, message)
    assert.doesNotMatch(r.stderr, /\n\s+at /)
    assert.equal(r.stdout, '')
  }
  const yaml = join(home, 'bad.yaml')
  writeFileSync(yaml, 'authorized_services:\n  - ip: 127.0.0.1\n    port: 123456\n')
  const r = dnc(['-l', '-d', yaml], home)
  assert.equal(r.status, 2)
  assert.match(r.stderr, /authorized_services\[0\]\.port must be a port number from 1 to 65535, got 123456/)
})

test('the binary: a missing identity file is a clear runtime error (exit 1)', () => {
  const home = tempDir('cli-bin')
  const r = dnc(['-c', join(home, 'none.crt'), '-p', join(home, 'none.pem'), '-b', '127.0.0.1:1', ID40], home)
  assert.equal(r.status, 1, r.stderr)
  assert.match(r.stderr, /none\.(crt|pem)/)
  assert.doesNotMatch(r.stderr, /\n\s+at /)
  assert.equal(r.stdout, '')
})

test('the binary: without -c/-p a default identity is created under $DHTNET_HOME and stderr says where', () => {
  const home = tempDir('cli-bin')
  const r = dnc(['-b', '127.0.0.1:1', '--timeout', '1', ID40], home)
  // created first, then the unreachable bootstrap fails the run
  assert.match(r.stderr, new RegExp(`Created device identity in ${join(home, '.dhtnet', 'id')}`))
  assert.match(r.stderr, /DHT bootstrap: no DHT node answered/)
  assert.equal(r.status, 1)
  assert.equal(r.stdout, '')
  for (const f of ['id/device.crt', 'id/device.pem', 'ca/ca.crt', 'ca/ca.pem']) assert.ok(existsSync(join(home, '.dhtnet', f)), f)
  // the second run reuses it: nothing created
  const again = dnc(['-b', '127.0.0.1:1', '--timeout', '1', ID40], home)
  assert.doesNotMatch(again.stderr, /Created/)
})

test('the binary: TURN flags reach the ICE configuration (a TURN server with an unknown transport is refused with the reason)', () => {
  const home = tempDir('cli-bin')
  // nothing is sent anywhere: the TURN server is checked before any socket opens (turns: is TURN over TLS for the
  // ICE-TCP relay now; an unknown transport is refused)
  const bad = dnc(['-t', 'turn:127.0.0.1:3478?transport=sctp', '-u', 'user', '-w', 'secret', '-b', '127.0.0.1:1', ID40], home)
  assert.equal(bad.status, 1, bad.stderr)
  assert.match(bad.stderr, /unknown transport "sctp"/)
  assert.doesNotMatch(bad.stderr, /secret/) // the password is not echoed
  const flag = dnc(['-t', '127.0.0.1', '-u', 'user', '-w', 'secret', '--turn_transport', 'quic', '-b', '127.0.0.1:1', ID40], home)
  assert.equal(flag.status, 2, flag.stderr)
  assert.match(flag.stderr, /--turn_transport must be one of udp, tcp, tls, got "quic"/)
  const noPass = dnc(['-t', '127.0.0.1:3478', '-b', '127.0.0.1:1', ID40], home)
  assert.equal(noPass.status, 1, noPass.stderr)
  assert.match(noPass.stderr, /TURN server 127\.0\.0\.1:3478 needs a user name and a password/)
})

test('bootstrap: none configured → the public OpenDHT network plus LAN discovery; "-b none" → LAN only', async () => {
  // resolution only: nothing is sent anywhere
  const home = tempDir('cli-boot')
  const defaults = await resolveOptions(parsed([ID40]), { home })
  assert.deepEqual(defaults.bootstrap, ['bootstrap.jami.net:4222', 'bootstrap.sfl.io:4222'])
  assert.equal(defaults.discovery, true)
  const lanOnly = await resolveOptions(parsed(['-b', 'none', ID40]), { home })
  assert.deepEqual(lanOnly.bootstrap, [])
  assert.equal(lanOnly.discovery, true)
  const yaml = join(home, 'empty.yaml')
  writeFileSync(yaml, 'bootstrap: []\n')
  const lanOnlyYaml = await resolveOptions(parsed(['-d', yaml, ID40]), { home })
  assert.deepEqual(lanOnlyYaml.bootstrap, [])
  const privateNet = await resolveOptions(parsed(['-b', '127.0.0.1:4222', ID40]), { home })
  assert.deepEqual(privateNet.bootstrap, ['127.0.0.1:4222'])
  assert.equal(privateNet.discovery, false)
})
