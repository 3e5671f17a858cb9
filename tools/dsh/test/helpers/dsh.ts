/**
 * dsh as a user runs it: the BUILT binaries (tools/dsh/dist/cli.js, tools/node/dist/cli.js), each with its own HOME,
 * on loopback only. The helpers every tool's tests share are in packages/cli-kit/test/helpers/.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Processes, Proc, StartOptions } from '../../../../packages/cli-kit/test/helpers/processes.js'
import { DHTNET_NODE, repoRoot, userEnv } from '../../../../packages/cli-kit/test/helpers/tools.js'

export { DHTNET_NODE, removeTempDirs, startBootstrap, tempDir, userEnv } from '../../../../packages/cli-kit/test/helpers/tools.js'
export const DSH = join(repoRoot, 'tools/dsh/dist/cli.js')

export function assertBuilt(): void {
  for (const f of [DSH, DHTNET_NODE]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: build first (pnpm exec turbo run build)`)
  }
}

export interface DshServer {
  proc: Proc
  id: string
  longId: string
}

/** `dsh -l` with a YAML written from `yaml`; resolves once it printed its ids (ready). */
export async function startDshServer(procs: Processes, home: string, yaml: string, args: string[] = [], options: StartOptions = {}): Promise<DshServer> {
  const config = join(home, 'dsh.yaml')
  mkdirSync(home, { recursive: true })
  writeFileSync(config, yaml)
  const proc = procs.start('dsh -l', process.execPath, [DSH, '-l', '-d', config, '--bind', '127.0.0.1', ...args], { stdin: 'ignore', env: userEnv(home), ...options })
  const id = (await proc.waitFor(/^id ([0-9a-f]{40})$/m, 60_000, 'stdout'))[1]!
  const longId = (await proc.waitFor(/^long_id ([0-9a-f]{64})$/m, 10_000, 'stdout'))[1]!
  return { proc, id, longId }
}

/** `dsh <args>` as a client with its own home (loopback only). */
export function startDsh(procs: Processes, home: string, bootstrap: string, args: string[], options: StartOptions = {}): Proc {
  return procs.start('dsh client', process.execPath, [DSH, '-b', bootstrap, '--bind', '127.0.0.1', ...args], { env: userEnv(home), ...options })
}

/** State letter of a process ('R', 'S', 'Z', ...) and its parent, or undefined when it is gone. */
export function processState(pid: number): { state: string; ppid: number; pgrp: number; session: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state: f[0]!, ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]) }
  } catch {
    return undefined
  }
}

/** Alive = exists and not a zombie (a zombie has ended; only its entry waits for its parent). */
export function isAlive(pid: number): boolean {
  const s = processState(pid)
  return s !== undefined && s.state !== 'Z'
}
