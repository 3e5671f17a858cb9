/**
 * What the tools' end-to-end tests share: temporary folders, a user environment with its own HOME (identities
 * created fresh under <home>/.dhtnet, no user file read), and a local bootstrap node (the BUILT dhtnet-node),
 * on loopback only.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Processes, Proc } from './processes.js'

const here = fileURLToPath(new URL('.', import.meta.url))
export const repoRoot = resolve(here, '../../../..')
export const DHTNET_NODE = join(repoRoot, 'tools/node/dist/cli.js')

const madeDirs: string[] = []

/** A temporary folder for one test file; removeTempDirs() (from `after`) deletes them all. */
export function tempDir(tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `dhtnet-${tag}-`))
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
  delete env.DSH_DEBUG
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
