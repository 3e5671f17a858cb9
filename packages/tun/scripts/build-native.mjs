#!/usr/bin/env node
// Builds the addon (build/Release/dhtnet_tun.node) with node-gyp. Run by the package's "install" script (so
// `pnpm install` / `npm install` build it) and by "build" (turbo), where it only re-runs make when it was already
// configured for this Node.
//
// node-gyp: the package's own devDependency when installed (the workspace: pinned in pnpm-lock.yaml); otherwise the
// one the package manager puts on PATH for lifecycle scripts (npm and pnpm both ship one); otherwise npm's bundled
// copy next to this node. Headers: the ones installed with this node (<prefix>/include/node, present in the
// nodejs.org tarballs and NodeSource's .deb) when their version matches, so no download from nodejs.org is needed;
// otherwise node-gyp fetches them as usual. DHTNET_TUN_SKIP_BUILD=1 skips the build (the package then throws
// TUN_UNAVAILABLE when used).
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { delimiter, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const say = (msg) => process.stderr.write(`[@dhtnet/tun] ${msg}\n`)

if (process.platform !== 'linux') {
  say(`TUN devices are Linux only: not building the addon on ${process.platform}`)
  process.exit(0)
}
if (process.env.DHTNET_TUN_SKIP_BUILD === '1') {
  say('DHTNET_TUN_SKIP_BUILD=1: not building the addon')
  process.exit(0)
}

function findNodeGyp() {
  try {
    return { cmd: process.execPath, args: [createRequire(join(pkgDir, 'package.json')).resolve('node-gyp/bin/node-gyp.js')] }
  } catch {
    // not installed as our devDependency: look further
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, 'node-gyp'))) return { cmd: join(dir, 'node-gyp'), args: [] }
  }
  const npmBundled = resolve(dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')
  if (existsSync(npmBundled)) return { cmd: process.execPath, args: [npmBundled] }
  return undefined
}

/** The prefix whose include/node holds the headers of exactly this node, if any. */
function localNodeDir() {
  const prefix = resolve(dirname(process.execPath), '..')
  try {
    const h = readFileSync(join(prefix, 'include/node/node_version.h'), 'utf8')
    const v = ['MAJOR', 'MINOR', 'PATCH'].map((k) => h.match(new RegExp(`#define NODE_${k}_VERSION (\\d+)`))?.[1]).join('.')
    if (v === process.versions.node && existsSync(join(prefix, 'include/node/common.gypi'))) return prefix
  } catch {
    // no local headers: node-gyp fetches them
  }
  return undefined
}

const nodeGyp = findNodeGyp()
if (!nodeGyp) {
  say('node-gyp not found: install the package with npm or pnpm (they bring one), or add node-gyp')
  process.exit(1)
}
const nodedir = process.env.npm_config_nodedir || localNodeDir()
const stampFile = join(pkgDir, 'build/.dhtnet-configured')
const stamp = `${process.version} ${process.versions.modules} ${nodedir ?? 'download'}`
const configured = existsSync(join(pkgDir, 'build/Makefile')) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp
const args = [...nodeGyp.args, configured ? 'build' : 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])]
const result = spawnSync(nodeGyp.cmd, args, { cwd: pkgDir, stdio: ['ignore', 'inherit', 'inherit'] })
if (result.status !== 0) {
  say(
    `building the addon failed (${result.error?.message ?? `exit ${result.status ?? result.signal}`}): it needs python3, make and a C compiler ` +
      '(Debian: apt-get install build-essential python3), and the Node headers (found next to node, or downloaded by node-gyp)',
  )
  process.exit(1)
}
if (!configured) writeFileSync(stampFile, stamp)
