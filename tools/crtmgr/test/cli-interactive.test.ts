// dhtnet-crtmgr -i, spawned as built: without a TTY it must fail at once; with one (util-linux `script`
// gives it a pseudo-terminal and forwards our answers) it writes identities, YAML config and ssh entry.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, existsSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml' // only to check that what we wrote parses

const CLI = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
const root = mkdtempSync(join(tmpdir(), 'dhtnet-crtmgr-i-'))
const home = join(root, 'home')
mkdirSync(home)
after(() => rmSync(root, { recursive: true, force: true }))

const hasScript = spawnSync('script', ['--version']).status === 0

/** Runs `dhtnet-crtmgr -i` on a pseudo-terminal, answering with `answers` (one per line). */
function interactive(answers: string[], extraArgs: string[] = ['--key-size', '2048']) {
  const cmd = [process.execPath, CLI, '-i', ...extraArgs].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')
  const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], {
    input: answers.map((a) => `${a}\n`).join(''),
    env: { ...process.env, HOME: home, NO_COLOR: '1', FORCE_COLOR: '0' },
    encoding: 'utf8',
    timeout: 120_000,
  })
  if (r.error) throw r.error
  return { status: r.status, out: r.stdout }
}

test('-i without a TTY fails at once with a clear message', () => {
  const r = spawnSync(process.execPath, [CLI, '-i'], { input: 's\n', encoding: 'utf8', timeout: 20_000, env: { ...process.env, NO_COLOR: '1' } })
  assert.equal(r.error, undefined, 'it must not hang')
  assert.equal(r.status, 1)
  assert.match(r.stderr, /^dhtnet-crtmgr: error: --interactive needs a terminal, but stdin is not a TTY$/m)
  assert.match(r.stderr, /^hint: .*-s -o DIR/m)
  assert.equal(r.stdout, '')
})

test('-i server, then client signed by the server CA: identities, YAML configs, one ssh entry', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  const srv = join(root, 'srv')
  const server = interactive(['s', srv])
  assert.equal(server.status, 0, server.out)
  assert.match(server.out, /Generate identity for server or client\? \[\(C\)lient\/\(s\)erver\] \(default: client\): /)
  assert.match(server.out, new RegExp(`Configuration file created in ${join(srv, 'dnc.yaml')}`))
  const serverYaml = parseYaml(readFileSync(join(srv, 'dnc.yaml'), 'utf8')) as Record<string, unknown>
  assert.equal(serverYaml.certificate, join(srv, 'id', 'id-server.crt'))
  assert.equal(serverYaml.privateKey, join(srv, 'id', 'id-server.pem'))
  assert.equal(serverYaml.anonymous, true)
  assert.deepEqual(serverYaml.authorized_services, [{ ip: '127.0.0.1', port: 22 }])
  assert.equal(serverYaml.bootstrap, 'bootstrap.sfl.io')
  assert.equal(statSync(join(srv, 'id', 'id-server.pem')).mode & 0o777, 0o600)
  execFileSync('openssl', ['verify', '-CAfile', join(srv, 'CA', 'ca-server.crt'), join(srv, 'id', 'id-server.crt')])

  const cli = join(root, 'cli')
  const client = interactive(['c', 'y', srv, cli, 'y'])
  assert.equal(client.status, 0, client.out)
  const clientYaml = parseYaml(readFileSync(join(cli, 'config.yml'), 'utf8')) as Record<string, unknown>
  assert.equal(clientYaml.certificate, join(cli, 'certificate.crt'))
  assert.equal(clientYaml.privateKey, join(cli, 'certificate.pem'))
  assert.equal(clientYaml.ip, '127.0.0.1')
  assert.equal(clientYaml.port, 22)
  assert.equal(statSync(join(cli, 'certificate.pem')).mode & 0o777, 0o600)
  assert.ok(!existsSync(join(cli, 'ca.pem')), 'signed by the server CA, no own CA')
  execFileSync('openssl', ['verify', '-CAfile', join(srv, 'CA', 'ca-server.crt'), join(cli, 'certificate.crt')])
  const sshConfig = join(home, '.ssh', 'config')
  assert.match(client.out, new RegExp(`SSH configuration added to ${sshConfig}`))
  const entry = `\nHost dnc/*\n    ProxyCommand dnc -d "${join(cli, 'config.yml')}" $(basename %h)\n`
  assert.equal(readFileSync(sshConfig, 'utf8'), entry)
  assert.equal(statSync(sshConfig).mode & 0o777, 0o600)
  const certBefore = readFileSync(join(cli, 'certificate.pem'), 'utf8')

  // again, with Enter everywhere: keeps the identity and the config, never duplicates the ssh entry
  const again = interactive(['', '', srv, cli, '', '', ''])
  assert.equal(again.status, 0, again.out)
  assert.match(again.out, /Keeping existing identity/)
  assert.match(again.out, /Info: dnc configuration already exists in SSH config\. File is left untouched/)
  assert.equal(readFileSync(sshConfig, 'utf8'), entry)
  assert.equal(readFileSync(join(cli, 'certificate.pem'), 'utf8'), certBefore)
})

test('-i client with its own CA; ssh config with other hosts is appended to, not replaced', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  const sshConfig = join(home, '.ssh', 'config')
  mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 })
  writeFileSync(sshConfig, 'Host example\n    User me\n')
  chmodSync(sshConfig, 0o644)
  const own = join(root, 'own')
  const r = interactive(['client', 'n', own, 'yes'])
  assert.equal(r.status, 0, r.out)
  assert.match(r.out, new RegExp(`Generated CA in ${own}: ca [0-9a-f]{40}`))
  execFileSync('openssl', ['verify', '-CAfile', join(own, 'ca.crt'), join(own, 'certificate.crt')])
  const text = readFileSync(sshConfig, 'utf8')
  assert.ok(text.startsWith('Host example\n    User me\n\nHost dnc/*\n'), text)
  assert.equal(text.match(/Host dnc\/\*/g)?.length, 1)
  assert.equal(statSync(sshConfig).mode & 0o777, 0o644, 'keeps the mode of an existing file')
})

test('-i client: a missing server CA is a clear error, and nothing is created', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  const r = interactive(['c', 'y', join(root, 'no-server'), join(root, 'never')])
  assert.equal(r.status, 1, r.out)
  assert.match(
    r.out,
    /dhtnet-crtmgr: error: unable to load the server CA from .*no-server\/CA: identity files missing: certificate file .*ca-server\.crt does not exist and private key file .*ca-server\.pem does not exist/,
  )
  assert.match(r.out, /hint: generate the server CA first/)
  assert.ok(!existsSync(join(root, 'never')))
})

test('-i with end of input takes the defaults and does not hang', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  // client (default), sign with server CA (default yes) at a folder that has none: fails cleanly
  const r = interactive([])
  assert.notEqual(r.status, null)
  assert.equal(r.status, 1, r.out)
  assert.match(r.out, /unable to load the server CA from \/etc\/dhtnet\/CA/)
})
