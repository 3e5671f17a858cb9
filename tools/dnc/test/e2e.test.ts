/**
 * dnc end to end, as a user runs it: a local bootstrap (dhtnet-node), `dnc -l` with a YAML configuration, TCP
 * services written here, and `dnc <id>` clients, all spawned from the built binaries, on loopback only
 * (--bind 127.0.0.1 keeps DHT and ICE sockets there). Every process is stopped by its pid in `after`.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { existsSync, writeFileSync } from 'node:fs'
import { Processes } from '../../../packages/cli-kit/test/helpers/processes.js'
import { DNC, assertBuilt, startBootstrap, startClient, startServer, tempDir, userEnv, type DncServer, removeTempDirs } from './helpers/dnc.js'
import { closedPort, hashUntilEnd, sendPattern, tcpConnect, type SinkResult } from '../../../packages/cli-kit/test/helpers/tcp.js'

const MiB = 1024 * 1024
const BIG = 100 * MiB

const procs = new Processes()
const servers: Server[] = []
let dir: string
let bootstrap: string
let server: DncServer
let clientHome: string
let clientConfig: string

// --- services, written here ---------------------------------------------------------------------------------
/** Hashes what it receives until the client's EOF, then ends its side. */
let sinkPort: number
const sinkResults: SinkResult[] = []
/** Waits for the client's EOF, then sends BIG bytes and ends: works only if half-close is passed on. */
let afterEofPort: number
const afterEofSent: SinkResult[] = []
/** Says "hello\n" and ends its side at once, then hashes what the client sends until its EOF. */
let greeterPort: number
const greeterResults: SinkResult[] = []
let echoPort: number
/** An echo service authorized by host name only (`ip: localhost`). */
let namedEchoPort: number
let echo6Port: number | undefined
let refusingPort: number

async function serve(handler: (s: Socket) => void, host = '127.0.0.1'): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {})
    handler(s)
  })
  servers.push(server)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, resolve)
  })
  return (server.address() as AddressInfo).port
}

function hashInto(s: Socket, results: SinkResult[], then?: () => void): void {
  hashUntilEnd(s).then(
    (r) => {
      results.push(r)
      then?.()
    },
    () => {},
  ) // a reset socket records nothing, as before
}

before(async () => {
  assertBuilt()
  dir = tempDir('e2e')
  sinkPort = await serve((s) => hashInto(s, sinkResults, () => s.end()))
  afterEofPort = await serve((s) => {
    s.resume()
    s.on('end', () => {
      void sendPattern(s, BIG, 3).then((r) => {
        afterEofSent.push(r)
        s.end()
      })
    })
  })
  greeterPort = await serve((s) => {
    s.end('hello\n')
    hashInto(s, greeterResults)
  })
  echoPort = await serve((s) => s.pipe(s))
  namedEchoPort = await serve((s) => s.pipe(s))
  echo6Port = await serve((s) => s.pipe(s), '::1').catch(() => undefined)
  refusingPort = await closedPort()

  bootstrap = (await startBootstrap(procs)).address
  const services = [sinkPort, afterEofPort, greeterPort, echoPort, refusingPort].map((p) => `  - ip: "127.0.0.1"\n    port: ${p}\n`)
  services.push(`  - ip: "localhost"\n    port: ${namedEchoPort}\n`)
  if (echo6Port) services.push(`  - ip: "::1"\n    port: ${echo6Port}\n`)
  server = await startServer(procs, join(dir, 'server'), `bootstrap: "${bootstrap}"\nanonymous: true\nverbose: false\nauthorized_services:\n${services.join('')}`, [
    '--bind',
    '127.0.0.1',
  ])
  clientHome = join(dir, 'client')
  clientConfig = join(dir, 'client.yml')
  writeFileSync(clientConfig, `bootstrap: "${bootstrap}"\nip: "127.0.0.1"\n`)
})

after(async () => {
  await procs.stopAll()
  for (const s of servers) s.close()
  removeTempDirs()
})

function client(args: string[], options: { stdin?: 'pipe' | 'ignore' } = {}) {
  return startClient(procs, clientHome, ['-d', clientConfig, '--bind', '127.0.0.1', ...args], options)
}

async function until(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
}

function failure(msg: string): string {
  return `${msg}\n${procs.describeAll()}`
}

test('the server prints its 40-hex and 64-hex ids on stdout', () => {
  assert.match(server.id, /^[0-9a-f]{40}$/)
  assert.match(server.longId, /^[0-9a-f]{64}$/)
})

test('small round trip through an echo service; stdout carries only the remote bytes', async () => {
  const c = client(['-P', String(echoPort), server.id])
  const message = `ping ${randomBytes(8).toString('hex')}\n`
  c.child.stdin!.end(message)
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, failure('client failed'))
  assert.equal(c.stdoutText, message)
})

