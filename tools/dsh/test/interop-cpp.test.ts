/**
 * Live interop with DHTNet's C++ dsh (its raw protocol: a channel named after the program, stdin/stdout bytes):
 * our client with a C++ `dsh -l` (found to be a C++ device on connecting, so the raw protocol is chosen by itself),
 * and a C++ client with our `dsh -l`. Runs when a C++ DHTNet build is available (DHTNET_CPP_BIN, default
 * /work/cpp/install/bin: `dsh` and `dhtnode`), skipped otherwise. Two network namespaces joined by a veth.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes } from '../../../packages/cli-kit/test/helpers/processes.js'
import { NetnsSet, type Netns } from '../../../packages/cli-kit/test/helpers/netns.js'
import { cppInteropSkipReason, startCppInteropLab, CPP_BIN } from '../../../packages/cli-kit/test/helpers/cpp-interop.js'
import { removeTempDirs, tempDir, userEnv, repoRoot } from '../../../packages/cli-kit/test/helpers/tools.js'
import type { LabIdentity } from '../../../packages/cli-kit/test/helpers/identities.js'

const DSH = join(repoRoot, 'tools/dsh/dist/cli.js')

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
  skipReason = await cppInteropSkipReason('dsh')
  if (skipReason) return
  dir = tempDir('dsh-interop')
  ;({ server: s, client: c, bootstrap, serverId, clientId } = await startCppInteropLab({ tag: 'h', dir, procs, namespaces, caPrefix: 'dsh-interop' }))
})

after(async () => {
  await procs.stopAll()
  await namespaces.remove()
  if (dir) removeTempDirs()
})

function config(name: string, id: LabIdentity, extra: string): string {
  const home = join(dir, name)
  mkdirSync(home, { recursive: true })
  const path = join(home, 'dsh.yaml')
  writeFileSync(path, `bootstrap: "${bootstrap}"\ncertificate: "${id.cert}"\nprivateKey: "${id.key}"\n${extra}`)
  return path
}

test('our dsh client → C++ dsh -l: the raw protocol is chosen by itself; the shell runs our input', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const server = procs.start('C++ dsh -l', join(CPP_BIN, 'dsh'), ['-l', '-d', config('cpp-server', serverId, 'anonymous: true\n')], {
    netns: s.name,
    stdin: 'ignore',
    env: userEnv(join(dir, 'cpp-server')),
  })
  await new Promise((r) => setTimeout(r, 3000))
  const client = procs.start('our dsh', process.execPath, [DSH, '--verbose', '-d', config('our-client', clientId, ''), '-s', 'sh', serverId.longId], {
    netns: c.name,
    env: userEnv(join(dir, 'our-client')),
  })
  await client.waitFor(/C\+\+ DHTNet device: DHTNet's raw protocol/, 60_000, 'stderr')
  client.child.stdin!.write('echo hello-from-$((6*7)); exit\n')
  const status = await client.waitExit(60_000)
  assert.equal(status.code, 0, procs.describeAll())
  assert.match(client.stdoutText, /hello-from-42/)
  server.kill('SIGTERM')
  await server.exited
})

test('C++ dsh client → our dsh -l: DHTNet raw protocol served under the same rules', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const server = procs.start(
    'our dsh -l',
    process.execPath,
    [DSH, '-l', '--verbose', '-d', config('our-server', serverId, 'anonymous: true\nauthorized_binaries:\n  - /bin/sh\n')],
    {
      netns: s.name,
      stdin: 'ignore',
      env: userEnv(join(dir, 'our-server')),
    },
  )
  await server.waitFor(/^long_id [0-9a-f]{64}$/m, 60_000, 'stdout')
  const client = procs.start('C++ dsh', join(CPP_BIN, 'dsh'), ['-d', config('cpp-client', clientId, 'binary: "sh"\n'), serverId.longId], {
    netns: c.name,
    env: userEnv(join(dir, 'cpp-client')),
  })
  await client.waitFor(/Connected/i, 60_000, 'any')
  client.child.stdin!.write('echo hello-from-$((6*7)); exit\n')
  await client.waitFor(/hello-from-42/, 30_000, 'stdout')
  const status = await client.waitExit(30_000)
  assert.equal(status.code, 0, procs.describeAll())
  assert.match(server.stderrText, /DHTNet raw protocol|dhtnet multiplexer/)
  server.kill('SIGTERM')
  await server.exited
})
