// dsh benchmark (scripts/bench/dsh). One dsh client connection (the tools' runtime, in this process) carries two
// sessions of the dsh protocol: an interactive one, a pty running `stty raw -echo; exec cat` (every byte goes
// through the pty to cat and back), and a bulk one (`cat /dev/zero`, pipes) read as fast as it comes. Each of KEYS
// keystrokes is one byte written, timed until it comes back. Baseline in the same run: the same over OpenSSH, an
// sshd on a loopback port (throwaway host and user keys), one ControlMaster connection carrying `ssh -tt host 'stty
// raw -echo; exec cat'` and `ssh host 'cat /dev/zero'`. Every process is stopped by its pid. Reports, never asserts.
// Ends with one JSON line: {"bench":"dsh","keystroke_median_ms":…,"keystroke_p99_ms":…,"ssh_keystroke_median_ms":…,…}
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PassThrough } from 'node:stream'
import { performance } from 'node:perf_hooks'

const root = resolve(new URL('../..', import.meta.url).pathname)
const requireFromDsh = createRequire(join(root, 'tools/dsh/package.json'))
const DSH = join(root, 'tools/dsh/dist/cli.js')
const DHTNODE = join(root, 'tools/node/dist/cli.js')
const KEYS = Number(process.env.KEYS ?? 1000)
const BULK = process.env.BULK !== '0'
process.env.DHTNET_FORBID_PUBLIC_BOOTSTRAP = '1'

const tmp = mkdtempSync(join(tmpdir(), 'dsh-bench-'))
const children = new Set()

function start(name, cmd, args, options = {}) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options })
  let out = ''
  let err = ''
  child.stdout.on('data', (b) => (out += b.length < 4096 ? b : ''))
  child.stderr.on('data', (b) => (err += b))
  children.add(child)
  child.on('exit', () => children.delete(child))
  return {
    child,
    waitFor(re, ms) {
      return new Promise((resolve, reject) => {
        const t0 = Date.now()
        const tick = setInterval(() => {
          const m = (out + err).match(re)
          if (m) {
            clearInterval(tick)
            resolve(m)
          } else if (child.exitCode !== null || Date.now() - t0 > ms) {
            clearInterval(tick)
            reject(new Error(`${name}: no ${re} (exit ${child.exitCode})\n${err}`))
          }
        }, 20)
      })
    },
  }
}

async function stopAll() {
  const all = [...children]
  for (const c of all) c.kill('SIGTERM')
  await Promise.all(
    all.map(
      (c) =>
        new Promise((r) => {
          if (c.exitCode !== null || c.signalCode !== null) return r()
          const t = setTimeout(() => c.kill('SIGKILL'), 3000)
          c.once('exit', () => {
            clearTimeout(t)
            r()
          })
        }),
    ),
  )
}

function stats(samples) {
  const s = [...samples].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { median: q(0.5), p99: q(0.99), min: s[0], max: s[s.length - 1] }
}

/** Writes one byte at a time to `write`, waits for it on `output`; KEYS samples in ms. */
async function keystrokes(write, output) {
  // a few warm-up bytes first
  const samples = []
  let waiting
  output.on('data', (b) => {
    for (let i = 0; i < b.length; i++) waiting?.()
  })
  for (let i = 0; i < KEYS + 20; i++) {
    const byte = Buffer.from([97 + (i % 26)])
    const t0 = performance.now()
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000)
      waiting = () => {
        waiting = undefined
        clearTimeout(timer)
        resolve()
      }
      write(byte)
    })
    if (i >= 20) samples.push(performance.now() - t0)
  }
  return samples
}

async function benchDsh() {
  const boot = start('dhtnet-node', process.execPath, [DHTNODE, '-p', '0', '--ipv4', '127.0.0.1', '--no-ipv6', '--no-discovery'])
  const bootstrap = `127.0.0.1:${(await boot.waitFor(/listening on [\d.]+:(\d+)/, 20_000))[1]}`
  const serverHome = join(tmp, 'server')
  mkdirSync(serverHome, { recursive: true })
  writeFileSync(join(serverHome, 'dsh.yaml'), `bootstrap: "${bootstrap}"\nanonymous: true\nauthorized_binaries: [sh]\n`)
  const env = { ...process.env, HOME: serverHome, DHTNET_HOME: join(serverHome, '.dhtnet'), DHTNET_CACHE_DIR: join(serverHome, '.cache') }
  const server = start('dsh -l', process.execPath, [DSH, '-l', '-q', '-d', join(serverHome, 'dsh.yaml'), '--bind', '127.0.0.1'], { env })
  const id = (await server.waitFor(/^id ([0-9a-f]{40})$/m, 60_000))[1]

  const { startToolNode } = requireFromDsh('@dhtnet/core')
  const protocol = await import(join(root, 'tools/dsh/dist/protocol.js'))
  const { SessionClient } = await import(join(root, 'tools/dsh/dist/client.js'))
  const { createLog } = requireFromDsh('@dhtnet/cli-kit')
  const clientHome = join(tmp, 'client')
  process.env.DHTNET_HOME = join(clientHome, '.dhtnet')
  process.env.DHTNET_CACHE_DIR = join(clientHome, '.cache')
  const node = await startToolNode({ tool: 'dsh', role: 'client', bootstrap: [bootstrap], bindAddress: '127.0.0.1', connectTimeoutMs: 60_000, identityLog: () => {} })
  const log = createLog('dsh-bench', 'quiet')
  let bulkBytes = 0
  let bulk
  let bulkStarted = 0
  if (BULK) {
    const ch = await node.connect(id, protocol.SESSION_CHANNEL)
    const out = new PassThrough()
    out.on('data', (b) => (bulkBytes += b.length))
    bulk = new SessionClient(
      ch,
      { binary: 'sh', args: ['-c', 'exec cat /dev/zero'], env: {}, pty: null },
      { stdin: new PassThrough(), stdout: out, stderr: new PassThrough() },
      log,
    )
    bulkStarted = performance.now()
  }
  const ch = await node.connect(id, protocol.SESSION_CHANNEL)
  const stdin = new PassThrough()
  const stdout = new PassThrough()
  const interactive = new SessionClient(
    ch,
    { binary: 'sh', args: ['-c', 'stty raw -echo; echo ready; exec cat'], env: {}, pty: { term: 'xterm', rows: 24, cols: 80 } },
    { stdin, stdout, stderr: new PassThrough() },
    log,
  )
  await new Promise((resolve) => {
    let seen = ''
    const on = (b) => {
      seen += b
      if (seen.includes('ready')) {
        stdout.off('data', on)
        resolve()
      }
    }
    stdout.on('data', on)
  })
  await new Promise((r) => setTimeout(r, 300))
  const connections = node.runtime.connections.connections(id).length
  const samples = await keystrokes((b) => stdin.write(b), stdout)
  const bulkSeconds = (performance.now() - bulkStarted) / 1000
  interactive.hangUp(0)
  bulk?.hangUp(0)
  await node.stop()
  return { samples, connections, bulkMBps: BULK ? bulkBytes / 1e6 / bulkSeconds : 0 }
}

