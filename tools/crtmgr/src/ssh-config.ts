import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { DhtnetError, makeDirectory, writeFileAtomic } from '@dhtnet/core'

/** An ssh `Host dnc/*` entry already present (any `Host` line naming a dnc pattern). */
export function hasDncHost(sshConfig: string): boolean {
  return /^\s*Host\s+(?:.*\s)?dnc(?:\/|\s|$)/im.test(sshConfig)
}

export function dncHostEntry(configPath: string): string {
  return `\nHost dnc/*\n    ProxyCommand dnc -d "${configPath}" $(basename %h)\n`
}

/**
 * Appends the `Host dnc/*` ProxyCommand entry to `<home>/.ssh/config` unless one is there.
 * Returns 'added' or 'present'. The file is replaced atomically, keeping its mode (0600 when new).
 */
export async function addDncSshEntry(home: string, configPath: string): Promise<{ result: 'added' | 'present'; file: string }> {
  if (configPath.includes('"')) {
    throw new DhtnetError('BAD_PATH', `the config path ${configPath} contains a double quote, which ssh_config cannot quote`, {
      hint: 'choose a folder without " in its name',
    })
  }
  const sshDir = join(home, '.ssh')
  const file = join(sshDir, 'config')
  await makeDirectory(sshDir, 0o700)
  let current = ''
  let mode = 0o600
  try {
    current = await readFile(file, 'utf8')
    mode = (await stat(file)).mode & 0o777
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (hasDncHost(current)) return { result: 'present', file }
  await writeFileAtomic(file, current + dncHostEntry(configPath), { mode, overwrite: true })
  return { result: 'added', file }
}
