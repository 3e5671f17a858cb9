// Spawns the BUILT tool (tools/crtmgr/dist/cli.js) as a user would. Build first: cd tools/crtmgr && pnpm build
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const CLI = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
const root = mkdtempSync(join(tmpdir(), 'dhtnet-crtmgr-'))
after(() => rmSync(root, { recursive: true, force: true }))

interface Result {
  status: number | null
  stdout: string
  stderr: string
}

function run(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Result {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    input: options.input ?? '',
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...options.env },
    encoding: 'utf8',
    timeout: 120_000,
  })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function dirOf(name: string): string {
  const d = join(root, name)
  mkdirSync(d, { recursive: true })
  return d
}

/** The user-facing error format: one error line, one hint line, never a stack trace. */
function assertUserError(r: Result, code: number, message: RegExp): void {
  assert.equal(r.status, code, `exit code; stderr: ${r.stderr}`)
  assert.match(r.stderr, /^dhtnet-crtmgr: error: /m)
  assert.match(r.stderr, message)
  assert.match(r.stderr, /^hint: /m)
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace for a user mistake')
}

function openssl(args: string[], input?: Buffer): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
}

function pubkeyIds(keyFile: string): { id: string; longId: string } {
  const der = execFileSync('openssl', ['pkey', '-in', keyFile, '-pubout', '-outform', 'DER'])
  return {
    id: execFileSync('sha1sum', { input: der }).toString().split(' ')[0]!,
    longId: execFileSync('sha256sum', { input: der }).toString().split(' ')[0]!,
  }
}

test('-h and -v exit 0 on stdout', () => {
  const help = run(['-h'])
  assert.equal(help.status, 0)
  for (const flag of [
    '-o, --output',
    '-c, --certificate',
    '-p, --privatekey',
    '-n, --name',
    '-a, --identifier',
    '-s, --setup',
    '-i, --interactive',
    '--generate',
    '--sign',
    '--key-size',
    '--force',
    '-v, --version',
    '-h, --help',
  ]) {
    assert.ok(help.stdout.includes(flag), `help lists ${flag}`)
  }
  assert.equal(help.stderr, '')
  const version = run(['-v'])
  assert.equal(version.status, 0)
  assert.equal(version.stdout, 'dhtnet-crtmgr v1.0\n')
  assert.equal(run(['--version']).stdout, 'dhtnet-crtmgr v1.0\n')
})

test('usage errors exit 2 with a message and a hint', () => {
  assertUserError(run(['--bogus']), 2, /unknown option '--bogus'/)
  assertUserError(run(['--key-size', '1024', '-o', dirOf('ks')]), 2, /'1024' is invalid. Allowed choices are 2048, 3072, 4096/)
  assertUserError(run([]), 2, /path to save the generated certificate is not provided/)
  assertUserError(run(['--generate']), 2, /not provided/)
  assertUserError(run(['-a']), 2, /-a needs the certificate/)
  assertUserError(run(['-o', dirOf('half'), '-c', 'ca.crt']), 2, /needs both its certificate and its private key/)
  assertUserError(run(['-o', dirOf('nm'), '-n', 'a/b']), 2, /-n\/--name "a\/b" is not a file base name/)
  assertUserError(run(['-s', '--sign', 'x.csr', '-o', dirOf('ex')]), 2, /-s and --sign cannot be used together/)
  assertUserError(run(['-o']), 2, /argument missing/)
  assertUserError(run(['extra-arg']), 2, /too many arguments/)
  assert.deepEqual(readdirSync(join(root, 'ks')), [], 'nothing written on a usage error')
})

