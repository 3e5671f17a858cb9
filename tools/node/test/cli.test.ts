/**
 * dhtnet-node as a user runs it: the BUILT binary (tools/node/dist/cli.js) spawned as a process, on loopback only
 * (--ipv4 127.0.0.1 --no-ipv6 --no-discovery). Daemon mode (no TTY), the interactive prompt through a pty
 * (util-linux `script`), identities, and bad input. Every process is stopped by pid.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import dgram from 'node:dgram'
import { stripVTControlCharacters } from 'node:util'
import { DhtNode, SecureDht, formatValue } from '@dhtnet/core'
import { DhtnodeProcess, dhtnodePath, parseDhtnodeValues } from '../../../packages/core/test/dht-interop-harness.js'

/** Output without terminal escape sequences (colours, cursor moves). */
const stripAnsi = (s: string) => stripVTControlCharacters(s).replace(/\r/g, '')
const CLI = resolve(import.meta.dirname, '../dist/cli.js')
const CRTMGR = resolve(import.meta.dirname, '../../crtmgr/dist/cli.js')
const LOOPBACK = ['--ipv4', '127.0.0.1', '--no-ipv6', '--no-discovery']
const children = new Set<ChildProcess>()
const tmp = mkdtempSync(join(tmpdir(), 'dhtnet-node-cli-'))

after(async () => {
  for (const c of children) await stopChild(c)
  rmSync(tmp, { recursive: true, force: true })
})

function run(args: string[], timeoutMs = 20_000) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: timeoutMs })
}

async function stopChild(c: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (c.exitCode !== null || c.signalCode !== null) return { code: c.exitCode, signal: c.signalCode }
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => c.once('exit', (code, sig) => r({ code, signal: sig })))
  c.kill(signal)
  const t = setTimeout(() => c.kill('SIGKILL'), 5_000)
  const r = await done
  clearTimeout(t)
  children.delete(c)
  return r
}

