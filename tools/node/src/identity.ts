/** Finding, loading or generating the node's identity for -i / --generate-identity. */
import { X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { DhtnetError, generateCaAndDevice, loadIdentity, saveIdentity, type Identity } from '@dhtnet/core'

function isCaCertificate(crtPath: string): boolean {
  try {
    return new X509Certificate(readFileSync(crtPath)).ca
  } catch {
    return false
  }
}

/** The key and certificate files named by `-i`: `key,crt`, one of the two files, or a directory holding a pair. */
export function resolveIdentityFiles(spec: string): { key: string; certificate: string } {
  if (spec.includes(',')) {
    const [key, certificate, ...rest] = spec.split(',')
    if (!key || !certificate || rest.length) {
      throw new DhtnetError('BAD_IDENTITY_SPEC', `--identity expects DIR or KEY.pem,CERT.crt, got '${spec}'`)
    }
    return { key, certificate }
  }
  let st
  try {
    st = statSync(spec)
  } catch {
    throw new DhtnetError('IDENTITY_NOT_FOUND', `identity '${spec}' does not exist`, {
      hint: 'create one with: dhtnet-crtmgr -s -o DIR (or run dhtnet-node --generate-identity DIR)',
    })
  }
  if (st.isFile()) {
    const base = spec.replace(/\.(pem|crt|key)$/, '')
    return { key: `${base}.pem`, certificate: `${base}.crt` }
  }
  const pairsIn = (dir: string) => {
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      return []
    }
    return names
      .filter((n) => n.endsWith('.pem') && names.includes(n.replace(/\.pem$/, '.crt')))
      .map((n) => ({ key: join(dir, n), certificate: join(dir, n.replace(/\.pem$/, '.crt')) }))
  }
  // a directory of pairs, or the output of `dhtnet-crtmgr -s -o DIR` (DIR/id/id-server.*, DIR/CA/ca-server.*)
  let pairs = pairsIn(spec)
  if (pairs.length === 0) pairs = pairsIn(join(spec, 'id'))
  if (pairs.length === 0) {
    throw new DhtnetError('IDENTITY_NOT_FOUND', `no <name>.pem + <name>.crt pair in ${spec}`, {
      hint: 'create one with: dhtnet-crtmgr -s -o DIR, or pass -i KEY.pem,CERT.crt',
    })
  }
  if (pairs.length === 1) return pairs[0]!
  const devices = pairs.filter((p) => !isCaCertificate(p.certificate))
  if (devices.length === 1) return devices[0]!
  throw new DhtnetError('AMBIGUOUS_IDENTITY', `${spec} holds several identities: ${pairs.map((p) => p.key).join(', ')}`, {
    hint: 'pick one with -i KEY.pem,CERT.crt',
  })
}

export async function loadNodeIdentity(spec: string): Promise<Identity> {
  const files = resolveIdentityFiles(spec)
  return loadIdentity({ key: files.key, certificate: files.certificate, role: 'any' })
}

/** A new CA and node identity (RSA keys from OpenSSL); both saved in `dir` when given. */
export async function generateNodeIdentity(dir: string | undefined, keySize: 2048 | 3072 | 4096): Promise<Identity> {
  const { ca, device } = await generateCaAndDevice({ caName: 'DHT Node CA', deviceName: 'DHT Node', keySize })
  if (dir) {
    await saveIdentity(ca, dir, 'ca')
    await saveIdentity(device, dir, 'node')
  }
  return device
}