test('-s -o DIR: CA/ca-server and id-server signed by it; refuses to overwrite; --force replaces', () => {
  const dir = dirOf('setup')
  const r = run(['-s', '-o', dir, '--key-size', '2048'])
  assert.equal(r.status, 0, r.stderr)
  const caKey = join(dir, 'CA', 'ca-server.pem')
  const idKey = join(dir, 'id', 'id-server.pem')
  const ids = pubkeyIds(idKey)
  assert.match(r.stdout, new RegExp(`^Generated CA in ${join(dir, 'CA')}: ca-server ${pubkeyIds(caKey).id}$`, 'm'))
  assert.match(r.stdout, new RegExp(`^Generated certificate in ${join(dir, 'id')}: id-server ${ids.id}$`, 'm'))
  assert.match(r.stderr, /Generating RSA-2048 keys for ca-server and id-server\.\.\. done/)
  for (const key of [caKey, idKey]) assert.equal(statSync(key).mode & 0o777, 0o600)
  assert.match(openssl(['verify', '-CAfile', join(dir, 'CA', 'ca-server.crt'), join(dir, 'id', 'id-server.crt')]), /OK/)
  const subject = openssl(['x509', '-in', join(dir, 'id', 'id-server.crt'), '-noout', '-subject', '-issuer'])
  assert.match(subject, new RegExp(`subject=CN = id-server, UID = ${ids.id}`))
  assert.match(subject, /issuer=CN = ca-server, UID = /)

  const before = readFileSync(idKey, 'utf8')
  const again = run(['-s', '-o', dir, '--key-size', '2048'])
  assertUserError(again, 1, /ca-server\.pem already exists; refusing to overwrite it/)
  assert.match(again.stderr, /--force/)
  assert.doesNotMatch(again.stderr, /Generating/, 'fails before spending time on keys')
  assert.equal(readFileSync(idKey, 'utf8'), before)

  const forced = run(['-s', '-o', dir, '--key-size', '2048', '--force'])
  assert.equal(forced.status, 0, forced.stderr)
  assert.notEqual(readFileSync(idKey, 'utf8'), before)
  assert.equal(statSync(idKey).mode & 0o777, 0o600)
  assert.deepEqual(readdirSync(join(dir, 'id')).sort(), ['id-server.crt', 'id-server.pem'], 'no temporary files left')
})

test('-s with -c/-p: the given CA signs id-server, no new CA (the documented meaning)', () => {
  const caDir = dirOf('s-ca')
  assert.equal(run(['-o', caDir, '-n', 'org', '--key-size', '2048']).status, 0)
  const dir = dirOf('s-with-ca')
  const r = run(['-s', '-o', dir, '-c', join(caDir, 'org.crt'), '-p', join(caDir, 'org.pem'), '--key-size', '2048'])
  assert.equal(r.status, 0, r.stderr)
  assert.ok(!existsSync(join(dir, 'CA')))
  assert.match(openssl(['verify', '-CAfile', join(caDir, 'org.crt'), join(dir, 'id', 'id-server.crt')]), /OK/)
})

test('-o DIR makes a CA; -o DIR -c -p makes a device signed by it; -a prints both ids like openssl', () => {
  const caDir = dirOf('gen-ca')
  const ca = run(['-o', caDir, '--key-size', '2048'])
  assert.equal(ca.status, 0, ca.stderr)
  assert.match(ca.stdout, new RegExp(`^Generated certificate in ${caDir}: ca [0-9a-f]{40}$`, 'm'))
  const caText = openssl(['x509', '-in', join(caDir, 'ca.crt'), '-noout', '-text'])
  assert.match(caText, /Basic Constraints: critical\n\s+CA:TRUE/)

  const devDir = dirOf('gen-dev')
  // the long option as DHTNet's man page spells it is accepted too
  const dev = run(['--generate', '-o', devDir, '-n', 'laptop', '-c', join(caDir, 'ca.crt'), '--privateKey', join(caDir, 'ca.pem'), '--key-size', '2048'])
  assert.equal(dev.status, 0, dev.stderr)
  assert.match(openssl(['verify', '-CAfile', join(caDir, 'ca.crt'), join(devDir, 'laptop.crt')]), /OK/)
  assert.match(openssl(['x509', '-in', join(devDir, 'laptop.crt'), '-noout', '-text']), /Key Usage: critical\n\s+Digital Signature, Data Encipherment/)
  assert.equal(statSync(join(devDir, 'laptop.pem')).mode & 0o777, 0o600)

  // default device name is "certificate", like DHTNet
  const dflt = run(['-o', devDir, '-c', join(caDir, 'ca.crt'), '-p', join(caDir, 'ca.pem'), '--key-size', '2048'])
  assert.equal(dflt.status, 0, dflt.stderr)
  assert.ok(existsSync(join(devDir, 'certificate.pem')))

  const ids = pubkeyIds(join(devDir, 'laptop.pem'))
  const a = run(['-a', '-c', join(devDir, 'laptop.crt'), '-p', join(devDir, 'laptop.pem')])
  assert.equal(a.status, 0, a.stderr)
  assert.equal(a.stdout, `Public key id: ${ids.id}\nLong id: ${ids.longId}\n`)
  assert.equal(run(['-a', '-c', join(devDir, 'laptop.crt')]).stdout, a.stdout, '-a works from the certificate alone')
  assertUserError(run(['-a', '-c', join(devDir, 'laptop.crt'), '-p', join(caDir, 'ca.pem')]), 1, /does not match/)
})

