/**
 * dnc as a user runs it: the BUILT binaries (tools/dnc/dist/cli.js, tools/node/dist/cli.js), each with its own
 * HOME (so identities are created fresh under <home>/.dhtnet and no user file is read), on loopback only.
 */
import { mkdirSync, mkdtempSync, writeFileSync, existsSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Processes, Proc, StartOptions } from './processes.js'

const here = fileURLToPath(new URL('.', import.meta.url))
export const repoRoot = resolve(here, '../../../..')
export const DNC = join(repoRoot, 'tools/dnc/dist/cli.js')
export const DHTNET_NODE = join(repoRoot, 'tools/node/dist/cli.js')

export function assertBuilt(): void {
  for (const f of [DNC, DHTNET_NODE]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: build first (pnpm exec turbo run build)`)
  }
}

const madeDirs: string[] = []

/** A temporary folder for one test file; removeTempDirs() (from `after`) deletes them all. */
export function tempDir(tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `dnc-${tag}-`))
  madeDirs.push(dir)
  return dir
}

export function removeTempDirs(): void {
  for (const dir of madeDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
}

/** Environment of a user whose home is `home` (created), nothing inherited that could point elsewhere. */
export function userEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  mkdirSync(home, { recursive: true })
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, DHTNET_HOME: join(home, '.dhtnet'), DHTNET_CACHE_DIR: join(home, '.cache') }
  delete env.DNC_DEBUG
  return { ...env, ...extra }
}

/** A local bootstrap node (dhtnet-node) on 127.0.0.1 (or the address given), on a free UDP port. */
export async function startBootstrap(procs: Processes, options: { address?: string; netns?: string } = {}): Promise<{ proc: Proc; address: string }> {
  const ip = options.address ?? '127.0.0.1'
  const proc = procs.start('dhtnet-node', process.execPath, [DHTNET_NODE, '-p', '0', '--ipv4', ip, '--no-ipv6', '--no-discovery'], {
    stdin: 'ignore',
    ...(options.netns ? { netns: options.netns } : {}),
  })
  const m = await proc.waitFor(/listening on [\d.]+:(\d+)/, 20_000)
  return { proc, address: `${ip}:${m[1]}` }
}

export interface DncServer {
  proc: Proc
  id: string
  longId: string
}

/** `dnc -l` with a YAML written from `yaml`; resolves once it printed its ids (ready). */
export async function startServer(procs: Processes, home: string, yaml: string, args: string[] = [], options: StartOptions = {}): Promise<DncServer> {
  const config = join(home, 'dnc.yaml')
  mkdirSync(home, { recursive: true })
  writeFileSync(config, yaml)
  const proc = procs.start('dnc -l', process.execPath, [DNC, '-l', '-d', config, ...args], { stdin: 'ignore', env: userEnv(home), ...options })
  const id = (await proc.waitFor(/^id ([0-9a-f]{40})$/m, 60_000, 'stdout'))[1]!
  const longId = (await proc.waitFor(/^long_id ([0-9a-f]{64})$/m, 10_000, 'stdout'))[1]!
  return { proc, id, longId }
}

/** `dnc <args>` as a client with its own home. */
export function startClient(procs: Processes, home: string, args: string[], options: StartOptions = {}): Proc {
  return procs.start('dnc client', process.execPath, [DNC, ...args], { env: userEnv(home), ...options })
}
