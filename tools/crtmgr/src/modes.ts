import { join, resolve } from 'node:path'
import { issueCertificate, loadIdentity, parseCertificateChain, publicKeyIds, readPemFile, readSigningRequest, saveCertificate, type Identity, type RsaKeySize } from '@dhtnet/core'
import { generatePairWithProgress, generateWithProgress, loadCa, prepareOutput, save, stem } from './identities.js'
import type { Io } from './output.js'

export interface CommonOptions {
  readonly output?: string
  readonly certificate?: string
  readonly privatekey?: string
  readonly name?: string
  readonly keySize: RsaKeySize
  readonly force: boolean
}

function generated(io: Io, what: string, dir: string, name: string, identity: Identity, paths: { keyPath: string; certPath: string }): void {
  io.out(`Generated ${what} in ${dir}: ${name} ${identity.id}\n`)
  io.out(`  long id:     ${identity.longId}\n  private key: ${paths.keyPath}\n  certificate: ${paths.certPath}\n`)
}

/** -a: the 40-hex id and the 64-hex long id of a certificate (validated against -p when given). */
export async function printIdentifier(io: Io, certificate: string, privateKey?: string): Promise<void> {
  let ids: { id: string; longId: string }
  if (privateKey) {
    ids = await loadIdentity({ key: privateKey, certificate })
  } else {
    const text = await readPemFile(certificate, 'certificate')
    ids = publicKeyIds(parseCertificateChain(text, certificate)[0]!)
  }
  io.out(`Public key id: ${ids.id}\nLong id: ${ids.longId}\n`)
}

/** -o DIR (or --generate): a new CA, or a device identity signed by the CA given with -c/-p. */
export async function generate(io: Io, opts: CommonOptions & { output: string }): Promise<void> {
  const dir = resolve(opts.output)
  if (opts.certificate && opts.privatekey) {
    const name = opts.name ?? 'certificate'
    const ca = await loadCa(opts.certificate, opts.privatekey)
    await prepareOutput(dir, [name], opts.force)
    const identity = await generateWithProgress(io, { name, keySize: opts.keySize, issuer: ca })
    generated(io, 'certificate', dir, name, identity, await save(identity, dir, name, opts.force))
  } else {
    const name = opts.name ?? 'ca'
    await prepareOutput(dir, [name], opts.force)
    const identity = await generateWithProgress(io, { name, keySize: opts.keySize })
    generated(io, 'certificate', dir, name, identity, await save(identity, dir, name, opts.force))
  }
}

/** -s: DIR/CA/ca-server.{pem,crt} and DIR/id/id-server.{pem,crt}; with -c/-p that CA signs id-server instead. */
export async function setup(io: Io, opts: CommonOptions & { output: string }): Promise<{ ca: Identity; device: Identity }> {
  const dir = resolve(opts.output)
  const caDir = join(dir, 'CA')
  const idDir = join(dir, 'id')
  if (opts.certificate && opts.privatekey) {
    const ca = await loadCa(opts.certificate, opts.privatekey)
    await prepareOutput(idDir, ['id-server'], opts.force)
    const device = await generateWithProgress(io, { name: 'id-server', keySize: opts.keySize, issuer: ca })
    generated(io, 'certificate', idDir, 'id-server', device, await save(device, idDir, 'id-server', opts.force))
    return { ca, device }
  }
  await prepareOutput(caDir, ['ca-server'], opts.force)
  await prepareOutput(idDir, ['id-server'], opts.force)
  const { ca, device } = await generatePairWithProgress(io, 'ca-server', 'id-server', opts.keySize)
  generated(io, 'CA', caDir, 'ca-server', ca, await save(ca, caDir, 'ca-server', opts.force))
  generated(io, 'certificate', idDir, 'id-server', device, await save(device, idDir, 'id-server', opts.force))
  return { ca, device }
}

/** --sign FILE: a certificate for the key in FILE (CSR, public key or private key), signed by the CA of -c/-p. */
export async function sign(io: Io, file: string, opts: CommonOptions & { output: string; certificate: string; privatekey: string }): Promise<void> {
  const dir = resolve(opts.output)
  const ca = await loadCa(opts.certificate, opts.privatekey)
  const input = await readPemFile(file, 'file to sign', {
    missingCode: 'FILE_MISSING',
    missingHint: 'give a PEM certificate request (openssl req -new ...) or a PEM public key',
  })
  const request = readSigningRequest(input, file)
  const fileName = opts.name ?? stem(file)
  const subjectName = request.name ?? opts.name ?? fileName
  await prepareOutput(dir, [fileName], opts.force, true)
  const leaf = issueCertificate({ publicKey: request.publicKey, name: subjectName, ca: false, signer: ca })
  const certPath = await saveCertificate([leaf, ...ca.chain], dir, fileName, { overwrite: opts.force })
  const ids = publicKeyIds(leaf)
  io.out(`Signed certificate in ${dir}: ${fileName} ${ids.id}\n`)
  io.out(`  subject:     CN=${subjectName}\n  long id:     ${ids.longId}\n  certificate: ${certPath}\n`)
}
