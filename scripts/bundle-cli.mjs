#!/usr/bin/env node
// Bundles a tool's compiled entry point (dist/cli.js, from tsc) into one file in place, run by each tool's `build`.
// Why: Node 20 resolves, reads and links every ES module at start-up, ~1 ms each; a tool loads ~160 of ours and its
// dependencies', which was ~145 ms of a fresh `dnc` before its first packet. One file starts ~80 ms sooner.
//
// What stays outside: native addons and what our code loads lazily with createRequire (node-forge, yaml,
// node-datachannel, node-pty, the TUN addon, package.json). Those calls are rewritten to resolve from the file they
// were written in, so they find the same packages as the unbundled code (pnpm gives each package only its own
// dependencies) and stay lazy. The bundle runs from its place in the workspace (the paths are relative to it).
//
// Usage (from a tool's folder): node ../../scripts/bundle-cli.mjs [entry, default dist/cli.js]
import { readFile, rename, chmod, rm } from 'node:fs/promises'
import { dirname, relative, resolve } from 'node:path'
import { build } from 'esbuild'

const entry = resolve(process.argv[2] ?? 'dist/cli.js')
const CREATE_REQUIRE_HERE = /createRequire\(import\.meta\.url\)/g

/** Each module's createRequire(import.meta.url) bound to the module's own URL (the bundle's would be another place). */
const requireFromOrigin = {
  name: 'require-from-origin',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8')
      if (!text.includes('createRequire(import.meta.url)')) return undefined
      // relative to the bundle, so that the workspace can move as a whole
      const fromBundle = JSON.stringify(relative(dirname(entry), args.path).split('\\').join('/'))
      return { contents: text.replace(CREATE_REQUIRE_HERE, `createRequire(new URL(${fromBundle}, import.meta.url))`), loader: 'js' }
    })
  },
}

const temporary = `${entry}.bundle-${process.pid}.tmp`
try {
  await build({
    entryPoints: [entry],
    outfile: temporary,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // optional native speed-up of msgpackr, found at run time when installed
    external: ['msgpackr-extract'],
    // CommonJS dependencies bundled into an ES module call require() for Node's built-ins
    banner: { js: "import { createRequire as __bundleCreateRequire } from 'node:module'; const require = __bundleCreateRequire(import.meta.url);" },
    plugins: [requireFromOrigin],
    logLevel: 'warning',
    legalComments: 'inline',
  })
  // the shebang of the entry is kept by esbuild; written beside, then renamed: never a half-written tool
  await rename(temporary, entry)
  await chmod(entry, 0o755)
} catch (err) {
  await rm(temporary, { force: true })
  console.error(`bundle-cli: bundling ${entry} failed: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
}
