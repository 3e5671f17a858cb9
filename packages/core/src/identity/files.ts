import { randomBytes, X509Certificate } from 'node:crypto'
import { chmod, link, mkdir, open, rename, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { DhtnetError } from '../errors.js'
import { chainToPem, privateKeyToPem } from './pem.js'
import type { Identity } from './types.js'

export interface WriteOptions {
  /** Replace existing files (default: refuse with FILE_EXISTS). */
  readonly overwrite?: boolean
}

export interface IdentityPaths {
  /** `<dir>/<name>.pem`: unencrypted PKCS#8 private key, mode 0600. */
  readonly keyPath: string
  /** `<dir>/<name>.crt`: certificate followed by its issuers, PEM. */
  readonly certPath: string
}

export function identityPaths(dir: string, name: string): IdentityPaths {
  return { keyPath: join(dir, `${name}.pem`), certPath: join(dir, `${name}.crt`) }
}

/** Writes `<dir>/<name>.pem` (0600) and `<dir>/<name>.crt` atomically; refuses to replace either unless `overwrite`. */
export async function saveIdentity(identity: Identity, dir: string, name: string, options: WriteOptions = {}): Promise<IdentityPaths> {
  const paths = identityPaths(dir, name)
  await makeDir(dir)
  if (!options.overwrite) {
    for (const p of [paths.keyPath, paths.certPath]) await refuseExisting(p)
  }
  await writeFileAtomic(paths.keyPath, privateKeyToPem(identity.privateKey), { mode: 0o600, overwrite: options.overwrite })
  try {
    await writeFileAtomic(paths.certPath, chainToPem(identity.chain), { mode: 0o644, overwrite: options.overwrite })
  } catch (err) {
    // no half identity on disk: the key we just wrote goes too (unless it replaced an older one)
    if (!options.overwrite) await unlink(paths.keyPath).catch(() => {})
    throw err
  }
  return paths
}

/** Writes `<dir>/<name>.crt` (a certificate chain, leaf first) atomically. */
export async function saveCertificate(chain: readonly X509Certificate[], dir: string, name: string, options: WriteOptions = {}): Promise<string> {
  const { certPath } = identityPaths(dir, name)
  await makeDir(dir)
  await writeFileAtomic(certPath, chainToPem(chain), { mode: 0o644, overwrite: options.overwrite })
  return certPath
}

/**
 * Atomic write: a temporary file in the same folder, fsync, then rename (overwrite) or hard link (no overwrite,
 * which fails if the target appeared meanwhile), then fsync of the folder. Readers never see a partial file.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, options: { mode?: number; overwrite?: boolean } = {}): Promise<void> {
  const dir = dirname(path)
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
  const mode = options.mode ?? 0o644
  try {
    const fh = await open(tmp, 'wx', mode)
    try {
      await fh.chmod(mode) // umask must not widen or narrow what we asked for
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    if (options.overwrite) {
      await rename(tmp, path)
    } else {
      try {
        await link(tmp, path)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw fileExists(path)
        throw err
      }
      await unlink(tmp)
    }
    await syncDir(dir)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    if (err instanceof DhtnetError) throw err
    throw new DhtnetError('WRITE_FAILED', `cannot write ${path}: ${(err as Error).message}`, {
      cause: err,
      hint: 'check that the folder exists, is writable and the disk is not full',
    })
  }
}

async function refuseExisting(path: string): Promise<void> {
  const exists = await stat(path).then(
    () => true,
    () => false,
  )
  if (exists) throw fileExists(path)
}

function fileExists(path: string): DhtnetError {
  return new DhtnetError('FILE_EXISTS', `${path} already exists; refusing to overwrite it`, {
    hint: 'choose another name (-n) or folder (-o), or allow overwriting with --force',
  })
}

async function makeDir(dir: string): Promise<void> {
  try {
    await makeDirectory(dir)
  } catch (cause) {
    throw new DhtnetError('WRITE_FAILED', `cannot create folder ${dir}: ${(cause as Error).message}`, {
      cause,
      hint: 'choose a folder you can write to (-o DIR)',
    })
  }
}

/**
 * `mkdir -p`, bounded by the depth of the path. Not fs.mkdir({ recursive: true }): on Linux it spins forever
 * on paths under /proc or /sys (procfs answers ENOENT, which Node reads as "create the parent and retry").
 * Every folder it creates gets exactly `mode` (default 0700: our folders hold private keys and the DHT state;
 * the umask neither widens nor narrows it). Existing folders are left as they are.
 */
export async function makeDirectory(dir: string, mode = 0o700): Promise<void> {
  const missing: string[] = []
  for (let cur = resolve(dir); ;) {
    const st = await stat(cur).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    if (st) {
      if (!st.isDirectory()) throw Object.assign(new Error(`${cur} exists and is not a folder`), { code: 'ENOTDIR' })
      break
    }
    missing.push(cur)
    const parent = dirname(cur)
    if (parent === cur) break
    cur = parent
  }
  for (const d of missing.reverse()) {
    const created = await mkdir(d, { mode }).then(
      () => true,
      async (err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST' && (await stat(d)).isDirectory()) return false // created meanwhile by someone else
        throw err
      },
    )
    if (created) await chmod(d, mode)
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r').catch(() => undefined)
  if (!fh) return
  try {
    await fh.sync()
  } catch {
    // some file systems cannot fsync a directory; the rename is still atomic
  } finally {
    await fh.close()
  }
}
