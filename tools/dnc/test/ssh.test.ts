/**
 * A real client no one here wrote: OpenSSH through dnc. Two network namespaces made by this test, linked by a
 * veth pair: "a" runs the bootstrap, the dnc client (as ssh's ProxyCommand) and ssh/scp; "b" runs `dnc -l` and
 * sshd, which listens on b's loopback only — reachable from "a" through dnc and nothing else.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes, run } from '../../../packages/cli-kit/test/helpers/processes.js'
import { NetnsSet, canUseNetns, type Netns } from '../../../packages/cli-kit/test/helpers/netns.js'
import { assertBuilt, DNC, startBootstrap, startServer, tempDir, userEnv, type DncServer, removeTempDirs } from './helpers/dnc.js'

const procs = new Processes()
const namespaces = new NetnsSet()
let skipReason: string | undefined
let dir: string
let a: Netns
let b: Netns
let server: DncServer
let sshPort: number
let sshBaseArgs: string[]
let clientEnv: NodeJS.ProcessEnv

function hasCommand(cmd: string): boolean {
  return ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(join(d, cmd)))
}

before(async () => {
  assertBuilt()
  if (!hasCommand('sshd') || !hasCommand('ssh') || !hasCommand('scp') || !hasCommand('ssh-keygen')) {
    skipReason = 'openssh-server/openssh-client not installed (scripts/setup installs them as root)'
    return
  }
  if (!(await canUseNetns())) {
    skipReason = 'network namespaces need root and iproute2'
    return
  }
  dir = tempDir('ssh')
  a = await namespaces.create('a')
  b = await namespaces.create('b')
  await namespaces.link(a, b)

  const bootstrap = (await startBootstrap(procs, { address: a.address!, netns: a.name })).address

  // sshd in b, on b's loopback, with its own host key and one authorized key
  mkdirSync('/run/sshd', { recursive: true }) // privilege separation directory sshd insists on
  const hostKey = join(dir, 'ssh_host_ed25519_key')
  const userKey = join(dir, 'id_ed25519')
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey])
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', userKey])
  const authorized = join(dir, 'authorized_keys')
  writeFileSync(authorized, readFileSync(`${userKey}.pub`))
  chmodSync(authorized, 0o600)
  sshPort = 20000 + (process.pid % 20000)
  const sshdConfig = join(dir, 'sshd_config')
  writeFileSync(
    sshdConfig,
    [
      `Port ${sshPort}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PidFile none',
      'Subsystem sftp internal-sftp',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  )
  const sshd = procs.start('sshd', '/usr/sbin/sshd', ['-D', '-e', '-f', sshdConfig, '-p', String(sshPort)], { netns: b.name, stdin: 'ignore' })
  await sshd.waitFor(/Server listening on 127\.0\.0\.1 port/, 20_000, 'stderr')

  server = await startServer(
    procs,
    join(dir, 'server'),
    `bootstrap: "${bootstrap}"\nanonymous: true\nauthorized_services:\n  - ip: "127.0.0.1"\n    port: ${sshPort}\n`,
    ['--bind', b.address!],
    { netns: b.name },
  )

  // the client side, in a: `dnc %h` as ProxyCommand (%h is dnc/<id> or <id>; dnc takes the basename)
  const clientHome = join(dir, 'client')
  clientEnv = userEnv(clientHome)
  const clientConfig = join(dir, 'client.yml')
  writeFileSync(clientConfig, `bootstrap: "${bootstrap}"\n`)
  const proxy = `${process.execPath} ${DNC} -d ${clientConfig} --bind ${a.address} --timeout 20 -P %p %h`
  sshBaseArgs = [
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
    '-o',
    'ConnectTimeout=30',
    '-o',
    `ProxyCommand=${proxy}`,
  ]
})

after(async () => {
  await procs.stopAll()
  await namespaces.remove()
  removeTempDirs()
})

async function inA(cmd: string, args: string[], timeoutMs = 60_000) {
  return run('ip', ['netns', 'exec', a.name, cmd, ...args], { timeoutMs, allowFailure: true, env: clientEnv })
}

test('ssh runs a remote command through dnc (ProxyCommand, user@dnc/<id>)', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const r = await inA('ssh', [...sshBaseArgs, '-p', String(sshPort), `root@dnc/${server.id}`, 'echo dnc-ok $((6*7)); cat /proc/sys/kernel/hostname >/dev/null && echo done'])
  assert.equal(r.code, 0, `ssh failed: ${r.stderr}\n${procs.describeAll()}`)
  assert.equal(r.stdout, 'dnc-ok 42\ndone\n')
})

test('scp copies a file through dnc, checksum equal on the far side', async (t) => {
  if (skipReason) return t.skip(skipReason)
  const local = join(dir, 'payload.bin')
  const data = randomBytes(8 * 1024 * 1024 + 17)
  writeFileSync(local, data)
  const remotePath = join(dir, 'copied.bin')
  const up = await inA('scp', [...sshBaseArgs, '-P', String(sshPort), local, `root@${server.id}:${remotePath}`])
  assert.equal(up.code, 0, `scp failed: ${up.stderr}\n${procs.describeAll()}`)
  const expected = createHash('sha256').update(data).digest('hex')
  // checked by the remote side itself, over ssh through dnc again
  const sum = await inA('ssh', [...sshBaseArgs, '-p', String(sshPort), `root@dnc/${server.longId}`, `sha256sum ${remotePath}`])
  assert.equal(sum.code, 0, `ssh failed: ${sum.stderr}`)
  assert.equal(sum.stdout.split(' ')[0], expected)
  assert.equal(createHash('sha256').update(readFileSync(remotePath)).digest('hex'), expected)
})
