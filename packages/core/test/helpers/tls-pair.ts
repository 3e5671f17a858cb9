// A real TLS 1.3 connection over loopback TCP, both ends in this process, with a throwaway certificate.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'

let credentials: { key: Buffer; cert: Buffer } | undefined

/** A self-signed P-256 certificate made by openssl once per process (the tests check bytes, not identities). */
export function throwawayCredentials(): { key: Buffer; cert: Buffer } {
  if (credentials) return credentials
  const dir = mkdtempSync(join(tmpdir(), 'dhtnet-tls-'))
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=dhtnet-test',
      ],
      { stdio: 'ignore' },
    )
    credentials = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  return credentials
}

export interface TlsPair {
  /** the TLS client end (DHTNet: the DHT responder, `dnc -l`) */
  client: tls.TLSSocket
  /** the TLS server end (DHTNet: the connectDevice caller) */
  server: tls.TLSSocket
  /** Destroy both sockets (idempotent). */
  close(): void
}

export async function createTlsPair(): Promise<TlsPair> {
  const { key, cert } = throwawayCredentials()
  const listener = tls.createServer({ key, cert, minVersion: 'TLSv1.3' })
  const accepted = new Promise<tls.TLSSocket>((resolve, reject) => {
    listener.once('secureConnection', resolve)
    listener.once('tlsClientError', reject)
  })
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve))
  const { port } = listener.address() as { port: number }
  try {
    const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' })
    const [server] = await Promise.all([
      accepted,
      new Promise<void>((resolve, reject) => {
        client.once('secureConnect', resolve)
        client.once('error', reject)
      }),
    ])
    return {
      client,
      server,
      close() {
        client.destroy()
        server.destroy()
      },
    }
  } finally {
    listener.close()
  }
}
