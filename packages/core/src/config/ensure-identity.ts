import { access } from 'node:fs/promises'
import { DhtnetError, isDhtnetError } from '../errors.js'
import { generateCaAndDevice, generateIdentity, generateRsaKey, type RsaKeySize } from '../identity/generate.js'
import { identityPaths, saveIdentity } from '../identity/files.js'
import { loadIdentity, type KeyPermissionsPolicy } from '../identity/load.js'
import type { Identity } from '../identity/types.js'
import { defaultDhtnetDir, dhtnetLayout } from './paths.js'

export interface EnsureIdentityOptions {
  /** DHTNet folder; default defaultDhtnetDir() ($DHTNET_HOME or ~/.dhtnet). */
  readonly dir?: string
  /** Where to say what was created (stderr in the tools). */
  readonly log?: (line: string) => void
  readonly keySize?: RsaKeySize
  readonly signal?: AbortSignal
  /** A private key its group or others may read: 'warn' (default, through `log` when given), 'refuse' or 'ignore'. */
  readonly keyPermissions?: KeyPermissionsPolicy
}

export interface EnsuredIdentity {
  readonly identity: Identity
  readonly keyPath: string
  readonly certPath: string
  /** True when this call generated the device identity. */
  readonly created: boolean
}

/**
 * "First run just works": loads `<dir>/id/device.{pem,crt}`, creating it when missing — signed by
 * `<dir>/ca/ca.{pem,crt}`, which is created too when missing. Never replaces an existing file. Folders it
 * creates (`<dir>`, `ca/`, `id/`) are 0700, keys 0600; a key others may read is warned about (see keyPermissions).
 */
export async function ensureIdentity(options: EnsureIdentityOptions = {}): Promise<EnsuredIdentity> {
  const dir = options.dir ?? defaultDhtnetDir()
  const log = options.log ?? (() => {})
  const layout = dhtnetLayout(dir)
  const device = identityPaths(layout.idDir, layout.deviceName)
  const ca = identityPaths(layout.caDir, layout.caName)

  const keyFile = {
    ...(options.keyPermissions ? { keyPermissions: options.keyPermissions } : {}),
    ...(options.log ? { onWarning: (m: string) => log(`warning: ${m}`) } : {}),
  }
  const [hasKey, hasCert] = await Promise.all([exists(device.keyPath), exists(device.certPath)])
  if (hasKey && hasCert) {
    const identity = await loadIdentity({ key: device.keyPath, certificate: device.certPath, role: 'device', ...keyFile })
    return { identity, ...device, created: false }
  }
  if (hasKey !== hasCert) {
    const [present, missing] = hasKey ? [device.keyPath, device.certPath] : [device.certPath, device.keyPath]
    throw new DhtnetError('IDENTITY_FILE_MISSING', `${missing} is missing but ${present} exists: the identity is incomplete`, {
      hint: `restore ${missing}, or move ${present} away to create a new identity`,
    })
  }

  const keySize = options.keySize
  let identity: Identity
  if ((await exists(ca.keyPath)) || (await exists(ca.certPath))) {
    const caIdentity = await loadIdentity({ key: ca.keyPath, certificate: ca.certPath, role: 'ca', ...keyFile })
    log(`Generating RSA-${keySize ?? 4096} key for this device...`)
    const privateKey = await generateRsaKey(keySize, options.signal)
    identity = await generateIdentity({ name: layout.deviceName, issuer: caIdentity, privateKey, ...(keySize ? { keySize } : {}) })
  } else {
    log(`Generating RSA-${keySize ?? 4096} keys for a new CA and this device...`)
    const pair = await generateCaAndDevice({
      caName: layout.caName,
      deviceName: layout.deviceName,
      ...(keySize ? { keySize } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    })
    try {
      await saveIdentity(pair.ca, layout.caDir, layout.caName)
      log(`Created CA in ${layout.caDir}: ${ca.certPath} (id ${pair.ca.id})`)
    } catch (err) {
      if (!isDhtnetError(err, 'FILE_EXISTS')) throw err
      return loadConcurrentlyCreated(device, keyFile) // another process is creating this folder at the same moment
    }
    identity = pair.device
  }
  try {
    await saveIdentity(identity, layout.idDir, layout.deviceName)
  } catch (err) {
    if (!isDhtnetError(err, 'FILE_EXISTS')) throw err
    return loadConcurrentlyCreated(device, keyFile)
  }
  log(`Created device identity in ${layout.idDir}: ${device.certPath} (id ${identity.id})`)
  return { identity, ...device, created: true }
}

async function loadConcurrentlyCreated(
  device: { keyPath: string; certPath: string },
  keyFile: { keyPermissions?: KeyPermissionsPolicy; onWarning?: (m: string) => void },
): Promise<EnsuredIdentity> {
  // The other writer links the key first, then the certificate; give it a bounded moment to finish.
  for (let i = 0; i < 50 && !(await exists(device.certPath)); i++) await new Promise((r) => setTimeout(r, 100))
  const identity = await loadIdentity({ key: device.keyPath, certificate: device.certPath, role: 'device', ...keyFile })
  return { identity, ...device, created: false }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  )
}
