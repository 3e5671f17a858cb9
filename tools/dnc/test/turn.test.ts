/**
 * TURN (-t/-u/-w/-r) with a real coturn: three network namespaces made here. "r" runs coturn and the bootstrap and
 * is linked to "c" (client) and "s" (server), but does not forward between them, so the client cannot reach the
 * server's address directly: the connection only works through the TURN relay. The client's verbose log names the
 * candidate pair it used, which must start with its relay. The server has no TURN of its own.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes, run } from '../../../packages/cli-kit/test/helpers/processes.js'
import { NetnsSet, canUseNetns, type Netns } from '../../../packages/cli-kit/test/helpers/netns.js'
import { assertBuilt, DHTNET_NODE, startClient, startServer, tempDir, type DncServer, removeTempDirs } from './helpers/dnc.js'

const procs = new Processes()
const namespaces = new NetnsSet()
let skipReason: string | undefined
let dir: string
let c: Netns
let s: Netns
let server: DncServer
let echoPort: number
let clientArgs: string[]

before(async () => {
  assertBuilt()
  if (!existsSync('/usr/bin/turnserver')) {
    skipReason = 'coturn is not installed (scripts/setup installs it as root)'
    return
  }
  if (!(await canUseNetns())) {
    skipReason = 'network namespaces need root and iproute2'
    return
  }
  dir = tempDir('turn')
  const r = await namespaces.create('r')
  c = await namespaces.create('c')
  s = await namespaces.create('s')
  const rc = await namespaces.link(r, c)
  const rs = await namespaces.link(r, s)
  await namespaces.defaultRoute(c, rc.a)
  await namespaces.defaultRoute(s, rs.a)
  // a new namespace does not forward (net.ipv4.ip_forward = 0): c and s cannot reach each other through r
  const forward = await run('ip', ['netns', 'exec', r.name, 'sysctl', '-n', 'net.ipv4.ip_forward'])
  assert.equal(forward.stdout.trim(), '0')

  const turn = procs.start(
    'turnserver',
    '/usr/bin/turnserver',
    [
      '-n',
      `--listening-ip=${rc.a}`,
      `--listening-ip=${rs.a}`,
      `--relay-ip=${rc.a}`,
      '--listening-port=3478',
      '--lt-cred-mech',
      '--user=dnc:secret',
      '--realm=dnc.test',
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--fingerprint',
      '--allowed-peer-ip=10.250.0.0-10.250.255.255',
      `--pidfile=${join(dir, 'turn.pid')}`,
      '--log-file=stdout',
      '--simple-log',
      `--userdb=${join(dir, 'turndb')}`,
    ],
    { netns: r.name, stdin: 'ignore' },
  )
  await turn.waitFor(/Total (UDP|General) servers|IPv4. UDP listener opened on/, 20_000)

  const boot = procs.start('dhtnet-node', process.execPath, [DHTNET_NODE, '-p', '0', '--no-ipv6', '--no-discovery'], { netns: r.name, stdin: 'ignore' })
  const bootPort = (await boot.waitFor(/listening on [\d.]+:(\d+)/, 20_000))[1]

  const echo = procs.start(
    'echo',
    process.execPath,
    ['-e', 'const s=require("net").createServer({allowHalfOpen:true},c=>{c.on("error",()=>{});c.pipe(c)});s.listen(0,"127.0.0.1",()=>console.log("port "+s.address().port))'],
    { netns: s.name, stdin: 'ignore' },
  )
  echoPort = Number((await echo.waitFor(/port (\d+)/, 10_000))[1])

  server = await startServer(
    procs,
    join(dir, 'server'),
    // the server has no TURN: the only path is the client's relay, so the client's -t/-u/-w/-r must work
    `bootstrap: "${rs.a}:${bootPort}"\nanonymous: true\nauthorized_services:\n  - ip: "127.0.0.1"\n    port: ${echoPort}\n`,
    ['--bind', rs.b],
    { netns: s.name },
  )
  clientArgs = [
    '--verbose',
    '--bind',
    rc.b,
    '-b',
    `${rc.a}:${bootPort}`,
    '-t',
    `${rc.a}:3478`,
    '-u',
    'dnc',
    '-w',
    'secret',
    '-r',
    'dnc.test',
    '--timeout',
    '20',
    '-P',
    String(echoPort),
  ]
  writeFileSync(join(dir, 'ready'), '')
})

after(async () => {
  await procs.stopAll()
  await namespaces.remove()
  removeTempDirs()
})

test('through a TURN relay when there is no direct path (-t/-u/-w/-r)', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const client = startClient(procs, join(dir, 'client'), [...clientArgs, server.id], { netns: c.name })
  client.child.stdin!.end('relayed\n')
  const status = await client.waitExit(60_000)
  assert.equal(status.code, 0, `client failed\n${procs.describeAll()}`)
  assert.equal(client.stdoutText, 'relayed\n')
  const path = client.stderrText.match(/connected to [0-9a-f]{16}… \(outgoing, \w+ multiplexer, (\S+)(?: relay \((\w+)\))? (\S+)/)
  assert.ok(path, `no connection line in\n${client.stderrText}`)
  // one -t serves both relays: WebRTC's over UDP and ICE-TCP's over TCP (the server connects to the client's relayed
  // candidate once the client permitted it); either may carry the connection, and it must say so
  const expected = path[1] === 'webrtc' ? 'UDP' : 'TCP'
  assert.ok(path[1] === 'webrtc' || path[1] === 'ice-tcp', path[0])
  assert.equal(path[2], expected, `the path must be reported as relayed over ${expected}: ${path[0]}`)
  assert.match(path[3]!, /^relay\//, 'the local candidate must be the TURN relay')
})

test('with a wrong TURN password there is no path: the client fails within its timeout', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const args = clientArgs.map((a) => (a === 'secret' ? 'wrong' : a)).map((a) => (a === '20' ? '5' : a))
  const client = startClient(procs, join(dir, 'client'), [...args, server.id], { netns: c.name, stdin: 'ignore' })
  const status = await client.waitExit(60_000)
  assert.equal(status.code, 1, `expected a failure\n${client.describe()}`)
  // the TCP relay's allocation fails with the wrong password: the error names TURN (or the deadline came first)
  assert.match(client.stderrText, /error: (ICE|timeout|TURN)/)
  assert.equal(client.stdoutBytes, 0)
})
