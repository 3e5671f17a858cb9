import { createPrivateKey, KeyObject, X509Certificate } from 'node:crypto'
import { DhtnetError, errorMessage } from '../errors.js'

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g

/** One PEM block: its label (e.g. CERTIFICATE) and the whole text from BEGIN to END. */
export interface PemBlock {
  readonly label: string
  readonly text: string
}

/** Every complete PEM block in `text`, in order. A BEGIN without its END is reported as truncated. */
export function pemBlocks(text: string, what = 'input'): PemBlock[] {
  const blocks: PemBlock[] = []
  for (const m of text.matchAll(PEM_BLOCK)) blocks.push({ label: m[1]!, text: m[0] })
  const begins = text.match(/-----BEGIN [A-Z0-9 ]+-----/g)?.length ?? 0
  if (begins > blocks.length) {
    throw new DhtnetError('NOT_PEM', `${what} is truncated: a PEM block has a BEGIN line but no matching END line`, {
      hint: 'the file was cut short or edited; restore it or generate a new identity',
    })
  }
  return blocks
}

/**
 * Parses a PEM certificate chain (leaf first, then its issuers), as found in a DHTNet `.crt` file.
 * `what` names the input in error messages (a file name, typically).
 */
export function parseCertificateChain(pem: string | Buffer, what = 'certificate'): X509Certificate[] {
  const text = typeof pem === 'string' ? pem : pem.toString('latin1')
  const blocks = pemBlocks(text, what).filter((b) => b.label === 'CERTIFICATE' || b.label === 'X509 CERTIFICATE')
  if (blocks.length === 0) {
    throw new DhtnetError('NOT_PEM', `${what} contains no PEM certificate (expected "-----BEGIN CERTIFICATE-----")`, {
      hint: 'give the .crt file written by dhtnet-crtmgr, not the key or a DER file',
    })
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b.text)
    } catch (cause) {
      throw new DhtnetError('NOT_PEM', `${what}: certificate #${i + 1} of the chain is corrupted (${errorMessage(cause)})`, {
        cause,
        hint: 'the file was damaged; restore it or generate a new identity',
      })
    }
  })
}

/** PEM text of a chain, leaf first: the `.crt` format. */
export function chainToPem(chain: readonly X509Certificate[]): string {
  return chain.map((c) => ensureNewline(c.toString())).join('')
}

/**
 * Parses a PEM private key: PKCS#8 (plain or encrypted with `password`), or legacy PKCS#1.
 * Wrong or missing passwords give KEY_PASSWORD; anything unreadable gives NOT_PEM.
 */
export function parsePrivateKey(pem: string | Buffer, options: { password?: string; what?: string } = {}): KeyObject {
  const what = options.what ?? 'private key'
  const text = typeof pem === 'string' ? pem : pem.toString('latin1')
  const keyBlocks = pemBlocks(text, what).filter((b) => b.label.endsWith('PRIVATE KEY'))
  if (keyBlocks.length === 0) {
    throw new DhtnetError('NOT_PEM', `${what} contains no PEM private key (expected "-----BEGIN PRIVATE KEY-----")`, {
      hint: 'give the .pem file written by dhtnet-crtmgr, which holds the private key',
    })
  }
  const block = keyBlocks[0]!
  const encrypted = block.label === 'ENCRYPTED PRIVATE KEY' || /Proc-Type:\s*4,ENCRYPTED/.test(block.text)
  if (encrypted && (options.password === undefined || options.password === '')) {
    throw new DhtnetError('KEY_PASSWORD', `${what} is encrypted and no password was given`, {
      hint: 'give the password of the key, or decrypt it once with: openssl pkey -in KEY -out PLAIN.pem',
    })
  }
  try {
    return createPrivateKey(encrypted ? { key: block.text, format: 'pem', passphrase: options.password } : block.text)
  } catch (cause) {
    if (encrypted) {
      throw new DhtnetError('KEY_PASSWORD', `${what}: wrong password (the key could not be decrypted)`, {
        cause,
        hint: 'check the password of the key',
      })
    }
    throw new DhtnetError('NOT_PEM', `${what} is not a readable private key (${errorMessage(cause)})`, {
      cause,
      hint: 'the file was damaged or cut short; restore it or generate a new identity',
    })
  }
}

/** Unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the `.pem` format of DHTNet. */
export function privateKeyToPem(key: KeyObject): string {
  return ensureNewline(key.export({ type: 'pkcs8', format: 'pem' }).toString())
}

function ensureNewline(s: string): string {
  return s.endsWith('\n') ? s : `${s}\n`
}