test('100 MiB client → server, byte-exact (sha256 at the service)', async () => {
  const before = sinkResults.length
  const c = client(['-P', String(sinkPort), server.id])
  const sent = await sendPattern(c.child.stdin!, BIG, 1)
  c.child.stdin!.end()
  const status = await c.waitExit(120_000)
  assert.equal(status.code, 0, failure('client failed'))
  assert.equal(sinkResults.length, before + 1)
  assert.deepEqual(sinkResults[before], sent)
  assert.equal(c.stdoutBytes, 0)
})

test('half-close: stdin EOF reaches the service, which then sends 100 MiB back; dnc prints it all and exits 0', async () => {
  const before = afterEofSent.length
  const c = client(['-P', String(afterEofPort), server.longId], { stdin: 'ignore' }) // /dev/null: EOF at once; 64-hex id
  const status = await c.waitExit(120_000)
  assert.equal(status.code, 0, failure('client failed'))
  assert.equal(afterEofSent.length, before + 1)
  assert.equal(c.stdoutBytes, BIG)
  assert.equal(c.stdoutSha256, afterEofSent[before]!.sha256)
})

test('half-close the other way: the service ends first, the client keeps sending, then exits 0', async () => {
  const before = greeterResults.length
  const c = client(['-P', String(greeterPort), server.id])
  await c.waitFor(/hello\n/, 60_000, 'stdout')
  // the remote side has ended; ours is still open and must still carry bytes
  const sent = await sendPattern(c.child.stdin!, 4 * MiB, 2)
  c.child.stdin!.end()
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, failure('client failed'))
  assert.equal(c.stdoutText, 'hello\n')
  // the client is done once its EOF left; the service sees it a moment later
  await until(() => greeterResults.length > before, 10_000)
  assert.equal(greeterResults.length, before + 1)
  assert.deepEqual(greeterResults[before], sent)
})

test('at a terminal, dnc exits 0 when the remote side ends (no Ctrl-D needed)', async (t) => {
  if (!existsSync('/usr/bin/script')) return t.skip('util-linux script(1) is not installed')
  const before = greeterResults.length
  const cmd = [process.execPath, DNC, '-d', clientConfig, '--bind', '127.0.0.1', '-P', String(greeterPort), server.id].join(' ')
  // script(1) gives dnc a pseudo-terminal as stdin and stdout; the test never closes it
  const c = procs.start('dnc in a terminal', '/usr/bin/script', ['-q', '-e', '-c', cmd, '/dev/null'], { env: userEnv(clientHome), group: true })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, failure('dnc at a terminal'))
  assert.match(c.stdoutText, /hello/)
  await until(() => greeterResults.length > before, 10_000)
  assert.deepEqual(greeterResults[before], { bytes: 0, sha256: createHash('sha256').digest('hex') })
})

test('IPv6 destination: nc://[::1]:port', async (t) => {
  if (echo6Port === undefined) return t.skip('no ::1 on this machine')
  const c = client(['-i', '::1', '-P', String(echo6Port), server.id])
  c.child.stdin!.end('over ipv6\n')
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, failure('client failed'))
  assert.equal(c.stdoutText, 'over ipv6\n')
})

test('a service authorized by host name (localhost), asked for by name and by address', async () => {
  for (const host of ['localhost', '127.0.0.1']) {
    const c = client(['-i', host, '-P', String(namedEchoPort), server.id])
    c.child.stdin!.end(`via ${host}\n`)
    const status = await c.waitExit(60_000)
    assert.equal(status.code, 0, failure(`client (-i ${host}) failed`))
    assert.equal(c.stdoutText, `via ${host}\n`)
  }
})

test('a service not in authorized_services is refused: message names it, exit 1, nothing on stdout', async () => {
  const c = client(['-P', '9', server.id], { stdin: 'ignore' })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 1, failure('expected exit 1'))
  assert.match(c.stderrText, /service refused/)
  assert.match(c.stderrText, /127\.0\.0\.1:9 is not in this server's authorized_services/)
  assert.equal(c.stdoutBytes, 0)
  assert.doesNotMatch(c.stderrText, /\n\s+at /) // no stack trace
})

test('an authorized service that refuses the TCP connection is an error, not an empty success', async () => {
  const c = client(['-P', String(refusingPort), server.id], { stdin: 'ignore' })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 1, failure('expected exit 1'))
  assert.match(c.stderrText, new RegExp(`connection refused by 127\\.0\\.0\\.1:${refusingPort}`))
  assert.equal(c.stdoutBytes, 0)
})

