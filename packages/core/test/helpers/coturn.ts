/**
 * A throwaway coturn (Debian `coturn`, installed by scripts/setup) on loopback for the TURN/TCP tests: its own
 * user, realm, database, pid file and free ports; TCP (and optionally TLS with a throwaway certificate) listeners on
 * 127.0.0.1 only; no UDP/DTLS listeners; loopback peers allowed (the outside peers of the tests use 127.0.0.2).
 * Stopped by pid (SIGTERM, then SIGKILL).
 */
import { spawn, spawnSync } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { LabProcess, tempDir } from './natlab/procs.js'

export const COTURN_USER = 'turn-tester'
export const COTURN_PASS = 'Sesame-4f1b9c-never-log-me'
export const COTURN_REALM = 'turn.test'

export function coturnUnavailableReason(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v turnserver'], { encoding: 'utf8', timeout: 5000 })
  if (r.status !== 0) return 'turnserver is not installed (Debian package coturn; scripts/setup installs it)'
  const o = spawnSync('sh', ['-c', 'command -v openssl'], { encoding: 'utf8', timeout: 5000 })
  if (o.status !== 0) return 'openssl is not installed'
  return undefined
}

/** A TCP port free right now on 127.0.0.1. */
export function freeTcpPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, host, () => {
      const a = s.address()
      const port = typeof a === 'object' && a ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** A self-signed certificate for 127.0.0.1 (subjectAltName IP and DNS turn.test): { cert, key } PEM paths. */
export function throwawayCertificate(dir: { path: string }, name = 'turn'): { cert: string; key: string; certPem: string } {
  const cert = join(dir.path, `${name}.crt`)
  const key = join(dir.path, `${name}.key`)
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=turn.test',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:turn.test',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { encoding: 'utf8', timeout: 15_000 },
  )
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`)
  const certPem = spawnSync('cat', [cert], { encoding: 'utf8' }).stdout
  return { cert, key, certPem }
}

export interface CoturnOptions {
  /** --max-allocate-lifetime (seconds) */
  maxLifetimeS?: number
  /** --user-quota */
  userQuota?: number
  /** start a TLS listener too, with this certificate */
  tls?: { cert: string; key: string }
  /** --no-tcp-relay (allocations of TCP relays are refused with 442) */
  noTcpRelay?: boolean
  /** --relay-threads (0: single-threaded) */
  relayThreads?: number
}

export interface Coturn {
  readonly process: LabProcess
  readonly port: number
  readonly tlsPort: number | undefined
  readonly dir: ReturnType<typeof tempDir>
  stop(): Promise<void>
}

export async function startLoopbackCoturn(options: CoturnOptions = {}): Promise<Coturn> {
  const dir = tempDir()
  const port = await freeTcpPort()
  const tlsPort = options.tls ? await freeTcpPort() : undefined
  const relayBase = 40000 + Math.floor(Math.random() * 200) * 100
  const args = [
    '-n',
    '--no-cli',
    '-v',
    '--listening-ip',
    '127.0.0.1',
    '--relay-ip',
    '127.0.0.1',
    '--listening-port',
    String(port),
    // the alternate port (RFC 5780) would be port+1: keep it in the same free space
    '--alt-listening-port',
    String(port),
    '--no-udp',
    '--no-dtls',
    ...(options.tls ? ['--tls-listening-port', String(tlsPort), '--alt-tls-listening-port', String(tlsPort), '--cert', options.tls.cert, '--pkey', options.tls.key] : ['--no-tls']),
    '--min-port',
    String(relayBase),
    '--max-port',
    String(relayBase + 99),
    '--lt-cred-mech',
    '--user',
    `${COTURN_USER}:${COTURN_PASS}`,
    '--realm',
    COTURN_REALM,
    '--allow-loopback-peers',
    ...(options.maxLifetimeS !== undefined ? [`--max-allocate-lifetime=${options.maxLifetimeS}`] : []),
    ...(options.userQuota !== undefined ? [`--user-quota=${options.userQuota}`] : []),
    ...(options.noTcpRelay ? ['--no-tcp-relay'] : []),
    ...(options.relayThreads !== undefined ? ['--relay-threads', String(options.relayThreads)] : []),
    '--userdb',
    join(dir.path, 'turndb'),
    '--pidfile',
    join(dir.path, 'turnserver.pid'),
    '--log-file',
    'stdout',
    '--simple-log',
    '--no-software-attribute',
  ]
  const child = spawn('turnserver', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const proc = new LabProcess('coturn', child)
  const stop = async (): Promise<void> => {
    await proc.stop()
    dir.remove()
  }
  try {
    await proc.waitFor('coturn TCP listener', (l) => l.includes(`TCP listener opened on : 127.0.0.1:${port}`), 10_000)
    if (tlsPort !== undefined)
      await proc.waitFor(
        'coturn TLS listener',
        (l) => l.includes(`TLS/TCP listener opened on : 127.0.0.1:${tlsPort}`) || l.includes(`TLS listener opened on : 127.0.0.1:${tlsPort}`),
        10_000,
      )
  } catch (err) {
    await stop()
    throw err
  }
  return { process: proc, port, tlsPort, dir, stop }
}
