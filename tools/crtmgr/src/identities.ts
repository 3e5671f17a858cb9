import { access } from 'node:fs/promises'
import { basename, extname } from 'node:path'
import {
  DhtnetError,
  generateCaAndDevice,
  generateIdentity,
  generateRsaKey,
  identityPaths,
  loadIdentity,
  makeDirectory,
  saveIdentity,
  type Identity,
  type RsaKeySize,
} from '@dhtnet/core'
import { withProgress, type Io } from './output.js'

/** Shared steps of the modes: loading a signing CA, generating with progress, refusing to overwrite early. */

export async function loadCa(certificate: string, privateKey: string): Promise<Identity> {
  return loadIdentity({ key: privateKey, certificate, role: 'ca' })
}

/** Before any slow key generation: creates the output folder, and refuses when an output file exists (unless --force). */
export async function prepareOutput(dir: string, names: string[], force: boolean, onlyCert = false): Promise<void> {
  try {
    await makeDirectory(dir) // a folder we cannot create is reported now, not after the keys are made
  } catch (cause) {
    throw new DhtnetError('WRITE_FAILED', `cannot create folder ${dir}: ${(cause as Error).message}`, {
      cause,
      hint: 'choose a folder you can write to (-o DIR)',
    })
  }
  if (force) return
  for (const name of names) {
    const { keyPath, certPath } = identityPaths(dir, name)
    for (const p of onlyCert ? [certPath] : [keyPath, certPath]) {
      if (await exists(p)) {
        throw new DhtnetError('FILE_EXISTS', `${p} already exists; refusing to overwrite it`, {
          hint: 'choose another name (-n) or folder (-o), or replace it with --force',
        })
      }
    }
  }
}

export async function generateWithProgress(io: Io, options: { name: string; keySize: RsaKeySize; issuer?: Identity; ca?: boolean }): Promise<Identity> {
  const key = await withProgress(io, `Generating RSA-${options.keySize} key for ${options.name}`, () => generateRsaKey(options.keySize))
  return generateIdentity({ ...options, privateKey: key })
}

export async function generatePairWithProgress(io: Io, caName: string, deviceName: string, keySize: RsaKeySize): Promise<{ ca: Identity; device: Identity }> {
  return withProgress(io, `Generating RSA-${keySize} keys for ${caName} and ${deviceName}`, () => generateCaAndDevice({ caName, deviceName, keySize }))
}

export async function save(identity: Identity, dir: string, name: string, force: boolean) {
  return saveIdentity(identity, dir, name, { overwrite: force })
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  )
}

/** `req.csr` → `req`. */
export function stem(path: string): string {
  return basename(path, extname(path))
}
