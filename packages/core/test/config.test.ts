import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync, unlinkSync, existsSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultDhtnetDir, expandHome, ensureIdentity, loadIdentity, isDhtnetError } from '../src/index.js'

const root = mkdtempSync(join(tmpdir(), 'dhtnet-config-'))
after(() => rmSync(root, { recursive: true, force: true }))

test('expandHome', () => {
  assert.equal(expandHome('~', '/home/u'), '/home/u')
  assert.equal(expandHome('~/x/y', '/home/u'), '/home/u/x/y')
  assert.equal(expandHome('/abs/~/x', '/home/u'), '/abs/~/x')
  assert.equal(expandHome('rel', '/home/u'), 'rel')
  assert.equal(expandHome('~/a'), join(homedir(), 'a'))
})

test('defaultDhtnetDir: $DHTNET_HOME, else ~/.dhtnet', () => {
  assert.equal(defaultDhtnetDir({ DHTNET_HOME: '/srv/dhtnet' }), '/srv/dhtnet')
  assert.equal(defaultDhtnetDir({ DHTNET_HOME: '~/d' }), join(homedir(), 'd'))
  assert.equal(defaultDhtnetDir({}), join(homedir(), '.dhtnet'))
  assert.equal(defaultDhtnetDir({ DHTNET_HOME: '  ' }), join(homedir(), '.dhtnet'))
})

test('ensureIdentity: first run creates a CA and a device identity and says where', async () => {
  const dir = join(root, 'first')
  const lines: string[] = []
  const first = await ensureIdentity({ dir, keySize: 2048, log: (l) => lines.push(l) })
  assert.equal(first.created, true)
  assert.equal(first.keyPath, join(dir, 'id', 'device.pem'))
  assert.equal(first.certPath, join(dir, 'id', 'device.crt'))
  assert.deepEqual(readdirSync(join(dir, 'ca')).sort(), ['ca.crt', 'ca.pem'])
  assert.deepEqual(readdirSync(join(dir, 'id')).sort(), ['device.crt', 'device.pem'])
  assert.equal(statSync(first.keyPath).mode & 0o777, 0o600)
  assert.equal(statSync(join(dir, 'ca', 'ca.pem')).mode & 0o777, 0o600)
  assert.ok(lines.some((l) => l.includes(join(dir, 'ca')) && l.includes('CA')), lines.join('\n'))
  assert.ok(lines.some((l) => l.includes(first.certPath) && l.includes(first.identity.id)), lines.join('\n'))
  const out = execFileSync('openssl', ['verify', '-CAfile', join(dir, 'ca', 'ca.crt'), first.certPath]).toString()
  assert.match(out, /OK/)

  // second run: loads, creates nothing, logs nothing
  const quiet: string[] = []
  const second = await ensureIdentity({ dir, log: (l) => quiet.push(l) })
  assert.equal(second.created, false)
  assert.equal(second.identity.id, first.identity.id)
  assert.deepEqual(quiet, [])
})

test('ensureIdentity: a missing device identity is signed by the existing CA', async () => {
  const dir = join(root, 'again')
  const first = await ensureIdentity({ dir, keySize: 2048 })
  const ca = await loadIdentity({ key: join(dir, 'ca', 'ca.pem'), certificate: join(dir, 'ca', 'ca.crt') })
  unlinkSync(first.keyPath)
  unlinkSync(first.certPath)
  const next = await ensureIdentity({ dir, keySize: 2048 })
  assert.equal(next.created, true)
  assert.notEqual(next.identity.id, first.identity.id)
  assert.equal(next.identity.chain[1]!.fingerprint256, ca.certificate.fingerprint256)
})

test('ensureIdentity: an incomplete identity is an error, never silently replaced', async () => {
  const dir = join(root, 'broken')
  const first = await ensureIdentity({ dir, keySize: 2048 })
  unlinkSync(first.certPath)
  await assert.rejects(ensureIdentity({ dir, keySize: 2048 }), (err: unknown) => {
    assert.ok(isDhtnetError(err, 'IDENTITY_FILE_MISSING'))
    assert.match(err.message, /device\.crt is missing but .*device\.pem exists/)
    return true
  })
  assert.ok(existsSync(first.keyPath))
})

test('ensureIdentity: DHTNET_HOME is the default folder', async () => {
  const dir = join(root, 'env-home')
  const saved = process.env.DHTNET_HOME
  process.env.DHTNET_HOME = dir
  try {
    const r = await ensureIdentity({ keySize: 2048 })
    assert.equal(r.keyPath, join(dir, 'id', 'device.pem'))
  } finally {
    if (saved === undefined) delete process.env.DHTNET_HOME
    else process.env.DHTNET_HOME = saved
  }
})

test('ensureIdentity: two concurrent first runs end with one identity', async () => {
  const dir = join(root, 'race')
  const [a, b] = await Promise.all([ensureIdentity({ dir, keySize: 2048 }), ensureIdentity({ dir, keySize: 2048 })])
  assert.equal(a.identity.id, b.identity.id)
  assert.equal([a.created, b.created].filter(Boolean).length, 1)
  assert.deepEqual(readdirSync(join(dir, 'id')).sort(), ['device.crt', 'device.pem'])
})
