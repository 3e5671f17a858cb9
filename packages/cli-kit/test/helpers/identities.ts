/** Throwaway identity files for the tools' tests (RSA-2048: fast; the tools accept any size the key policy allows). */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateIdentity } from '../../../core/src/identity/generate.js'
import { chainToPem, privateKeyToPem } from '../../../core/src/identity/pem.js'
import { publicKeyIds } from '../../../core/src/identity/ids.js'
import type { Identity } from '../../../core/src/identity/types.js'

export interface LabIdentity {
  readonly cert: string
  readonly key: string
  readonly id: string
  readonly longId: string
}

/** A device identity issued by `issuer`, written as NAME.pem (0600) and NAME.crt (chain) in `dir`. */
export async function writeIdentity(dir: string, name: string, issuer: Identity): Promise<LabIdentity> {
  const identity = await generateIdentity({ name, issuer, keySize: 2048 })
  mkdirSync(dir, { recursive: true })
  const key = join(dir, `${name}.pem`)
  const cert = join(dir, `${name}.crt`)
  writeFileSync(key, privateKeyToPem(identity.privateKey), { mode: 0o600 })
  writeFileSync(cert, chainToPem(identity.chain))
  const ids = publicKeyIds(identity.chain[0]!)
  return { cert, key, id: ids.id, longId: ids.longId }
}

export function newCa(name: string): Promise<Identity> {
  return generateIdentity({ name, keySize: 2048 })
}