async function benchSsh() {
  for (const c of ['sshd', 'ssh', 'ssh-keygen']) {
    if (spawnSync('sh', ['-c', `command -v ${c} || test -x /usr/sbin/${c}`]).status !== 0) return undefined
  }
  const dir = join(tmp, 'ssh')
  mkdirSync(dir, { recursive: true })
  mkdirSync('/run/sshd', { recursive: true })
  const hostKey = join(dir, 'host_key')
  const userKey = join(dir, 'id_ed25519')
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey])
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', userKey])
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${userKey}.pub`))
  chmodSync(join(dir, 'authorized_keys'), 0o600)
  const port = 20000 + ((process.pid * 7) % 20000)
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PidFile none',
      '',
    ].join('\n'),
  )
  const sshd = start('sshd', '/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')])
  await sshd.waitFor(/Server listening on 127\.0\.0\.1 port/, 20_000)
  const control = join(dir, 'control')
  const base = [
    '-F',
    '/dev/null',
    '-i',
    userKey,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    `UserKnownHostsFile=${join(dir, 'known_hosts')}`,
    '-o',
    'StrictHostKeyChecking=accept-new',
    '-o',
    'BatchMode=yes',
    '-p',
    String(port),
    '-S',
    control,
  ]
  const master = start('ssh master', 'ssh', [...base, '-M', '-N', 'root@127.0.0.1'])
  for (let i = 0; i < 100 && spawnSync('ssh', [...base, '-O', 'check', 'root@127.0.0.1']).status !== 0; i++) await new Promise((r) => setTimeout(r, 100))
  let bulkBytes = 0
  let bulk
  const bulkStarted = performance.now()
  if (BULK) {
    bulk = start('ssh bulk', 'ssh', [...base, 'root@127.0.0.1', 'exec cat /dev/zero'])
    bulk.child.stdout.on('data', (b) => (bulkBytes += b.length))
  }
  const interactive = start('ssh -tt', 'ssh', [...base, '-tt', 'root@127.0.0.1', 'stty raw -echo; echo ready; exec cat'])
  await interactive.waitFor(/ready/, 20_000)
  await new Promise((r) => setTimeout(r, 300))
  const samples = await keystrokes((b) => interactive.child.stdin.write(b), interactive.child.stdout)
  const bulkSeconds = (performance.now() - bulkStarted) / 1000
  interactive.child.kill('SIGTERM')
  bulk?.child.kill('SIGTERM')
  master.child.kill('SIGTERM')
  return { samples, bulkMBps: BULK ? bulkBytes / 1e6 / bulkSeconds : 0 }
}

const ms = (x) => Math.round(x * 1000) / 1000
try {
  const d = await benchDsh()
  const s = await benchSsh()
  const ds = stats(d.samples)
  const ss = s ? stats(s.samples) : undefined
  console.log(`keystroke round trip through the remote pty, ${KEYS} bytes, ${BULK ? 'with' : 'without'} a bulk session on the same connection`)
  console.log('                     median ms    p99 ms    min ms    max ms   bulk MB/s')
  const row = (name, st, mbps) =>
    console.log(
      `${name.padEnd(20)} ${String(ms(st.median)).padStart(9)} ${String(ms(st.p99)).padStart(9)} ${String(ms(st.min)).padStart(9)} ${String(ms(st.max)).padStart(9)} ${String(Math.round(mbps)).padStart(11)}`,
    )
  row('dsh', ds, d.bulkMBps)
  if (ss) row('ssh localhost', ss, s.bulkMBps)
  else console.log('ssh localhost        (OpenSSH not installed: no baseline)')
  console.log(`(dsh sessions shared ${d.connections} connection${d.connections === 1 ? '' : 's'})`)
  console.log(
    JSON.stringify({
      bench: 'dsh',
      keys: KEYS,
      bulk: BULK,
      keystroke_median_ms: ms(ds.median),
      keystroke_p99_ms: ms(ds.p99),
      bulk_MBps: Math.round(d.bulkMBps),
      ssh_keystroke_median_ms: ss ? ms(ss.median) : null,
      ssh_keystroke_p99_ms: ss ? ms(ss.p99) : null,
      ssh_bulk_MBps: s ? Math.round(s.bulkMBps) : null,
      connections: d.connections,
    }),
  )
} finally {
  await stopAll()
  rmSync(tmp, { recursive: true, force: true })
  process.exit(0)
}
