import { open, stat, type FileHandle } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { KeyObject, X509Certificate } from 'node:crypto'
import { DhtnetError, type ErrorCode, isDhtnetError } from '../errors.js'
import { requireRsa } from './certificate.js'
import { chainLinkProblem, commonName, isSelfSigned, notAfter, notBefore, validityProblem } from './chain.js'
import { makeIdentity } from './identity.js'
import { parseCertificateChain, parsePrivateKey } from './pem.js'
import type { Identity } from './types.js'

/** What the identity is for: a device (must be CA-signed), a CA (must have CA:TRUE), or either. */
export type IdentityRole = 'device' | 'ca' | 'any'

export interface ValidateIdentityOptions {
  readonly role?: IdentityRole
  /** Point in time for the validity checks (default: now). */
  readonly now?: Date
  /** Names of the inputs in messages, e.g. file paths. */
  readonly keyName?: string
  readonly certificateName?: string
}

/**
 * What to do with a private key file that its group or others may read (mode & 0o077), when it is ours:
 * 'warn' (the default) says so loudly, 'refuse' fails with KEY_PERMISSIONS as OpenSSH does, 'ignore' says nothing.
 * The default can be set with the environment variable DHTNET_KEY_PERMISSIONS (refuse | warn | ignore).
 */
export type KeyPermissionsPolicy = 'refuse' | 'warn' | 'ignore'

export interface KeyFileOptions {
  readonly keyPermissions?: KeyPermissionsPolicy
  /** Where a warning goes (default: process.emitWarning with the code DHTNET_KEY_PERMISSIONS, printed on stderr). */
  readonly onWarning?: (message: string) => void
}

export interface LoadIdentityOptions extends Omit<ValidateIdentityOptions, 'keyName' | 'certificateName'>, KeyFileOptions {
  /** Path of the private key (`<name>.pem`). */
  readonly key: string
  /** Path of the certificate chain (`<name>.crt`). */
  readonly certificate: string
  /** Password of an encrypted PKCS#8 key. */
  readonly password?: string
}

/** The key permission policy in force: the option, else $DHTNET_KEY_PERMISSIONS, else 'warn'. */
export function keyPermissionsPolicy(option?: KeyPermissionsPolicy, env: NodeJS.ProcessEnv = process.env): KeyPermissionsPolicy {
  if (option) return option
  const v = env.DHTNET_KEY_PERMISSIONS?.trim().toLowerCase()
  return v === 'refuse' || v === 'ignore' || v === 'warn' ? v : 'warn'
}

/**
 * Why a private key file's permissions are unsafe (undefined when they are fine): its group or others may read
 * or write it, and it belongs to us (as OpenSSH, a key owned by another user — e.g. root's, shared on purpose —
 * is not judged). Never on Windows, where modes mean nothing.
 */
export function keyPermissionProblem(st: Pick<Stats, 'mode' | 'uid'>, path: string): string | undefined {
  if (process.platform === 'win32' || typeof process.getuid !== 'function') return undefined
  if ((st.mode & 0o077) === 0 || st.uid !== process.getuid()) return undefined
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
  return `private key ${path} has mode ${mode}: ${st.mode & 0o007 ? 'every user of this machine' : 'its group'} can ${st.mode & 0o044 ? 'read' : 'change'} it`
}

function checkKeyFile(path: string, options: KeyFileOptions): (st: Stats) => void {
  return (st) => {
    const policy = keyPermissionsPolicy(options.keyPermissions)
    if (policy === 'ignore') return
    const problem = keyPermissionProblem(st, path)
    if (!problem) return
    const hint = `make it readable by its owner only: chmod 600 ${path}`
    if (policy === 'refuse') throw new DhtnetError('KEY_PERMISSIONS', `${problem}; refusing to use it`, { hint })
    const message = `${problem}: anyone who can read it can impersonate this identity; ${hint}`
    if (options.onWarning) options.onWarning(message)
    else process.emitWarning(message, { code: 'DHTNET_KEY_PERMISSIONS' })
  }
}