test('errors about files: missing identity, signer that is not a CA', () => {
  const dir = dirOf('errs')
  assertUserError(run(['-a', '-c', join(dir, 'missing.crt')]), 1, /certificate file .*missing\.crt does not exist/)
  const missing = run(['-o', dir, '-c', join(dir, 'nope.crt'), '-p', join(dir, 'nope.pem'), '--key-size', '2048'])
  assertUserError(missing, 1, /does not exist/)
  assert.match(missing.stderr, /dhtnet-crtmgr --interactive/)
  const s = run(['-s', '-o', dir, '--key-size', '2048'])
  assert.equal(s.status, 0, s.stderr)
  const notCa = run(['-o', dir, '-n', 'x', '-c', join(dir, 'id', 'id-server.crt'), '-p', join(dir, 'id', 'id-server.pem'), '--key-size', '2048'])
  assertUserError(notCa, 1, /is not a CA certificate/)
  assert.ok(!existsSync(join(dir, 'x.pem')))
})

test('an output folder that cannot be made is an error before any key is generated, and no hang', () => {
  const file = join(dirOf('notdir'), 'file')
  writeFileSync(file, 'x')
  const r = run(['-o', join(file, 'sub'), '--key-size', '2048'])
  assertUserError(r, 1, /cannot create folder .*file\/sub/)
  assert.doesNotMatch(r.stderr, /Generating/)
  // under /proc, fs.mkdir({recursive: true}) would spin forever; we must fail
  assertUserError(run(['-s', '-o', '/proc/dhtnet-no-such-dir/x', '--key-size', '2048']), 1, /cannot create folder \/proc\/dhtnet-no-such-dir/)
})

test('--sign signs a CSR (subject from the CSR) and a public key (name from the file)', () => {
  const dir = dirOf('sign')
  assert.equal(run(['-o', dir, '--key-size', '2048']).status, 0)
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'phone.key'), '-subj', '/CN=phone', '-out', join(dir, 'phone.csr')])
  const r = run(['--sign', join(dir, 'phone.csr'), '-o', join(dir, 'out'), '-c', join(dir, 'ca.crt'), '-p', join(dir, 'ca.pem')])
  assert.equal(r.status, 0, r.stderr)
  const crt = join(dir, 'out', 'phone.crt')
  assert.match(r.stdout, new RegExp(`^Signed certificate in ${join(dir, 'out')}: phone ${pubkeyIds(join(dir, 'phone.key')).id}$`, 'm'))
  assert.match(openssl(['verify', '-CAfile', join(dir, 'ca.crt'), crt]), /OK/)
  assert.match(openssl(['x509', '-in', crt, '-noout', '-subject']), /CN = phone, UID = /)
  assert.equal(openssl(['x509', '-in', crt, '-noout', '-pubkey']), openssl(['pkey', '-in', join(dir, 'phone.key'), '-pubout']))
  assert.ok(!existsSync(join(dir, 'out', 'phone.pem')), 'signing writes no private key')
  assertUserError(run(['--sign', join(dir, 'phone.csr'), '-o', join(dir, 'out'), '-c', join(dir, 'ca.crt'), '-p', join(dir, 'ca.pem')]), 1, /phone\.crt already exists/)

  openssl(['pkey', '-in', join(dir, 'phone.key'), '-pubout', '-out', join(dir, 'tablet.pub')])
  const pub = run(['--sign', join(dir, 'tablet.pub'), '-o', join(dir, 'out'), '-c', join(dir, 'ca.crt'), '-p', join(dir, 'ca.pem')])
  assert.equal(pub.status, 0, pub.stderr)
  assert.match(openssl(['x509', '-in', join(dir, 'out', 'tablet.crt'), '-noout', '-subject']), /CN = tablet/)

  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ec.key'), '-subj', '/CN=ec', '-out', join(dir, 'ec.csr')])
  assertUserError(run(['--sign', join(dir, 'ec.csr'), '-o', join(dir, 'out'), '-c', join(dir, 'ca.crt'), '-p', join(dir, 'ca.pem')]), 1, /non-RSA|RSA keys/)
  writeFileSync(join(dir, 'junk.csr'), 'not a request\n')
  assertUserError(run(['--sign', join(dir, 'junk.csr'), '-o', join(dir, 'out'), '-c', join(dir, 'ca.crt'), '-p', join(dir, 'ca.pem')]), 1, /no PEM certificate request/)
  assertUserError(run(['--sign', join(dir, 'phone.csr'), '-o', join(dir, 'out')]), 2, /--sign needs the signing CA/)
})

test('default key size is RSA-4096, with progress on stderr', () => {
  const dir = dirOf('big')
  const r = run(['-o', dir])
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stderr, /Generating RSA-4096 key for ca\.\.\. done \(\d+\.\d s\)/)
  assert.match(openssl(['x509', '-in', join(dir, 'ca.crt'), '-noout', '-text']), /Public-Key: \(4096 bit\)/)
  assert.equal(r.stdout.includes('Generating'), false, 'progress is not on stdout')
})
