/**
 * dsh end to end, as a user runs it: a local bootstrap (dhtnet-node), `dsh -l` servers with YAML configurations and
 * `dsh` clients, all spawned from the built binaries, on loopback only. Command mode (pipes): output, stderr apart,
 * exit status, 50 MiB through sha256sum, a signal-killed program; refusals (untrusted peer, program not allowed);
 * authorized_peers; a SIGKILLed client ends the remote session; DHTNet's raw protocol with the channel name and
 * bytes of the captured C++ session. Every process is stopped by its pid in `after`.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes } from '../../../packages/cli-kit/test/helpers/processes.js'
import { repoRoot } from '../../../packages/cli-kit/test/helpers/tools.js'
import { assertBuilt, isAlive, processState, removeTempDirs, startBootstrap, startDsh, startDshServer, tempDir, type DshServer } from './helpers/dsh.js'

const MiB = 1024 * 1024
const procs = new Processes()
let dir: string
let bootstrap: string
let server: DshServer
let clientHome: string

before(async () => {
  assertBuilt()
  dir = tempDir('dsh-e2e')
  bootstrap = (await startBootstrap(procs)).address
  server = await startDshServer(procs, join(dir, 'server'), `bootstrap: "${bootstrap}"\nanonymous: true\nauthorized_binaries: [sh, sha256sum, cat]\n`, ['--verbose'])
  clientHome = join(dir, 'client')
})

after(async () => {
  await procs.stopAll()
  removeTempDirs()
})

function failure(msg: string): string {
  return `${msg}\n${procs.describeAll()}`
}

function dsh(args: string[], options: { stdin?: 'pipe' | 'ignore'; rawStdout?: boolean; home?: string } = {}) {
  return startDsh(procs, options.home ?? clientHome, bootstrap, args, {
    ...(options.stdin ? { stdin: options.stdin } : {}),
    ...(options.rawStdout ? { rawStdout: true, maxStdoutBytes: 1 } : {}),
  })
}

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 100))
  return cond()
}

test('the server warns that anonymous mode is on and lists the authorized programs', async () => {
  await server.proc.waitFor(/authorized programs: /, 10_000, 'stderr')
  assert.match(server.proc.stderrText, /warning: anonymous: true/)
  assert.match(server.proc.stderrText, /authorized programs: sh, sha256sum, cat/)
})

test("command mode: stdout and stderr apart, stdin passed, the exit status is dsh's", async () => {
  const c = dsh([server.id, '--', 'sh', '-c', 'cat; echo "to stderr" >&2; exit 3'])
  c.child.stdin!.end('from stdin\n')
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 3, failure('exit status'))
  assert.equal(c.stdoutText, 'from stdin\n')
  assert.match(c.stderrText, /^to stderr$/m)
  assert.doesNotMatch(c.stdoutText, /to stderr/)
})

test('command mode: arguments are an argument vector (no shell re-parsing on the server)', async () => {
  const c = dsh([server.id, '--', 'sh', '-c', 'printf "%s|" "$@"', 'sh', 'a b', '$HOME', '; echo injected'], { stdin: 'ignore' })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, failure('exit'))
  assert.equal(c.stdoutText, 'a b|$HOME|; echo injected|')
})

test('50 MiB piped through sha256sum on the server: the checksum matches', async () => {
  const data = randomBytes(50 * MiB)
  const c = dsh([server.id, '--', 'sha256sum'])
  c.child.stdin!.end(data)
  const status = await c.waitExit(180_000)
  assert.equal(status.code, 0, failure('sha256sum'))
  assert.equal(c.stdoutText, `${createHash('sha256').update(data).digest('hex')}  -\n`)
})

test('50 MiB back from the server byte-exact (dsh id -- cat file > copy)', async () => {
  const data = randomBytes(8 * MiB)
  const file = join(dir, 'server', 'payload.bin')
  ;(await import('node:fs')).writeFileSync(file, Buffer.concat(Array(7).fill(data)).subarray(0, 50 * MiB))
  const c = dsh([server.id, '--', 'cat', file], { stdin: 'ignore', rawStdout: true })
  const status = await c.waitExit(180_000)
  assert.equal(status.code, 0, failure('cat'))
  assert.equal(c.stdoutBytes, 50 * MiB)
  assert.equal(c.stdoutSha256, createHash('sha256').update(readFileSync(file)).digest('hex'))
})

test('a remote program killed by a signal gives 128+N', async () => {
  const c = dsh([server.id, '--', 'sh', '-c', 'kill -TERM $$'], { stdin: 'ignore' })
  assert.equal((await c.waitExit(60_000)).code, 143, failure('SIGTERM'))
  const k = dsh([server.id, '--', 'sh', '-c', 'kill -KILL $$'], { stdin: 'ignore' })
  assert.equal((await k.waitExit(60_000)).code, 137, failure('SIGKILL'))
})

test('SIGINT to the client (pipes) reaches the remote program; its status comes back', async () => {
  const c = dsh([server.id, '--', 'sh', '-c', 'trap "echo got-int; exit 42" INT; echo ready; while :; do sleep 0.1; done'])
  await c.waitFor(/ready/, 60_000, 'stdout')
  c.kill('SIGINT')
  const status = await c.waitExit(30_000)
  assert.equal(status.code, 42, failure('trap INT'))
  assert.match(c.stdoutText, /got-int/)
})

test('a program not in authorized_binaries is refused: clear message, exit 255, nothing run', async () => {
  const c = dsh([server.id, '--', 'ls', '/'], { stdin: 'ignore' })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 255, failure('expected 255'))
  assert.match(c.stderrText, /refused: "ls" is not in this server's authorized_binaries/)
  assert.equal(c.stdoutText, '')
  assert.doesNotMatch(c.stderrText, /\n\s+at /)
})

test("a peer outside the server's CA is refused at the trust step (not anonymous by default); authorized_peers lets it in", async () => {
  const strict = await startDshServer(procs, join(dir, 'strict'), `bootstrap: "${bootstrap}"\nauthorized_binaries: [sh]\n`, ['-q'])
  assert.doesNotMatch(strict.proc.stderrText, /anonymous/)
  const home = join(dir, 'stranger')
  const c = dsh(['--timeout', '20', strict.id, '--', 'sh', '-c', 'echo in'], { stdin: 'ignore', home })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 255, failure('expected 255'))
  assert.match(c.stderrText, /trust|refused/i)
  assert.equal(c.stdoutText, '')
  const id = /Created device identity in .* \(id ([0-9a-f]{40})\)/.exec(c.stderrText)?.[1]
  assert.ok(id, failure('client id'))
  await strict.proc.stop()

  const listed = await startDshServer(procs, join(dir, 'listed'), `bootstrap: "${bootstrap}"\nauthorized_binaries: [sh]\nauthorized_peers: [${id}]\n`)
  const ok = dsh([listed.id, '--', 'sh', '-c', 'echo in; echo "$DSH_PEER"'], { stdin: 'ignore', home })
  assert.equal((await ok.waitExit(60_000)).code, 0, failure('authorized peer'))
  assert.equal(ok.stdoutText, `in\n${id}\n`)
  await listed.proc.stop()
})

test('SIGKILL of the client ends the remote session: no process of it is left, none is a zombie of the server', async () => {
  const c = dsh([server.id, '--', 'sh', '-c', 'sleep 300 & echo "pids $$ $!"; wait'])
  const m = await c.waitFor(/pids (\d+) (\d+)/, 60_000, 'stdout')
  const pids = [Number(m[1]), Number(m[2])]
  for (const pid of pids) assert.equal(processState(pid)?.session, pids[0], 'the program leads its own session')
  c.kill('SIGKILL')
  // the server learns it from the connection (closed, or the peer silent past the keepalive bound)
  const gone = await until(() => pids.every((p) => !isAlive(p)), 60_000)
  assert.ok(gone, failure(`still alive: ${pids.filter(isAlive).join(' ')}`))
  await until(() => /the client is gone; hanging up/.test(server.proc.stderrText), 5000)
  assert.match(server.proc.stderrText, /the client is gone; hanging up/)
  assert.match(server.proc.stderrText, /ended, killed by SIGHUP/)
  // the server reaped its child: no zombie whose parent is the server
  for (const pid of pids) {
    const s = processState(pid)
    assert.ok(!(s?.state === 'Z' && s.ppid === server.proc.pid), `zombie ${pid} of the server`)
  }
})

/** The client's and the server's data of the captured C++ dsh session (channel 0x8000), and the channel name. */
function capturedSession(): { name: string; clientBytes: Buffer; serverBytes: Buffer } {
  const fixture = JSON.parse(readFileSync(join(repoRoot, 'packages/core/test/fixtures/dhtnet-captures/dsh/tls-mux.json'), 'utf8')) as {
    mux: Array<{ sender: string; channel: number; hex: string; inner_hex?: string }>
  }
  // each frame is msgpack [channel, bin8 data]; the REQUEST's data is msgpack [name, id, state]
  const bin8 = (hex: string): Buffer => {
    const b = Buffer.from(hex, 'hex')
    const at = b.indexOf(0xc4)
    return b.subarray(at + 2, at + 2 + b[at + 1]!)
  }
  const request = fixture.mux.find((f) => f.channel === 0 && f.sender === 'client')!
  const inner = bin8(request.hex)
  const name = inner.subarray(2, 2 + (inner[1]! & 0x1f)).toString() // fixstr after the array marker
  const data = (sender: string) => Buffer.concat(fixture.mux.filter((f) => f.channel === 0x8000 && f.sender === sender).map((f) => bin8(f.hex)))
  return { name, clientBytes: data('client'), serverBytes: data('server') }
}

test('DHTNet raw protocol: our client against our server, channel named after the program, the captured bytes', async () => {
  const { name, clientBytes, serverBytes } = capturedSession()
  assert.equal(name, 'sh')
  assert.equal(clientBytes.toString(), 'echo hello-dsh; exit\n')
  const c = dsh(['--verbose', '--raw', '-s', name, server.id])
  c.child.stdin!.write(clientBytes) // stdin stays open, as in the capture: the remote end ends the session
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, failure('raw session'))
  assert.equal(c.stdoutText, serverBytes.toString())
  assert.match(c.stderrText, /opening raw channel "sh"/)
  assert.match(server.proc.stderrText, /DHTNet raw protocol on channel "sh"/)
  c.child.stdin!.end()
  // a program that is not authorized is refused at the channel request, with the reason
  const r = dsh(['--raw', '-s', 'ls', server.id], { stdin: 'ignore' })
  assert.equal((await r.waitExit(60_000)).code, 255, failure('raw refusal'))
  assert.match(r.stderrText, /"ls" is not in this server's authorized_binaries/)
})
