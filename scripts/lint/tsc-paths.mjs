#!/usr/bin/env node
// Filter for `turbo run lint` output: keeps tsc's findings only, with paths from the repository root like ESLint's and
// Prettier's: "@dhtnet/core:lint: test/x.ts(12,5): error TS2345: ..." becomes "packages/core/test/x.ts:12:5: error
// TS2345: ..." (and the indented lines that continue it). turbo's and pnpm's own lines are dropped, except a line
// that says a task failed without any finding (so that a failure never goes unexplained). Reads stdin, writes stdout.
import { existsSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { createInterface } from 'node:readline'

const root = resolve(new URL('../..', import.meta.url).pathname)
const dirs = new Map()
function packageDir(name) {
  if (!dirs.has(name))
    dirs.set(
      name,
      ['packages', 'tools'].map((g) => join(root, g, name)).find((d) => existsSync(d)),
    )
  return dirs.get(name)
}

const prefixed = /^@dhtnet\/([\w-]+)[:#]lint: ?(.*)$/
const finding = /^(.+?)\((\d+),(\d+)\): (.*)$/
const failedTasks = new Set()
const withFindings = new Set()
let continuing = false
for await (const line of createInterface({ input: process.stdin })) {
  const p = prefixed.exec(line)
  if (!p) {
    continuing = false
    continue
  }
  const [, pkg, text] = p
  const f = finding.exec(text)
  const dir = packageDir(pkg)
  if (/ELIFECYCLE|ERR_PNPM|exited \(\d+\)/.test(text)) {
    failedTasks.add(pkg)
    continuing = false
  } else if (f && dir) {
    console.log(`${relative(process.cwd(), resolve(dir, f[1]))}:${f[2]}:${f[3]}: ${f[4]}`)
    withFindings.add(pkg)
    continuing = true
  } else if (continuing && /^\s/.test(text)) {
    console.log(text)
  } else {
    continuing = false
  }
}
for (const pkg of failedTasks) if (!withFindings.has(pkg)) console.log(`@dhtnet/${pkg}: its lint task failed (run: pnpm --filter @dhtnet/${pkg} run lint)`)