/** Start a daemon; resolves with its first stdout line parsed. */
async function daemon(args: string[]): Promise<{ child: ChildProcess; port: number; id: string; key?: string; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  let err = ''
  child.stderr.on('data', (d) => (err += d))
  const line = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no banner in 20 s; stderr: ${err}`)), 20_000)
    child.stdout.on('data', (d) => {
      out += d
      const i = out.indexOf('\n')
      if (i >= 0) {
        clearTimeout(t)
        res(out.slice(0, i))
      }
    })
    child.once('exit', (code) => rej(new Error(`exited ${code}: ${err}`)))
  })
  const m = /^dhtnet-node listening on 127\.0\.0\.1:(\d+) id=([0-9a-f]{40})(?: key=([0-9a-f]{40}) longid=([0-9a-f]{64}))?$/.exec(line)
  assert.ok(m, `banner: ${line}`)
  return { child, port: Number(m[1]), id: m[2]!, ...(m[3] ? { key: m[3] } : {}), stderr: () => err }
}

test('bad flags: a clear message and exit code 2', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--bogus'], /unknown option '--bogus'/],
    [['-p', '70000'], /--port must be an integer from 0 to 65535, got '70000'/],
    [['-p', 'abc'], /--port must be an integer/],
    [['-n', '-1'], /--network|unknown option/],
    [['-b', 'host:99999'], /port must be 1-65535/],
    [['-b', 'a b'], /--bootstrap expects host\[:port\]/],
    [['-i', 'x', '--generate-identity'], /either --identity or --generate-identity/],
    [['--key-size', '1024', '--generate-identity'], /1024.*invalid|Allowed choices/i],
    [['--no-ipv4', '--no-ipv6'], /no socket/],
    [['extra-arg'], /too many arguments|unknown command/i],
  ]
  for (const [args, re] of cases) {
    const r = run(args)
    assert.equal(r.status, 2, `${args.join(' ')} → ${r.status}: ${r.stderr}`)
    assert.match(r.stderr, re)
    assert.match(r.stderr, /--help/)
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace')
  }
  const help = run(['--help'])
  assert.equal(help.status, 0)
  assert.match(help.stdout, /--bootstrap/)
})

test('runtime errors: missing identity, port in use → exit 1 with the problem named', async () => {
  const missing = run(['-i', join(tmp, 'nope'), ...LOOPBACK])
  assert.equal(missing.status, 1)
  assert.match(missing.stderr, /does not exist[\s\S]*hint:/)
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
  const busy = run(['-p', String(sock.address().port), ...LOOPBACK])
  sock.close()
  assert.equal(busy.status, 1)
  assert.match(busy.stderr, /cannot start the DHT node: cannot open a UDP socket[\s\S]*EADDRINUSE[\s\S]*hint:/)
})

test('daemon: prints its address and id, answers the DHT, stops cleanly on SIGTERM and SIGINT (exit 0)', async () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const d = await daemon(['-p', '0', ...LOOPBACK])
    const probe = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false })
    await probe.start()
    try {
      const pong = await probe.ping(`127.0.0.1:${d.port}`)
      assert.equal(pong.id, d.id)
      if (signal === 'SIGINT') continue
      // it stores and serves values
      await probe.bootstrap(`127.0.0.1:${d.port}`)
      assert.ok(await probe.put('cli-daemon', { type: 0, data: Buffer.from('kept'), userType: 'text/plain' }))
      const other = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, bootstrap: [`127.0.0.1:${d.port}`] })
      await other.start()
      await probe.stop()
      let vals: string[] = []
      for (let i = 0; i < 50 && !vals.includes('kept'); i++) {
        vals = (await other.get('cli-daemon')).map((v) => v.data?.toString() ?? '')
        if (!vals.includes('kept')) await new Promise((r) => setTimeout(r, 100))
      }
      assert.ok(vals.includes('kept'), 'value served by the daemon after its putter left')
      await other.stop()
    } finally {
      await probe.stop()
      const t0 = Date.now()
      const r = await stopChild(d.child, signal)
      assert.deepEqual(r, { code: 0, signal: null }, `${signal}: ${d.stderr()}`)
      assert.ok(Date.now() - t0 < 5_000)
    }
  }
})

test('identities: --generate-identity DIR writes them, -i DIR reuses them; the certificate is published', async () => {
  const dir = join(tmp, 'id')
  const d1 = await daemon(['-p', '0', ...LOOPBACK, '--generate-identity', dir, '--key-size', '2048'])
  assert.ok(d1.key)
  assert.equal(d1.id, DhtNode.infoHash('node:' + d1.key).toString('hex'), 'node id = SHA1("node:" + key id)')
  assert.equal(statSync(join(dir, 'node.pem')).mode & 0o777, 0o600)
  assert.ok(existsSync(join(dir, 'node.crt')) && existsSync(join(dir, 'ca.crt')))
  await stopChild(d1.child)
  // the directory holds a CA and a node identity: -i picks the node one
  const d2 = await daemon(['-p', '0', ...LOOPBACK, '-i', dir])
  assert.equal(d2.key, d1.key)
  const d3 = await daemon(['-p', '0', ...LOOPBACK, '-i', `${join(dir, 'node.pem')},${join(dir, 'node.crt')}`])
  assert.equal(d3.key, d1.key)
  await stopChild(d3.child)
  // another SecureDht finds the daemon's certificate chain by its long id
  const probe = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, bootstrap: [`127.0.0.1:${d2.port}`] })
  await probe.start()
  const { generateIdentity } = await import('@dhtnet/core')
  const me = await generateIdentity({ name: 'probe', keySize: 2048 })
  const sd = new SecureDht(probe, me)
  try {
    let chain = null
    for (let i = 0; i < 50 && !chain; i++) {
      chain = await sd.findCertificate(d2.key)
      if (!chain) await new Promise((r) => setTimeout(r, 100))
    }
    assert.ok(chain, 'certificate found at the key id')
    assert.equal(chain.length, 2)
    assert.match(chain[0]!.subject, /DHT Node/)
  } finally {
    sd.close()
    await probe.stop()
    await stopChild(d2.child)
  }
})

test('-i accepts the directory written by dhtnet-crtmgr -s -o DIR (its id/ identity)', { skip: existsSync(CRTMGR) ? false : 'dhtnet-crtmgr is not built' }, async () => {
  const dir = join(tmp, 'crtmgr-setup')
  const made = spawnSync(process.execPath, [CRTMGR, '-s', '-o', dir, '--key-size', '2048'], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(made.status, 0, made.stderr)
  const d = await daemon(['-p', '0', ...LOOPBACK, '-i', dir])
  const idRun = spawnSync(process.execPath, [CRTMGR, '-a', '-c', join(dir, 'id', 'id-server.crt'), '-p', join(dir, 'id', 'id-server.pem')], { encoding: 'utf8' })
  assert.ok(idRun.stdout.includes(d.key!), `crtmgr says ${idRun.stdout}, node uses ${d.key}`)
  await stopChild(d.child)
})

test('--persist keeps the node id across restarts', async () => {
  const file = join(tmp, 'state', 'dht.state')
  const d1 = await daemon(['-p', '0', ...LOOPBACK, '--persist', file])
  assert.deepEqual(await stopChild(d1.child), { code: 0, signal: null })
  assert.ok(existsSync(file), 'state written on stop')
  const d2 = await daemon(['-p', '0', ...LOOPBACK, '--persist', file])
  assert.equal(d2.id, d1.id)
  await stopChild(d2.child)
})

test('interactive prompt through a pty: put, get, signed put, listen, stats, errors, quit', async () => {
  const dir = join(tmp, 'id')
  const cmd = [process.execPath, CLI, '-p', '0', ...LOOPBACK, '-i', dir].map((a) => `'${a}'`).join(' ')
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'dumb' } })
  children.add(child)
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const waitFor = async (re: RegExp, from = 0) => {
    for (let i = 0; i < 200; i++) {
      if (re.test(stripAnsi(out.slice(from)))) return
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error(`no ${re} in:\n${out.slice(from)}`)
  }
  const typeRaw = async (line: string, re: RegExp) => {
    const from = out.length
    child.stdin.write(line + '\n')
    await waitFor(re, from)
    return out.slice(from)
  }
  const type = async (line: string, re: RegExp) => stripAnsi(await typeRaw(line, re))
  await waitFor(/DHT node [0-9a-f]{40} running on port \d+/)
  await waitFor(/Public key ID [0-9a-f]{40}/)
  await type('l cli-key', /Listening, token: 1/)
  await type('p cli-key hello from the prompt', /Put: success/)
  await waitFor(/Listen 1: 1 value\(s\)[\s\S]*"hello from the prompt"/)
  const g = await type('g cli-key', /Get: found 1 value\(s\)/)
  assert.ok(g.includes(formatValue({ id: 0n, type: 0, data: Buffer.from('hello from the prompt'), userType: 'text/plain' }).replace(/^Value\[id:0 /, '')))
  const s = await type('s cli-signed signed-text', /Put signed: success/)
  assert.match(s, /Value ID: [0-9a-f]+/)
  assert.match(await type('g cli-signed', /Get: found 1/), /signed \(v0\) data\(text\/plain\):"signed-text"/)
  assert.match(await type('e cli-enc nothex text', /error:/), /not a peer id|BAD_PEER_ID|hex/i)
  assert.match(await type('frobnicate', /Unknown command/), /type 'h'/)
  assert.match(await type('ll', /Storage:/), /IPv4: \d+ nodes/)
  assert.match(await type('st', /requestsIn/), /values: \d+/)
  assert.match(await type('cl', /Cancelled 1 listen/), /Cancelled/)
  child.stdin.write('q\n')
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  children.delete(child)
  assert.equal(code, 0, out.slice(-2000))
})

test('without an identity the prompt refuses s and e with a hint, and keeps going', () => {
  const cmd = [process.execPath, CLI, '-p', '0', ...LOOPBACK].map((a) => `'${a}'`).join(' ')
  const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { input: 's k v\ne k ' + 'a'.repeat(40) + ' v\np k v\nq\n', encoding: 'utf8', timeout: 20_000 })
  assert.equal(r.status, 0, r.stdout)
  const text = stripAnsi(r.stdout)
  assert.equal((text.match(/error: an identity is required for this command\s*\n\s*hint: restart with -i/g) ?? []).length, 2, text)
  // lines typed ahead run in order, and EOF waits for the last one
  assert.match(text, /Put: success/)
})

test('the daemon as the bootstrap of two real dhtnodes: one puts, the other reads', { skip: dhtnodePath() ? false : 'dhtnode is not installed' }, async () => {
  const d = await daemon(['-p', '0', ...LOOPBACK])
  const procs: DhtnodeProcess[] = []
  try {
    procs.push(await DhtnodeProcess.start({ bootstrap: `127.0.0.1:${d.port}` }))
    procs.push(await DhtnodeProcess.start({ bootstrap: `127.0.0.1:${d.port}` }))
    const [p1, p2] = procs as [DhtnodeProcess, DhtnodeProcess]
    // p2 learns p1 through the daemon
    for (let i = 0; i < 100; i++) {
      if ((await p2.command('lr', /IPv6 routing table:/)).includes(p1.nodeId)) break
      await new Promise((r) => setTimeout(r, 100))
    }
    assert.match(await p1.command('p via-daemon hello-through-dhtnet-node', /Put: \w+/), /Put: success/)
    let vals: ReturnType<typeof parseDhtnodeValues> = []
    for (let i = 0; i < 50 && !vals.some((v) => v.text === 'hello-through-dhtnet-node'); i++) {
      vals = parseDhtnodeValues(await p2.command('g via-daemon', /Get: (completed|failure)/))
    }
    assert.ok(vals.some((v) => v.text === 'hello-through-dhtnet-node'))
  } finally {
    await Promise.all(procs.map((p) => p.stop()))
    assert.deepEqual(await stopChild(d.child), { code: 0, signal: null })
  }
})

test('spawnSync sanity: the built binary exists', () => {
  assert.ok(existsSync(CLI), 'build tools/node first (pnpm exec turbo run build)')
})