const GENERATE_HINT = 'create an identity with: dhtnet-crtmgr --interactive (or dhtnet-crtmgr -s -o DIR)'

/** Reads and validates an identity from its two files; every problem is a DhtnetError with a code and a hint. */
export async function loadIdentity(options: LoadIdentityOptions): Promise<Identity> {
  const [keyRead, certRead] = await Promise.allSettled([
    readIdentityFile(options.key, 'private key', checkKeyFile(options.key, options)),
    readIdentityFile(options.certificate, 'certificate'),
  ])
  if (
    keyRead.status === 'rejected' &&
    certRead.status === 'rejected' &&
    isDhtnetError(keyRead.reason, 'IDENTITY_FILE_MISSING') &&
    isDhtnetError(certRead.reason, 'IDENTITY_FILE_MISSING')
  ) {
    throw new DhtnetError('IDENTITY_FILE_MISSING', `identity files missing: ${certRead.reason.message} and ${keyRead.reason.message}`, { hint: GENERATE_HINT })
  }
  if (keyRead.status === 'rejected') throw keyRead.reason
  if (certRead.status === 'rejected') throw certRead.reason
  const keyPem = keyRead.value
  const certPem = certRead.value
  const { key, certificate, password, keyPermissions: _policy, onWarning: _warn, ...rest } = options
  return identityFromPem(keyPem, certPem, { ...rest, password, keyName: key, certificateName: certificate })
}

/** An identity from PEM texts (private key, and chain leaf first), validated like loadIdentity. */
export function identityFromPem(keyPem: string | Buffer, chainPem: string | Buffer, options: ValidateIdentityOptions & { password?: string } = {}): Identity {
  const privateKey = parsePrivateKey(keyPem, { password: options.password, what: options.keyName ?? 'private key' })
  const chain = parseCertificateChain(chainPem, options.certificateName ?? 'certificate')
  validateIdentity(privateKey, chain, options)
  return makeIdentity(privateKey, chain)
}

/** Throws the first problem found: NOT_RSA, KEY_MISMATCH, NOT_CA, SELF_SIGNED_DEVICE, CHAIN_INVALID, CERT_EXPIRED, CERT_NOT_YET_VALID. */
export function validateIdentity(privateKey: KeyObject, chain: readonly X509Certificate[], options: ValidateIdentityOptions = {}): void {
  const keyName = options.keyName ?? 'private key'
  const certName = options.certificateName ?? 'certificate'
  const leaf = chain[0]
  if (!leaf) throw new DhtnetError('NOT_PEM', `${certName} contains no certificate`)
  requireRsa(privateKey, keyName)
  requireRsa(leaf.publicKey, `the public key of ${certName}`)
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new DhtnetError('KEY_MISMATCH', `${keyName} does not match ${certName} (CN=${commonName(leaf)}): they belong to different identities`, {
      hint: 'give the .pem and the .crt written together by dhtnet-crtmgr (same name, same folder)',
    })
  }
  const role = options.role ?? 'any'
  if (role === 'ca' && !leaf.ca) {
    throw new DhtnetError('NOT_CA', `${certName} (CN=${commonName(leaf)}) is not a CA certificate, so it cannot sign certificates`, {
      hint: 'give the CA files (e.g. ca.crt / ca.pem), not a device identity',
    })
  }
  if (role === 'device' && isSelfSigned(leaf)) {
    throw new DhtnetError('SELF_SIGNED_DEVICE', `${certName} (CN=${commonName(leaf)}) is self-signed; a device certificate must be signed by a CA, or peers refuse it`, {
      hint: 'sign a device identity with your CA: dhtnet-crtmgr --generate -c CA.crt -p CA.pem -o DIR (or dhtnet-crtmgr -s -o DIR)',
    })
  }
  const link = chainLinkProblem(chain)
  if (link) {
    const who = `certificate #${link.index + 1} (CN=${commonName(chain[link.index]!)})`
    const message =
      link.kind === 'not-ca'
        ? `${certName}: ${who} issues the previous certificate but is not a CA`
        : link.index === chain.length - 1
          ? `${certName}: the signature of ${who} does not verify with its own key`
          : `${certName}: ${who} is not signed by the next certificate of the chain (CN=${commonName(chain[link.index + 1]!)})`
    throw new DhtnetError('CHAIN_INVALID', `${message}; the certificate does not verify against its own chain`, {
      hint: 'the .crt must hold the certificate followed by the CA that signed it; regenerate it with dhtnet-crtmgr',
    })
  }
  const now = options.now ?? new Date()
  chain.forEach((cert, i) => {
    const problem = validityProblem(cert, now)
    if (!problem) return
    const who = i === 0 ? `${certName} (CN=${commonName(cert)})` : `the issuer certificate CN=${commonName(cert)} in ${certName}`
    if (problem === 'expired') {
      throw new DhtnetError('CERT_EXPIRED', `${who} expired on ${notAfter(cert).toISOString()}`, {
        hint: 'generate a new identity with dhtnet-crtmgr (certificates are valid for 10 years)',
      })
    }
    throw new DhtnetError('CERT_NOT_YET_VALID', `${who} is not valid before ${notBefore(cert).toISOString()}`, {
      hint: "check this machine's clock, or wait until the certificate becomes valid",
    })
  })
}

