/**
 * Which programs a `dsh -l` server runs for its peers (`authorized_binaries`; default: the login shell of the
 * server's user).
 *
 * A request names a program: a bare name (looked up in the session's PATH), an absolute path, or '' for the
 * server's default (the first entry). It is allowed when it names an entry: the same text, or the same file
 * (PATH lookup, then symbolic links followed) under the same base name — so `bash` matches `/bin/bash`, but `sh`
 * does not match `dash` even when one links to the other (a multi-call binary such as busybox picks its applet by
 * that name). The program is started by the path that was checked (PATH-resolved, links not followed), with its
 * arguments as an argument vector: never through a shell string.
 */
import { constants } from 'node:fs'
import { access, realpath, stat } from 'node:fs/promises'
import { basename, isAbsolute, join } from 'node:path'

export type BinaryDecision = { readonly ok: true; readonly path: string; readonly requested: string } | { readonly ok: false; readonly reason: string }

export class BinaryPolicy {
  constructor(
    readonly entries: readonly string[],
    /** PATH of the sessions (where bare names are looked up). */
    private readonly searchPath: string,
  ) {}

  get allowsNothing(): boolean {
    return this.entries.length === 0
  }

  describe(): string {
    return this.entries.length === 0 ? 'none' : this.entries.join(', ')
  }

  /** Decides on a requested program; never throws. */
  async decide(requested: string): Promise<BinaryDecision> {
    if (this.entries.length === 0) return { ok: false, reason: 'this server authorizes no program (authorized_binaries is empty)' }
    const name = requested === '' ? this.entries[0]! : requested
    const shown = JSON.stringify(name.length > 200 ? `${name.slice(0, 197)}...` : name)
    if (name.includes('\0') || (!isAbsolute(name) && name.includes('/'))) return { ok: false, reason: `${shown} is neither a program name nor an absolute path` }
    const path = await this.find(name)
    if (!path) {
      const allowedText = this.entries.some((e) => e === name)
      return { ok: false, reason: allowedText ? `${shown} is authorized but not found on this server` : `${shown} is not in this server's authorized_binaries` }
    }
    let real: string
    try {
      real = await realpath(path)
    } catch {
      return { ok: false, reason: `${shown} cannot be resolved on this server` }
    }
    for (const entry of this.entries) {
      if (entry === name) return { ok: true, path, requested: name }
      if (basename(entry) !== basename(name)) continue
      const entryPath = await this.find(entry)
      if (!entryPath) continue
      const entryReal = await realpath(entryPath).catch(() => undefined)
      if (entryReal === real) return { ok: true, path, requested: name }
    }
    return { ok: false, reason: `${shown} is not in this server's authorized_binaries` }
  }

  /** The executable file a name designates: an absolute path as is, a bare name through the PATH. */
  private async find(name: string): Promise<string | undefined> {
    if (isAbsolute(name)) return (await isExecutableFile(name)) ? name : undefined
    for (const dir of this.searchPath.split(':')) {
      if (!dir || !isAbsolute(dir)) continue // a relative PATH entry would depend on the session's cwd
      const candidate = join(dir, name)
      if (await isExecutableFile(candidate)) return candidate
    }
    return undefined
  }
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    const s = await stat(path)
    if (!s.isFile()) return false
    await access(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}
