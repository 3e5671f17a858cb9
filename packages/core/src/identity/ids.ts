import { createHash, createPublicKey, KeyObject, X509Certificate } from 'node:crypto'
import { DhtnetError } from '../errors.js'

/** The two ids of a public key, as OpenDHT computes them over the DER SubjectPublicKeyInfo. */
export interface PublicKeyIds {
  /** 40 lowercase hex: SHA-1 (OpenDHT InfoHash, `getId()`): what users share. */
  readonly id: string
  /** 64 lowercase hex: SHA-256 (OpenDHT PkId, `getLongId()`). */
  readonly longId: string
}

/** A peer id typed by a user: either form, normalised to lowercase hex. */
export interface ParsedPeerId {
  readonly hex: string
  readonly kind: 'id' | 'longId'
}

/** Anything that carries a public key: a certificate, a key (public or private), or DER SPKI bytes. */
export type PublicKeySource = X509Certificate | KeyObject | Buffer | Uint8Array | { readonly publicKeyDer: Buffer }

/** DER SubjectPublicKeyInfo of a key, certificate or identity. */
export function spkiDer(source: PublicKeySource): Buffer {
  if (source instanceof X509Certificate) return source.publicKey.export({ type: 'spki', format: 'der' })
  if (source instanceof KeyObject) {
    const pub = source.type === 'private' ? createPublicKey(source) : source
    return pub.export({ type: 'spki', format: 'der' })
  }
  if (source instanceof Uint8Array) return Buffer.from(source)
  return source.publicKeyDer
}

export function publicKeyIds(source: PublicKeySource): PublicKeyIds {
  const der = spkiDer(source)
  return {
    id: createHash('sha1').update(der).digest('hex'),
    longId: createHash('sha256').update(der).digest('hex'),
  }
}

/**
 * Parses a peer id as typed by a user: 40 hex (public key id) or 64 hex (long id), any case,
 * surrounding white space ignored. Anything else is a BAD_PEER_ID error that says what was expected.
 */
export function parsePeerId(text: unknown): ParsedPeerId {
  const raw = typeof text === 'string' ? text.trim() : ''
  const hex = raw.toLowerCase()
  if (/^[0-9a-f]{40}$/.test(hex)) return { hex, kind: 'id' }
  if (/^[0-9a-f]{64}$/.test(hex)) return { hex, kind: 'longId' }
  const shown = raw.length > 80 ? `${raw.slice(0, 77)}...` : raw
  const bad = raw.match(/[^0-9a-fA-F]/)
  const detail =
    typeof text !== 'string'
      ? `got a ${text === null ? 'null' : typeof text}`
      : raw.length === 0
        ? 'got an empty string'
        : bad
          ? `got ${raw.length} characters including '${bad[0]}', which is not hex`
          : `got ${raw.length} hex characters`
  throw new DhtnetError('BAD_PEER_ID', `"${shown}" is not a peer id: expected 40 hex characters (public key id) or 64 hex characters (long id), ${detail}`, {
    hint: 'print a peer id with: dhtnet-crtmgr -a -c <certificate>',
  })
}

/** True when the key of `source` has the given id (either form; strings are parsed first). */
export function matchesPeerId(source: PublicKeySource, peer: ParsedPeerId | string): boolean {
  const parsed = typeof peer === 'string' ? parsePeerId(peer) : peer
  const ids = publicKeyIds(source)
  return parsed.kind === 'id' ? ids.id === parsed.hex : ids.longId === parsed.hex
}
