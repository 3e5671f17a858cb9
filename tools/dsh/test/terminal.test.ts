/**
 * dsh in a real terminal: tmux runs `dsh <id>` in a pane (its pty), the test types keys into it and reads the
 * screen. The remote shell (the server's default program: the login shell) sees our TERM and window size, a resize
 * reaches it, Ctrl-C interrupts `sleep 100`, vi opens and quits, `exit 3` ends dsh with status 3, and `stty -a` of
 * the local terminal is the same before and after. Loopback only; the tmux server is ours (its own socket) and is
 * killed at the end.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Processes, run } from '../../../packages/cli-kit/test/helpers/processes.js'
import { DSH, assertBuilt, removeTempDirs, startBootstrap, startDshServer, tempDir, userEnv, type DshServer } from './helpers/dsh.js'

const procs = new Processes()
const socket = `dshtest${process.pid}`
const hasTmux = existsSync('/usr/bin/tmux')
let dir: string
let bootstrap: string
let server: DshServer
let started = false

async function tmux(...args: string[]): Promise<string> {
  return (await run('tmux', ['-L', socket, ...args], { timeoutMs: 10_000 })).stdout
}

async function screen(): Promise<string> {
  return tmux('capture-pane', '-p', '-t', 't')
}

/** Waits until the pane shows `pattern` (the answer, not the typed command: tests print computed text). */
async function waitScreen(pattern: RegExp, timeoutMs: number): Promise<string> {
  const end = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < end) {
    last = await screen()
    if (pattern.test(last)) return last
    await new Promise((r) => setTimeout(r, 150))
  }
  throw new Error(`the terminal did not show ${pattern} within ${timeoutMs} ms; it shows:\n${last}\n${procs.describeAll()}`)
}

async function type(text: string): Promise<void> {
  await tmux('send-keys', '-t', 't', '-l', text)
  await tmux('send-keys', '-t', 't', 'Enter')
}

before(async () => {
  if (!hasTmux) return
  assertBuilt()
  dir = tempDir('dsh-term')
  bootstrap = (await startBootstrap(procs)).address
  // no authorized_binaries: the login shell of the server's user, the default
  server = await startDshServer(procs, join(dir, 'server'), `bootstrap: "${bootstrap}"\nanonymous: true\n`, ['--verbose'])
  const env = userEnv(join(dir, 'client'))
  const envArgs = Object.entries({ HOME: env.HOME!, DHTNET_HOME: env.DHTNET_HOME!, DHTNET_CACHE_DIR: env.DHTNET_CACHE_DIR!, DHTNET_FORBID_PUBLIC_BOOTSTRAP: '1' }).map(
    ([k, v]) => `${k}=${v}`,
  )
  const f = (name: string): string => join(dir, name)
  const script = [
    `stty -a > ${f('stty-before')}`,
    `echo "$TERM" > ${f('term')}`,
    `env ${envArgs.join(' ')} ${process.execPath} ${DSH} -b ${bootstrap} --bind 127.0.0.1 ${server.id}`,
    `echo "DSH-EXIT=$?" > ${f('exit')}`,
    `stty -a > ${f('stty-after')}`,
    'sleep 600',
  ].join('; ')
  await tmux('new-session', '-d', '-s', 't', '-x', '100', '-y', '30', 'sh', '-c', script)
  started = true
})

after(async () => {
  if (started) await run('tmux', ['-L', socket, 'kill-server'], { allowFailure: true })
  await procs.stopAll()
  removeTempDirs()
})

test('an interactive shell in a real terminal: TERM, size, resize, Ctrl-C, vi, exit status, terminal restored', { skip: hasTmux ? false : 'tmux is not installed' }, async () => {
  const localTerm = () => readFileSync(join(dir, 'term'), 'utf8').trim()
  await type('echo READY-$((40+2))')
  await waitScreen(/^READY-42$/m, 90_000)
  assert.match(server.proc.stderrText, /started .* \(pty 100x30 /)

  await type('echo "T=$TERM C=$(tput cols) L=$(tput lines)"')
  await waitScreen(new RegExp(`^T=${localTerm().replace(/[.+]/g, '\\$&')} C=100 L=30$`, 'm'), 20_000)

  await tmux('resize-window', '-t', 't', '-x', '120', '-y', '30')
  await new Promise((r) => setTimeout(r, 500))
  await type('echo "C2=$(tput cols)"')
  await waitScreen(/^C2=120$/m, 20_000)

  await type('sleep 100')
  await new Promise((r) => setTimeout(r, 1000))
  const beforeInterrupt = Date.now()
  await tmux('send-keys', '-t', 't', 'C-c')
  await type('echo "AFTER-$((2+3)) $?"')
  await waitScreen(/^AFTER-5 130$/m, 20_000)
  assert.ok(Date.now() - beforeInterrupt < 30_000, 'Ctrl-C interrupted sleep 100')

  await type(`vi ${join(dir, 'vi-file.txt')}`)
  await waitScreen(/vi-file\.txt/, 20_000)
  await waitScreen(/^~\s*$/m, 20_000) // vi's empty-line markers: the full screen is vi's
  await tmux('send-keys', '-t', 't', 'Escape')
  await type(':q!')
  await type('echo "VI-$((3+4))"')
  await waitScreen(/^VI-7$/m, 20_000)

  await type('exit 3')
  const end = Date.now() + 30_000
  while (!existsSync(join(dir, 'stty-after')) && Date.now() < end) await new Promise((r) => setTimeout(r, 100))
  assert.equal(readFileSync(join(dir, 'exit'), 'utf8').trim(), 'DSH-EXIT=3')
  await new Promise((r) => setTimeout(r, 200))
  // the same settings (only the window width differs: the test resized it)
  const settings = (name: string): string => readFileSync(join(dir, name), 'utf8').replace(/columns \d+/, 'columns N')
  assert.equal(settings('stty-after'), settings('stty-before'))
  assert.match(readFileSync(join(dir, 'stty-after'), 'utf8'), /columns 120/)
  await server.proc.waitFor(/ended, exit 3/, 10_000, 'stderr')
})
