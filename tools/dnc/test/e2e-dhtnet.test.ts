/**
 * dnc end to end with both of our peers speaking only DHTNet's C++ protocols (DHTNET_EMULATE_DHTNET=1: no
 * signalling extensions, so each takes the other for a C++ device): ICE-TCP, TLS in RFC 4571 frames, DHTNet's
 * MultiplexedSocket. The live interop with the real C++ dnc is checked by hand (tools/dnc/README.md); this keeps
 * the DHTNet path under test in CI.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { Processes } from '../../../packages/cli-kit/test/helpers/processes.js'
import { assertBuilt, startBootstrap, startClient, startServer, tempDir, userEnv, type DncServer, removeTempDirs } from './helpers/dnc.js'
import { hashUntilEnd, sendPattern, type SinkResult } from '../../../packages/cli-kit/test/helpers/tcp.js'

const MiB = 1024 * 1024
const BIG = 100 * MiB
const DHTNET = { DHTNET_EMULATE_DHTNET: '1' }

const procs = new Processes()
const services: Server[] = []
let dir: string
let server: DncServer
let clientHome: string
let clientConfig: string
let sinkPort: number
let echoPort: number
const sinkResults: SinkResult[] = []

async function serve(handler: (s: import('node:net').Socket) => void): Promise<number> {
  const s = createServer({ allowHalfOpen: true }, (sock) => {
    sock.on('error', () => {})
    handler(sock)
  })
  services.push(s)
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  return (s.address() as AddressInfo).port
}

before(async () => {
  assertBuilt()
  dir = tempDir('e2e-dhtnet')
  sinkPort = await serve((s) => {
    void hashUntilEnd(s).then(
      (r) => sinkResults.push(r),
      () => {},
    )
  })
  echoPort = await serve((s) => s.pipe(s))
  const bootstrap = (await startBootstrap(procs)).address
  const home = join(dir, 'server')
  server = await startServer(
    procs,
    home,
    `bootstrap: "${bootstrap}"\nanonymous: true\nauthorized_services:\n  - ip: "127.0.0.1"\n    port: ${sinkPort}\n  - ip: "127.0.0.1"\n    port: ${echoPort}\n`,
    ['--bind', '127.0.0.1'],
    { env: { ...userEnv(home), ...DHTNET } },
  )
  clientHome = join(dir, 'client')
  clientConfig = join(dir, 'client.yml')
  writeFileSync(clientConfig, `bootstrap: "${bootstrap}"\nip: "127.0.0.1"\n`)
})

after(async () => {
  await procs.stopAll()
  for (const s of services) s.close()
  removeTempDirs()
})

function client(args: string[], options: { stdin?: 'pipe' | 'ignore' } = {}) {
  return startClient(procs, clientHome, ['-d', clientConfig, '--bind', '127.0.0.1', ...args], { ...options, env: { ...userEnv(clientHome), ...DHTNET } })
}

test("DHTNet path: echo round trip; the connection runs DHTNet's multiplexer over ICE-TCP", async () => {
  const c = client(['--verbose', '-P', String(echoPort), server.id])
  // no half-close in DHTNet's protocol: wait for the echo before ending stdin
  c.child.stdin!.write('over dhtnet\n')
  await c.waitFor(/over dhtnet\n/, 60_000, 'stdout')
  c.child.stdin!.end()
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 0, procs.describeAll())
  assert.equal(c.stdoutText, 'over dhtnet\n')
  assert.match(c.stderrText, /connected to [0-9a-f]{16}… \(outgoing, dhtnet multiplexer, ice-tcp /)
})

test('DHTNet path: 100 MiB client → server, byte-exact (sha256 at the service)', async () => {
  const before = sinkResults.length
  const c = client(['-P', String(sinkPort), server.id])
  const sent = await sendPattern(c.child.stdin!, BIG, 7)
  c.child.stdin!.end()
  const status = await c.waitExit(120_000)
  assert.equal(status.code, 0, procs.describeAll())
  for (let i = 0; i < 500 && sinkResults.length === before; i++) await new Promise((r) => setTimeout(r, 20))
  assert.deepEqual(sinkResults[before], sent, procs.describeAll())
})

test('DHTNet path: a service not authorized is refused (exit 1, nothing on stdout)', async () => {
  const c = client(['-P', '9', server.id], { stdin: 'ignore' })
  const status = await c.waitExit(60_000)
  assert.equal(status.code, 1, procs.describeAll())
  assert.match(c.stderrText, /service refused/)
  assert.equal(c.stdoutBytes, 0)
})

test('DHTNet path: an unreachable peer ends within the timeout, naming the step', async () => {
  const nobody = randomBytes(20).toString('hex')
  const c = client(['--timeout', '3', '-P', String(echoPort), nobody], { stdin: 'ignore' })
  const status = await c.waitExit(30_000)
  assert.equal(status.code, 1, procs.describeAll())
  assert.match(c.stderrText, /certificate lookup|DHT lookup|timeout/i)
})