test('an unreachable peer: non-zero exit within the timeout, naming the step that failed', async () => {
  const nobody = randomBytes(20).toString('hex')
  const c = client(['--timeout', '3', '-P', String(echoPort), nobody], { stdin: 'ignore' })
  // generous bound: it must end on its own (3 s asked), not hang
  const status = await c.waitExit(30_000)
  assert.equal(status.code, 1, failure('expected exit 1'))
  assert.match(c.stderrText, /certificate lookup|DHT lookup|timeout/i)
  assert.match(c.stderrText, new RegExp(nobody))
  assert.doesNotMatch(c.stderrText, /\n\s+at /)
})

test('a peer whose certificate is on the DHT but which is gone (killed): non-zero exit within the timeout', async () => {
  const gone = await startServer(procs, join(dir, 'gone'), `bootstrap: "${bootstrap}"\nanonymous: true\nauthorized_services: []\n`, ['--bind', '127.0.0.1', '-q'])
  gone.proc.kill('SIGKILL')
  await gone.proc.exited
  const started = Date.now()
  const c = client(['--timeout', '3', '-P', String(echoPort), gone.id], { stdin: 'ignore' })
  const status = await c.waitExit(30_000)
  assert.equal(status.code, 1, failure('expected exit 1'))
  assert.match(c.stderrText, /timeout|ICE|no answer|unreachable/i)
  assert.doesNotMatch(c.stderrText, /\n\s+at /)
  // bounded: the 3 s asked plus process start, never the default 30 s
  assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`)
})

test('an unreachable bootstrap: non-zero exit, says the DHT could not be joined', async () => {
  const deadPort = await closedPort()
  const c = startClient(procs, clientHome, ['-b', `127.0.0.1:${deadPort}`, '--bind', '127.0.0.1', '--timeout', '2', server.id], { stdin: 'ignore' })
  const status = await c.waitExit(30_000)
  assert.equal(status.code, 1, failure('expected exit 1'))
  assert.match(c.stderrText, /DHT bootstrap: no DHT node answered/)
})

test('-L: 20 concurrent TCP connections, each on its own channel, byte-exact both ways', async () => {
  const fwd = client(['--verbose', '-L', '127.0.0.1:0', '-P', String(echoPort), server.id], { stdin: 'ignore' })
  const port = Number((await fwd.waitFor(/listening on 127\.0\.0\.1:(\d+)/, 60_000, 'stderr'))[1])
  const one = async (i: number): Promise<void> => {
    const s = await tcpConnect(port)
    const back = hashUntilEnd(s)
    const sent = await sendPattern(s, 1 * MiB + i * 4099, 100 + i)
    s.end()
    assert.deepEqual(await back, sent, `connection ${i}`)
  }
  await Promise.all(Array.from({ length: 20 }, (_, i) => one(i))).catch((err: Error) => {
    throw new Error(failure(`-L failed: ${err.message}`))
  })
  // the listener still works after the burst
  await one(20)
  // all of it over one peer connection (its verbose log names each connection it makes)
  const connections = fwd.stderrText.match(/connected to [0-9a-f]{16}… \(outgoing/g) ?? []
  assert.equal(connections.length, 1, failure('expected one shared connection'))
  const status = await fwd.stop()
  assert.equal(status.code, 0, failure('dnc -L did not stop cleanly'))
})

test('-L to a refused service: each local connection is reset, the reason is logged, the listener stays up', async () => {
  const fwd = client(['-L', '127.0.0.1:0', '-P', '9', server.id], { stdin: 'ignore' })
  const port = Number((await fwd.waitFor(/listening on 127\.0\.0\.1:(\d+)/, 60_000, 'stderr'))[1])
  for (let i = 0; i < 2; i++) {
    const s = await tcpConnect(port)
    const outcome = await new Promise<string>((resolve) => {
      s.on('data', () => resolve('data'))
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
      s.on('end', () => resolve('end'))
    })
    assert.equal(outcome, 'ECONNRESET')
  }
  assert.match(fwd.stderrText, /127\.0\.0\.1:9 is not in this server's authorized_services/)
  assert.equal(fwd.exitStatus, undefined)
  assert.equal((await fwd.stop()).code, 0)
})

test('the server stops cleanly on SIGTERM (exit 0); an open channel is reset with the reason', async () => {
  const c = client(['-P', String(echoPort), server.id])
  c.child.stdin!.write('still here\n')
  await c.waitFor(/still here\n/, 60_000, 'stdout')
  const status = await server.proc.stop(10_000)
  assert.equal(status.code, 0, failure('server exit'))
  assert.equal(status.signal, null)
  const clientStatus = await c.waitExit(30_000)
  assert.equal(clientStatus.code, 1, failure('client exit'))
  assert.match(c.stderrText, /the dnc server is shutting down/)
})
