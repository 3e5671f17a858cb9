#!/usr/bin/env node
// Runs the tests of the given package folders (default: every package and tool) with node's test runner,
// then prints one summary line: "N passed, N failed, N skipped". Exit code 1 on any failure.
// Test files: <pkg>/test/**/*.test.ts, run through tsx. DHTNET_TEST_FILTER=regex restricts the files.
import { spawn } from 'node:child_process'
import { readdirSync, statSync, existsSync, readFileSync, mkdtempSync, rmSync } from 'node:fs'
import { join, resolve, relative } from 'node:path'
import { tmpdir } from 'node:os'

const root = resolve(new URL('..', import.meta.url).pathname)
let dirs = process.argv.slice(2).map((d) => resolve(d))
if (dirs.length === 0) {
  // core first, then the tools: the order the packages depend on each other
  for (const group of ['packages', 'tools']) {
    const g = join(root, group)
    if (!existsSync(g)) continue
    for (const name of readdirSync(g).sort()) dirs.push(join(g, name))
  }
}

function findTests(dir, out = []) {
  if (!existsSync(dir)) return out
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) findTests(p, out)
    else if (name.endsWith('.test.ts')) out.push(p)
  }
  return out
}

const filter = process.env.DHTNET_TEST_FILTER ? new RegExp(process.env.DHTNET_TEST_FILTER) : null
const files = dirs.flatMap((d) => findTests(join(d, 'test'))).filter((f) => !filter || filter.test(f))
if (files.length === 0) {
  console.log('no test files found')
  console.log('0 passed, 0 failed')
  process.exit(1)
}

const tapDir = mkdtempSync(join(tmpdir(), 'dhtnet-tap-'))
const tapFile = join(tapDir, 'results.tap')
const args = [
  '--import',
  'tsx',
  '--test',
  '--test-concurrency=1',
  '--test-reporter=spec',
  '--test-reporter-destination=stdout',
  '--test-reporter=tap',
  `--test-reporter-destination=${tapFile}`,
  ...files,
]
console.log(`running ${files.length} test files: ${files.map((f) => relative(root, f)).join(' ')}`)
// tests never reach the public network: the tools refuse their public bootstrap default under this variable
const env = { ...process.env, DHTNET_FORBID_PUBLIC_BOOTSTRAP: '1' }
const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'], cwd: root, env })
child.on('exit', (code, signal) => {
  let passed = 0,
    failed = 0,
    skipped = 0
  try {
    const tap = readFileSync(tapFile, 'utf8')
    const num = (k) => Number((tap.match(new RegExp(`^# ${k} (\\d+)$`, 'm')) ?? [])[1] ?? 0)
    passed = num('pass')
    failed = num('fail') + num('cancelled')
    skipped = num('skipped') + num('todo')
  } catch {
    failed += 1
  } finally {
    rmSync(tapDir, { recursive: true, force: true })
  }
  if ((code !== 0 || signal) && failed === 0) failed = 1 // the runner itself failed
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
  process.exit(failed > 0 ? 1 : 0)
})
