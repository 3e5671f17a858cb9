/**
 * dnc as a user runs it: the BUILT binaries (tools/dnc/dist/cli.js, tools/node/dist/cli.js), each with its own
 * HOME, on loopback only. The helpers every tool's tests share are in packages/cli-kit/test/helpers/.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Processes, Proc, StartOptions } from '../../../../packages/cli-kit/test/helpers/processes.js'
import { DHTNET_NODE, repoRoot, userEnv } from '../../../../packages/cli-kit/test/helpers/tools.js'

export { DHTNET_NODE, repoRoot, removeTempDirs, startBootstrap, tempDir, userEnv } from '../../../../packages/cli-kit/test/helpers/tools.js'
export const DNC = join(repoRoot, 'tools/dnc/dist/cli.js')

export function assertBuilt(): void {
  for (const f of [DNC, DHTNET_NODE]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: build first (pnpm exec turbo run build)`)
  }
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
