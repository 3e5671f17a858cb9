#!/usr/bin/env node
// Prettier over the workspace's code (*.ts, *.mts, *.cts, *.js, *.mjs, *.cjs; .gitignore and .prettierignore respected).
//   node scripts/lint/check-format.mjs [--write] [paths...]
// Without --write: one line per place that is not formatted, "path:line: ...", followed by the lines Prettier would
// write instead; exit 1 if there is any. With --write: rewrites those files. Paths (files or folders) narrow the run.
import { readFileSync, readdirSync, writeFileSync, statSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { spawnSync } from 'node:child_process'
import * as prettier from 'prettier'

const root = resolve(new URL('../..', import.meta.url).pathname)
const CODE = /\.(ts|mts|cts|js|mjs|cjs)$/
const SKIP_DIRS = new Set(['node_modules', '.git', 'dist', 'build', '.turbo'])
const ignorePath = [join(root, '.gitignore'), join(root, '.prettierignore')]

const args = process.argv.slice(2)
const write = args.includes('--write')
const roots = args.filter((a) => a !== '--write').map((a) => resolve(a))

function walk(path, out) {
  const st = statSync(path)
  if (st.isFile()) {
    if (CODE.test(path)) out.push(path)
    return out
  }
  for (const name of readdirSync(path).sort()) {
    if (SKIP_DIRS.has(name)) continue
    const p = join(path, name)
    const s = statSync(p, { throwIfNoEntry: false })
    if (!s) continue
    if (s.isDirectory()) walk(p, out)
    else if (CODE.test(name)) out.push(p)
  }
  return out
}

/** The changed places between the file and Prettier's output: [{ line, removed: string[], added: string[] }]. */
function hunks(file, formatted) {
  const r = spawnSync('diff', ['-U0', file, '-'], { input: formatted, encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.error || r.status === 2) return [{ line: 1, removed: [], added: [`(diff failed: ${r.error?.message ?? r.stderr.trim()})`] }]
  const out = []
  for (const l of r.stdout.split('\n')) {
    const m = /^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@/.exec(l)
    if (m) out.push({ line: Math.max(1, Number(m[1]) + (m[2] === '0' ? 1 : 0)), removed: [], added: [] })
    else if (out.length && l.startsWith('-') && !l.startsWith('---')) out.at(-1).removed.push(l.slice(1))
    else if (out.length && l.startsWith('+') && !l.startsWith('+++')) out.at(-1).added.push(l.slice(1))
  }
  return out
}

const files = (roots.length ? roots : [root]).flatMap((p) => walk(p, []))
let bad = 0
let places = 0
for (const file of files) {
  const info = await prettier.getFileInfo(file, { ignorePath })
  if (info.ignored || !info.inferredParser) continue
  const options = { ...(await prettier.resolveConfig(file)), filepath: file }
  const text = readFileSync(file, 'utf8')
  const formatted = await prettier.format(text, options)
  if (formatted === text) continue
  bad++
  const rel = relative(process.cwd(), file)
  if (write) {
    writeFileSync(file, formatted)
    console.log(`formatted ${rel}`)
    continue
  }
  for (const h of hunks(file, formatted)) {
    places++
    console.log(`${rel}:${h.line}: not formatted as Prettier writes it (scripts/fix rewrites it); Prettier's version:`)
    const shown = h.added.slice(0, 4)
    for (const l of shown) console.log(`    ${l}`)
    if (h.added.length > shown.length) console.log(`    ... ${h.added.length - shown.length} more lines`)
    if (h.added.length === 0) console.log(`    (${h.removed.length} line(s) removed)`)
  }
}
if (!write && bad > 0) {
  console.log(`format: ${places} place(s) in ${bad} of ${files.length} files differ from Prettier's formatting`)
  process.exit(1)
}
if (!write) console.log(`format: ${files.length} files formatted as Prettier writes them`)
