import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, unlinkSync, existsSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultDhtnetDir, expandHome, ensureIdentity, loadIdentity, isDhtnetError, makeDirectory, keyPermissionProblem } from '../src/index.js'
import { saveState } from '../src/dht/persist.js'

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
  assert.ok(
    lines.some((l) => l.includes(join(dir, 'ca')) && l.includes('CA')),
    lines.join('\n'),
  )
  assert.ok(
    lines.some((l) => l.includes(first.certPath) && l.includes(first.identity.id)),
    lines.join('\n'),
  )
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

test('folders we create are 0700 whatever the umask: ~/.dhtnet and its ca/ and id/, the DHT cache folder', async () => {
  const old = process.umask(0o002) // the widest umask in common use
  try {
    const dir = join(root, 'modes', 'home', '.dhtnet')
    await ensureIdentity({ dir, keySize: 2048 })
    for (const d of [join(root, 'modes'), join(root, 'modes', 'home'), dir, join(dir, 'ca'), join(dir, 'id')]) {
      assert.equal(statSync(d).mode & 0o777, 0o700, d)
    }
    const cache = join(root, 'modes', 'cache', 'dhtnet')
    await saveState(join(cache, 'dht.json'), { version: 1, nodeId: 'a'.repeat(40), savedAt: 0, nodes: [] })
    assert.equal(statSync(cache).mode & 0o777, 0o700)
    assert.equal(statSync(join(root, 'modes', 'cache')).mode & 0o777, 0o700)
    assert.equal(statSync(join(cache, 'dht.json')).mode & 0o777, 0o600)
    // an existing folder is left as it is
    chmodSync(join(dir, 'id'), 0o750)
    await makeDirectory(join(dir, 'id'))
    assert.equal(statSync(join(dir, 'id')).mode & 0o777, 0o750)
  } finally {
    process.umask(old)
  }
})

test('a private key others may read: a loud warning by default, KEY_PERMISSIONS when refused (option or $DHTNET_KEY_PERMISSIONS)', async () => {
  const dir = join(root, 'perm')
  const made = await ensureIdentity({ dir, keySize: 2048 })
  const files = { key: made.keyPath, certificate: made.certPath }
  // 0600: not a word
  const none: string[] = []
  await loadIdentity({ ...files, onWarning: (m) => none.push(m) })
  assert.deepEqual(none, [])
  for (const [mode, who] of [
    [0o640, /its group can read/],
    [0o644, /every user of this machine can read/],
    [0o602, /every user of this machine can change/],
  ] as const) {
    chmodSync(made.keyPath, mode)
    const warnings: string[] = []
    const id = await loadIdentity({ ...files, onWarning: (m) => warnings.push(m) })
    assert.equal(id.id, made.identity.id, 'warned, but loaded')
    assert.equal(warnings.length, 1)
    assert.match(warnings[0]!, who)
    assert.match(warnings[0]!, new RegExp(`chmod 600 ${made.keyPath}`))
    await assert.rejects(loadIdentity({ ...files, keyPermissions: 'refuse' }), (e: unknown) => {
      assert.ok(isDhtnetError(e, 'KEY_PERMISSIONS'))
      assert.match(e.message, new RegExp(`mode 0${mode.toString(8)}`))
      assert.equal(e.hint, `make it readable by its owner only: chmod 600 ${made.keyPath}`)
      return true
    })
  }
  // the environment sets the default; 'ignore' is silent
  const saved = process.env.DHTNET_KEY_PERMISSIONS
  try {
    process.env.DHTNET_KEY_PERMISSIONS = 'refuse'
    await assert.rejects(loadIdentity(files), (e: unknown) => isDhtnetError(e, 'KEY_PERMISSIONS'))
    await assert.rejects(ensureIdentity({ dir }), (e: unknown) => isDhtnetError(e, 'KEY_PERMISSIONS'))
    process.env.DHTNET_KEY_PERMISSIONS = 'ignore'
    const quiet: string[] = []
    await loadIdentity({ ...files, onWarning: (m) => quiet.push(m) })
    assert.deepEqual(quiet, [])
  } finally {
    if (saved === undefined) delete process.env.DHTNET_KEY_PERMISSIONS
    else process.env.DHTNET_KEY_PERMISSIONS = saved
  }
  // without a handler the warning is a process warning (printed on stderr by Node); ensureIdentity uses its log
  const seen: Error[] = []
  const onWarning = (w: Error) => seen.push(w)
  process.on('warning', onWarning)
  try {
    await loadIdentity(files)
    await new Promise((r) => setImmediate(r))
  } finally {
    process.off('warning', onWarning)
  }
  assert.equal(seen.length, 1)
  assert.equal((seen[0] as Error & { code?: string }).code, 'DHTNET_KEY_PERMISSIONS')
  const lines: string[] = []
  await ensureIdentity({ dir, log: (l) => lines.push(l) })
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, /^warning: private key .* has mode 0602/)
  // a key owned by another user is not judged (as OpenSSH): only checked when it is ours
  assert.equal(keyPermissionProblem({ mode: 0o100644, uid: process.getuid!() + 1 }, '/k'), undefined)
  assert.ok(keyPermissionProblem({ mode: 0o100644, uid: process.getuid!() }, '/k'))
})
