import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseConfig, readConfigFile, defaultConfigPaths, findDefaultConfig } from '../src/options/config.js'
import { UsageError } from '../src/errors.js'

const DHTNET_SHIPPED = `
# Shipped dnc.yaml of DHTNet (keys and values as in tools/dnc/dnc.yaml)
bootstrap: "bootstrap.sfl.io"
turn_host: "turn.sfl.io"
turn_user: "sfl"
turn_pass: "sfl"
turn_realm: "sfl"
verbose: false
enable_upnp: true
#certificate: "/etc/dhtnet/id/id-server.crt"
#privateKey: "/etc/dhtnet/id/id-server.pem"
ip: "127.0.0.1"
port: 22
anonymous: true
authorized_services:
  - ip: "127.0.0.1"
    port: 22
#  - ip: "127.0.0.1"
#    port: 80
`

test('reads every key of DHTNet shipped dnc.yaml', () => {
  const c = parseConfig(DHTNET_SHIPPED, '/etc/dhtnet/dnc.yaml')
  assert.deepEqual(c.bootstrap, ['bootstrap.sfl.io'])
  assert.equal(c.turn_host, 'turn.sfl.io')
  assert.equal(c.turn_user, 'sfl')
  assert.equal(c.turn_pass, 'sfl')
  assert.equal(c.turn_realm, 'sfl')
  assert.equal(c.verbose, false)
  assert.equal(c.enable_upnp, true)
  assert.equal(c.ip, '127.0.0.1')
  assert.equal(c.port, 22)
  assert.equal(c.anonymous, true)
  assert.deepEqual(c.authorized_services, [{ ip: '127.0.0.1', port: 22 }])
  assert.deepEqual(c.unknownKeys, [])
})

test('relative identity paths are relative to the file; IPv6 and names in authorized_services', () => {
  const c = parseConfig(
    'certificate: id/server.crt\nprivateKey: /abs/server.pem\nauthorized_services:\n  - {ip: "[::1]", port: "22"}\n  - {ip: localhost, port: 80}\nallow_all_services: false\nbootstrap: [a.example:4222, "b.example"]\ntimeout: 2.5\n',
    '/srv/dnc/dnc.yaml',
  )
  assert.equal(c.certificate, '/srv/dnc/id/server.crt')
  assert.equal(c.privateKey, '/abs/server.pem')
  assert.deepEqual(c.authorized_services, [
    { ip: '::1', port: 22 },
    { ip: 'localhost', port: 80 },
  ])
  assert.equal(c.allow_all_services, false)
  assert.deepEqual(c.bootstrap, ['a.example:4222', 'b.example'])
  assert.equal(c.timeout, 2.5)
})

test('each wrong value is a usage error naming the file and the key', () => {
  const cases: Array<[string, RegExp]> = [
    ['port: 70000', /`port` must be a port number from 1 to 65535, got 70000/],
    ['port: ssh', /`port` must be a port number/],
    ['anonymous: "yes"', /`anonymous` must be true or false/],
    ['authorized_services: {ip: 1}', /`authorized_services` must be a list/],
    ['authorized_services:\n  - ip: ""\n    port: 22', /authorized_services\[0\]\.ip must be/],
    ['authorized_services:\n  - ip: 127.0.0.1\n    port: 0', /authorized_services\[0\]\.port must be a port number/],
    ['authorized_services:\n  - 22', /authorized_services\[0\] must be a mapping/],
    ['bootstrap: 4222', /`bootstrap` must be a host\[:port\] string/],
    ['timeout: -1', /`timeout` must be a number of seconds/],
    ['- a\n- b', /must be a YAML mapping/],
    ['port: [', /is not valid YAML/],
    ['port: 1\nport: 2', /is not valid YAML/],
  ]
  for (const [text, message] of cases) {
    assert.throws(
      () => parseConfig(text, '/x/dnc.yaml'),
      (err: unknown) => err instanceof UsageError && message.test(err.message) && err.message.includes('/x/dnc.yaml'),
      text,
    )
  }
})

test('unknown keys are reported, not fatal', () => {
  const c = parseConfig('bootstrap: x\nauthorised_services: []\n', '/x.yaml')
  assert.deepEqual(c.unknownKeys, ['authorised_services'])
})

test('missing file: usage error with the path and a hint', async () => {
  await assert.rejects(
    readConfigFile('/nonexistent/dnc.yaml'),
    (err: unknown) => err instanceof UsageError && /\/nonexistent\/dnc\.yaml: no such file/.test(err.message) && /crtmgr/.test(err.hint ?? ''),
  )
})

test('default locations: ~/.dnc/config.yml first, then /etc/dhtnet/dnc.yaml', async () => {
  const home = mkdtempSync(join(tmpdir(), 'dnc-home-'))
  after(() => rmSync(home, { recursive: true, force: true }))
  assert.deepEqual(defaultConfigPaths(home), [join(home, '.dnc', 'config.yml'), '/etc/dhtnet/dnc.yaml'])
  const { mkdirSync } = await import('node:fs')
  mkdirSync(join(home, '.dnc'))
  writeFileSync(join(home, '.dnc', 'config.yml'), 'port: 2222\n')
  assert.equal(await findDefaultConfig(home), join(home, '.dnc', 'config.yml'))
})

test('the YAML files dhtnet-crtmgr --interactive writes are read with every key known', async () => {
  const { clientConfigYaml, serverConfigYaml } = await import('../../crtmgr/src/yaml-config.js')
  const paths = { certificate: '/home/me/.dnc/certificate.crt', privateKey: '/home/me/.dnc/certificate.pem' }
  const client = parseConfig(clientConfigYaml(paths), '/home/me/.dnc/config.yml')
  assert.deepEqual(client.unknownKeys, [])
  assert.equal(client.certificate, paths.certificate)
  assert.equal(client.privateKey, paths.privateKey)
  assert.equal(client.port, 22)
  const server = parseConfig(serverConfigYaml(paths), '/etc/dhtnet/dnc.yaml')
  assert.deepEqual(server.unknownKeys, [])
  assert.deepEqual(server.authorized_services, [{ ip: '127.0.0.1', port: 22 }])
  assert.equal(server.anonymous, true)
})
