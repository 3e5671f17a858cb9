/**
 * Live interop with DHTNet's C++ dnc (ICE-TCP + TLS, DHTNet's MultiplexedSocket): our client with a C++ `dnc -l`,
 * and a C++ client with our `dnc -l`; 100 MiB through an echo service behind the server, sha256 of what came back
 * compared with what was sent. Runs when a C++ DHTNet build is available (DHTNET_CPP_BIN, default
 * /work/cpp/install/bin: `dnc` and `dhtnode`), skipped otherwise (CI has none: the C++ build is not part of the repo).
 * Two network namespaces joined by a veth (pjnath offers no loopback candidates), the C++ dhtnode as the bootstrap,
 * identities made here with two CAs (the servers run anonymous, as DHTNet's sample configuration).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes, type Proc } from '../../../packages/cli-kit/test/helpers/processes.js'
import { NetnsSet, type Netns } from '../../../packages/cli-kit/test/helpers/netns.js'
import { cppInteropSkipReason, startCppInteropLab, CPP_BIN } from '../../../packages/cli-kit/test/helpers/cpp-interop.js'
import { userEnv } from '../../../packages/cli-kit/test/helpers/tools.js'
import type { LabIdentity } from '../../../packages/cli-kit/test/helpers/identities.js'
import { sendPattern } from '../../../packages/cli-kit/test/helpers/tcp.js'
import { DNC, assertBuilt, removeTempDirs, tempDir } from './helpers/dnc.js'

const MiB = 1024 * 1024
const BIG = 100 * MiB
const ECHO_PORT = 5602

const procs = new Processes()
const namespaces = new NetnsSet()
let skipReason: string | undefined
let dir: string
let s: Netns
let c: Netns
let bootstrap: string
let serverId: LabIdentity
let clientId: LabIdentity

before(async () => {
  skipReason = await cppInteropSkipReason('dnc')
  if (skipReason) return
  assertBuilt()
  dir = tempDir('dnc-interop')
  ;({ server: s, client: c, bootstrap, serverId, clientId } = await startCppInteropLab({ tag: 'c', dir, procs, namespaces }))
  const echo = `require('net').createServer({ allowHalfOpen: true }, (x) => { x.on('error', () => {}); x.pipe(x) }).listen(${ECHO_PORT}, '127.0.0.1')`
  procs.start('echo service', process.execPath, ['-e', echo], { netns: s.name, stdin: 'ignore' })
})

after(async () => {
  await procs.stopAll()
  await namespaces.remove()
  if (dir) removeTempDirs()
})

function config(name: string, id: LabIdentity, extra: string): string {
  const home = join(dir, name)
  mkdirSync(home, { recursive: true })
  const path = join(home, 'dnc.yaml')
  writeFileSync(path, `bootstrap: "${bootstrap}"\ncertificate: "${id.cert}"\nprivateKey: "${id.key}"\nenable_upnp: false\n${extra}`)
  return path
}

const serverYaml = `anonymous: true\nauthorized_services:\n  - ip: "127.0.0.1"\n    port: ${ECHO_PORT}\n`
const clientYaml = `ip: "127.0.0.1"\nport: ${ECHO_PORT}\n`

/**
 * Send BIG bytes on the client's stdin; hash what comes back on its stdout after `marker` (the C++ client prints its
 * own log lines there first); end stdin once everything is back (DHTNet has no half-close: an early EOF would end
 * the echo too).
 */
async function echoThrough(client: Proc, marker: string | undefined): Promise<{ sent: string; received: string; bytes: number }> {
  const hash = createHash('sha256')
  let bytes = 0
  let skipped = marker === undefined
  let head = Buffer.alloc(0)
  const allBack = new Promise<void>((resolve, reject) => {
    client.child.stdout!.on('data', (b: Buffer) => {
      if (bytes >= BIG) return // the C++ client's own closing log line
      if (!skipped) {
        head = Buffer.concat([head, b])
        const at = head.indexOf(marker!)
        if (at < 0) return
        skipped = true
        b = head.subarray(at + marker!.length)
      }
      const take = b.subarray(0, Math.max(0, BIG - bytes))
      hash.update(take)
      bytes += take.length
      if (bytes >= BIG) resolve()
    })
    void client.exited.then(() => reject(new Error(`the client exited after ${bytes} bytes came back\n${procs.describeAll()}`)))
  })
  if (marker !== undefined) await client.waitFor(new RegExp(marker.trim()), 60_000, 'stdout')
  const sent = await sendPattern(client.child.stdin!, BIG, 11)
  await allBack
  client.child.stdin!.end()
  return { sent: sent.sha256, received: hash.digest('hex'), bytes }
}

test('our dnc client ↔ C++ dnc -l: 100 MiB echoed, sha256 equal', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const server = procs.start('C++ dnc -l', join(CPP_BIN, 'dnc'), ['-l', '-d', config('cpp-server', serverId, serverYaml)], {
    netns: s.name,
    stdin: 'ignore',
    env: userEnv(join(dir, 'cpp-server')),
  })
  await new Promise((r) => setTimeout(r, 3000)) // it publishes its certificate, then listens
  const client = procs.start('our dnc', process.execPath, [DNC, '--verbose', '-d', config('our-client', clientId, clientYaml), serverId.longId], {
    netns: c.name,
    env: userEnv(join(dir, 'our-client')),
  })
  const r = await echoThrough(client, undefined)
  assert.equal(r.bytes, BIG)
  assert.equal(r.received, r.sent, 'what came back is what was sent')
  const status = await client.waitExit(60_000)
  assert.equal(status.code, 0, procs.describeAll())
  assert.match(client.stderrText, /connected to [0-9a-f]{16}… \(outgoing, dhtnet multiplexer, ice-tcp /)
  server.kill('SIGTERM')
  await server.exited
})

test('C++ dnc client ↔ our dnc -l: 100 MiB echoed, sha256 equal', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const server = procs.start('our dnc -l', process.execPath, [DNC, '-l', '--verbose', '-d', config('our-server', serverId, serverYaml)], {
    netns: s.name,
    stdin: 'ignore',
    env: userEnv(join(dir, 'our-server')),
  })
  await server.waitFor(/^long_id [0-9a-f]{64}$/m, 60_000, 'stdout')
  const client = procs.start('C++ dnc', join(CPP_BIN, 'dnc'), ['-d', config('cpp-client', clientId, clientYaml), serverId.longId], {
    netns: c.name,
    env: userEnv(join(dir, 'cpp-client')),
  })
  const r = await echoThrough(client, 'Connected!\n')
  assert.equal(r.bytes, BIG)
  assert.equal(r.received, r.sent, 'what came back is what was sent')
  const status = await client.waitExit(60_000)
  assert.equal(status.code, 0, procs.describeAll())
  assert.match(server.stderrText, /connected to [0-9a-f]{16}… \(incoming, dhtnet multiplexer, ice-tcp /)
  server.kill('SIGTERM')
  await server.exited
})
