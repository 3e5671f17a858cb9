/**
 * dsh's command line and policies in process: argv split (command words never read as dsh options; -t as DHTNet's
 * TURN host or ssh's force-pty), options and YAML, the program check (authorized_binaries), accept_env.
 * And the built binary: help, version, usage errors exit 255 without a stack trace.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { UsageError } from '@dhtnet/cli-kit'
import { parseArgs, splitArgv, type ParsedArgs } from '../src/cli.js'
import { parseConfig, resolveOptions } from '../src/options.js'
import { BinaryPolicy } from '../src/binaries.js'
import { acceptsEnv } from '../src/server.js'
import { DSH, assertBuilt, removeTempDirs, tempDir, userEnv } from './helpers/dsh.js'

after(removeTempDirs)

const ID40 = '2f4975e7b11a0908bd400b27130fe9a496d0f415'

function parsed(argv: string[]): ParsedArgs {
  const r = parseArgs(argv)
  assert.equal(r.kind, 'run', `parse of ${argv.join(' ')}`)
  return (r as { args: ParsedArgs }).args
}

test('argv: the first word after the peer id starts the command; its words are never dsh options', () => {
  assert.deepEqual(splitArgv([ID40, 'ls', '-l', '-s']), { dsh: [ID40], command: ['ls', '-l', '-s'] })
  assert.deepEqual(splitArgv(['-q', ID40, '--', '-x', 'y']), { dsh: ['-q', ID40], command: ['-x', 'y'] })
  assert.deepEqual(splitArgv(['-b', 'h:1', ID40, '-T', 'cat']), { dsh: ['-b', 'h:1', ID40, '-T'], command: ['cat'] })
  const a = parsed(['-e', 'LANG=C', ID40, '--timeout', '5', '--', 'sh', '-c', 'exit 3'])
  assert.equal(a.peer, ID40)
  assert.deepEqual(a.command, ['sh', '-c', 'exit 3'])
  assert.deepEqual(a.env, ['LANG=C'])
  assert.equal(a.timeout, '5')
})

test('-t: TURN host before a host name (DHTNet); alone, -tt or before the peer id: force a pty (ssh); -T: no pty', () => {
  const turn = parsed(['-t', 'turn.example.org', '-u', 'u', '-w', 'p', ID40])
  assert.equal(turn.turnHost, 'turn.example.org')
  assert.equal(turn.pty, 'auto')
  assert.equal(parsed(['-t', ID40]).pty, 'force')
  assert.equal(parsed(['-tt', ID40]).pty, 'force')
  assert.equal(parsed([ID40, '-t']).pty, 'force')
  assert.equal(parsed(['--turn_host', ID40, ID40]).turnHost, ID40) // the long form is never ambiguous
  assert.equal(parsed(['-T', ID40]).pty, 'never')
  assert.equal(parsed([ID40]).pty, 'auto')
})

test('options: program from -s, the command, or the server default; -e checked; client/server flags kept apart', async () => {
  const home = tempDir('dsh-cli')
  const o = await resolveOptions(parsed([ID40, '--', 'sha256sum', '-b']), { home })
  assert.equal(o.mode, 'client')
  assert.deepEqual([o.binary, o.args], ['sha256sum', ['-b']])
  const s = await resolveOptions(parsed(['-s', 'bash', ID40, '--', '-c', 'echo hi']), { home })
  assert.deepEqual(s.mode === 'client' && [s.binary, s.args], ['bash', ['-c', 'echo hi']])
  const def = await resolveOptions(parsed([ID40]), { home })
  assert.deepEqual(def.mode === 'client' && [def.binary, def.args, def.raw], ['', [], false])
  const raw = await resolveOptions(parsed(['--raw', ID40]), { home })
  assert.equal(raw.mode === 'client' && raw.binary, 'bash') // DHTNet's shipped default
  const bad: Array<[string[], RegExp]> = [
    [['-e', 'NOVALUE', ID40], /-e: "NOVALUE" is not KEY=VALUE/],
    [['--raw', ID40, '--', 'sh', '-c', 'x'], /--raw runs a program without arguments/],
    [['-l', '-e', 'A=1'], /-e\/--env is a client option/],
    [['-a', ID40], /-a\/--anonymous is a server option/],
    [['-l', ID40], /dsh -l takes no PEER_ID/],
    [[], /missing PEER_ID/],
  ]
  for (const [argv, message] of bad) {
    await assert.rejects(resolveOptions(parsed(argv), { home }), (err: unknown) => err instanceof UsageError && message.test(err.message), argv.join(' '))
  }
})

test('YAML: DHTNet keys plus authorized_peers, authorized_binaries, accept_env; bad ids and paths named', async () => {
  const c = parseConfig(
    `bootstrap: "bootstrap.sfl.io"\nbinary: "bash"\nanonymous: true\nauthorized_peers: [${ID40}]\nauthorized_binaries: [bash, /usr/bin/top]\naccept_env: [LANG, "LC_*"]\n`,
    '/etc/dhtnet/dsh.yaml',
  )
  assert.deepEqual(c.unknownKeys, [])
  assert.equal(c.binary, 'bash')
  assert.deepEqual(c.authorized_binaries, ['bash', '/usr/bin/top'])
  const home = tempDir('dsh-yaml')
  const yaml = join(home, 'dsh.yaml')
  writeFileSync(yaml, `authorized_peers: [${ID40.toUpperCase()}]\n`)
  const srv = await resolveOptions(parsed(['-l', '-d', yaml]), { home })
  assert.deepEqual(srv.mode === 'server' && [srv.allowedPeers, srv.binaries, srv.acceptEnv, srv.anonymous], [[ID40], undefined, ['LANG', 'LC_*'], false])
  writeFileSync(yaml, 'authorized_peers: [not-an-id]\n')
  await assert.rejects(resolveOptions(parsed(['-l', '-d', yaml]), { home }), /authorized_peers\[0\] must be a 40- or 64-hex device id/)
  writeFileSync(yaml, 'authorized_binaries: [bin/sh]\n')
  await assert.rejects(resolveOptions(parsed(['-l', '-d', yaml]), { home }), /authorized_binaries\[0\] must be a program name or an absolute path/)
  assert.equal(acceptsEnv(['LANG', 'LC_*'], 'LC_ALL'), true)
  assert.equal(acceptsEnv(['LANG', 'LC_*'], 'LD_PRELOAD'), false)
})

test('authorized_binaries: same text or same file under the same name; started by the checked path', async () => {
  const dir = tempDir('dsh-bin')
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  const tool = join(bin, 'tool')
  writeFileSync(tool, '#!/bin/sh\n')
  chmodSync(tool, 0o755)
  symlinkSync(tool, join(bin, 'alias')) // a multi-call style alias: same file, another name
  writeFileSync(join(bin, 'noexec'), '')
  const p = new BinaryPolicy(['tool', 'sh'], `${bin}:/usr/bin:/bin`)
  assert.deepEqual(await p.decide('tool'), { ok: true, path: tool, requested: 'tool' })
  assert.deepEqual(await p.decide(tool), { ok: true, path: tool, requested: tool })
  assert.deepEqual(await p.decide(''), { ok: true, path: tool, requested: 'tool' }) // the default: the first entry
  const shPath = (await p.decide('/bin/sh')) as { ok: boolean; path: string }
  assert.equal(shPath.ok, true)
  const refused = async (name: string, reason: RegExp): Promise<void> => {
    const d = await p.decide(name)
    assert.equal(d.ok, false, name)
    assert.match((d as { reason: string }).reason, reason, name)
  }
  await refused('alias', /"alias" is not in this server's authorized_binaries/)
  await refused('ls', /"ls" is not in this server's authorized_binaries/)
  await refused('noexec', /not in this server's authorized_binaries/)
  await refused('../bin/tool', /neither a program name nor an absolute path/)
  const none = new BinaryPolicy([], '/usr/bin')
  const d = await none.decide('sh')
  assert.equal(d.ok, false)
  assert.match((d as { reason: string }).reason, /authorizes no program/)
})

function dsh(args: string[], home: string) {
  return spawnSync(process.execPath, [DSH, ...args], { env: userEnv(home), encoding: 'utf8', timeout: 30_000, input: '' })
}

test('the binary: help and version on stdout (exit 0); usage errors exit 255 with a message and no stack trace', () => {
  assertBuilt()
  const home = tempDir('dsh-bin')
  const h = dsh(['-h'], home)
  assert.equal(h.status, 0)
  assert.match(h.stdout, /^Usage: dsh \[options\] \[PEER_ID\] \[--\] \[COMMAND \[ARGS\.\.\.\]\]/)
  for (const flag of [
    '-s, --binary',
    '-e, --env',
    '-T, --no-tty',
    '--raw',
    '-b, --bootstrap',
    '-t, --turn_host',
    '-u, --turn_user',
    '-w, --turn_pass',
    '-r, --turn_realm',
    '-c, --certificate',
    '-p, --privateKey',
    '-d, --configuration',
    '-a, --anonymous',
    '-l, --listen',
    '-v, --version',
    '--verbose',
    '-q, --quiet',
    '--timeout',
  ]) {
    assert.ok(h.stdout.includes(flag), `help lists ${flag}`)
  }
  const v = dsh(['-v'], home)
  assert.equal(v.status, 0)
  assert.match(v.stdout, /^dsh \d+\.\d+\.\d+\n$/)
  for (const [argv, message] of [
    [[], /missing PEER_ID/],
    [['--bogus'], /unknown option '--bogus'/],
    [['1234'], /"1234" is not a peer id/],
  ] as Array<[string[], RegExp]>) {
    const r = dsh(argv, home)
    assert.equal(r.status, 255, `${argv.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, message)
    assert.doesNotMatch(r.stderr, /\n\s+at /)
    assert.equal(r.stdout, '')
  }
})