async function readIdentityFile(path: string, what: string, checkOpened?: (st: Stats) => void): Promise<Buffer> {
  if (!path) {
    throw new DhtnetError('IDENTITY_FILE_MISSING', `no ${what} file given`, { hint: GENERATE_HINT })
  }
  return readPemFile(path, what, { missingCode: 'IDENTITY_FILE_MISSING', missingHint: GENERATE_HINT, ...(checkOpened ? { checkOpened } : {}) })
}

/** Identity files are a few KiB; anything far larger (or endless, like /dev/zero) is not one. */
export const MAX_PEM_FILE_BYTES = 1024 * 1024

/**
 * Reads a small PEM file: a regular file of at most 1 MiB. A missing file gives `missingCode`, a folder,
 * device or oversized file NOT_PEM, other failures IDENTITY_FILE_UNREADABLE. Never blocks on a FIFO.
 * `checkOpened` sees the status of the file actually opened (it may throw a DhtnetError).
 */
export async function readPemFile(path: string, what: string, options: { missingCode?: ErrorCode; missingHint?: string; checkOpened?: (st: Stats) => void } = {}): Promise<Buffer> {
  const missingCode = options.missingCode ?? 'IDENTITY_FILE_MISSING'
  const missingHint = options.missingHint ?? GENERATE_HINT
  let fh: FileHandle | undefined
  try {
    const st = await stat(path)
    if (st.isDirectory()) throw new DhtnetError(missingCode, `${what} path ${path} is a folder, not a file`, { hint: missingHint })
    if (!st.isFile()) throw new DhtnetError('NOT_PEM', `${what} ${path} is not a regular file`, { hint: 'give the path of a PEM file' })
    if (st.size > MAX_PEM_FILE_BYTES) {
      throw new DhtnetError('NOT_PEM', `${what} ${path} is ${st.size} bytes, too large to be a PEM key or certificate chain`, { hint: 'give the path of a PEM file' })
    }
    fh = await open(path, 'r')
    options.checkOpened?.(await fh.stat())
    const { buffer, bytesRead } = await fh.read({ buffer: Buffer.alloc(MAX_PEM_FILE_BYTES + 1), position: 0 })
    if (bytesRead > MAX_PEM_FILE_BYTES) throw new DhtnetError('NOT_PEM', `${what} ${path} is too large to be a PEM key or certificate chain`)
    return buffer.subarray(0, bytesRead)
  } catch (cause) {
    if (cause instanceof DhtnetError) throw cause
    const code = (cause as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new DhtnetError(missingCode, `${what} file ${path} does not exist`, { cause, hint: missingHint })
    }
    throw new DhtnetError('IDENTITY_FILE_UNREADABLE', `cannot read ${what} file ${path}: ${(cause as Error).message}`, {
      cause,
      hint: 'check the permissions of the file',
    })
  } finally {
    await fh?.close()
  }
}
