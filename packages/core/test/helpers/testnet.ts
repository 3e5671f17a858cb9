/**
 * An in-process test network on loopback: one bootstrap DhtNode and devices, each with its own DhtNode (127.0.0.1,
 * ephemeral port), identity (RSA-2048 for speed, signed by a shared or given CA), TrustStore and ConnectionManager.
 * Also spawns real peer processes (test/helpers/cm-peer.ts) and stops them by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { DhtNode } from '../../src/dht/node.js'
import { SecureDht } from '../../src/dht/secure-dht.js'
import { generateIdentity } from '../../src/identity/generate.js'
import { TrustStore } from '../../src/identity/truststore.js'
import { chainToPem, privateKeyToPem } from '../../src/identity/pem.js'
import type { Identity } from '../../src/identity/types.js'
import { ConnectionManager, type ConnectionManagerOptions, type TransportPolicy } from '../../src/connection/connection-manager.js'

export interface TestDevice {
  name: string
  identity: Identity
  trust: TrustStore
  node: DhtNode
  dht: SecureDht
  cm: ConnectionManager
}

export type DeviceOptions = Partial<Omit<ConnectionManagerOptions, 'identity' | 'dht' | 'trust'>> & {
  /** Use this identity instead of a new device of the network's CA. */
  identity?: Identity
  /** Trust these CAs (default: the network's CA). */
  trustedCas?: Identity[]
  /** Do not call cm.start(). */
  noStart?: boolean
}

const QUIET = process.env.DHTNET_TEST_VERBOSE ? undefined : () => {}

export async function startDhtNode(bootstrapPort?: number): Promise<DhtNode> {
  const node = new DhtNode({
    port: 0,
    bindIpv4: '127.0.0.1',
    bindIpv6: false,
    ...(bootstrapPort ? { bootstrap: [`127.0.0.1:${bootstrapPort}`] } : {}),
  })
  await node.start()
  if (bootstrapPort) {
    const timer = setTimeout(() => node.emit('connect-timeout'), 5000)
    await Promise.race([once(node, 'connected'), once(node, 'connect-timeout')])
    clearTimeout(timer)
  }
  return node
}

export class TestNet {
  readonly devices: TestDevice[] = []
  private readonly children = new Set<ChildProcess>()
  private tmp: string | undefined

  private constructor(
    readonly bootstrap: DhtNode,
    readonly ca: Identity,
  ) {}

  static async create(): Promise<TestNet> {
    const bootstrap = await startDhtNode()
    const ca = await generateIdentity({ name: 'testnet-ca', keySize: 2048 })
    return new TestNet(bootstrap, ca)
  }

  get bootstrapPort(): number {
    return this.bootstrap.port
  }

  async newIdentity(name: string, issuer: Identity = this.ca): Promise<Identity> {
    return generateIdentity({ name, issuer, keySize: 2048 })
  }

  async addDevice(name: string, options: DeviceOptions = {}): Promise<TestDevice> {
    const identity = options.identity ?? (await this.newIdentity(name))
    const trust = new TrustStore()
    for (const ca of options.trustedCas ?? [this.ca]) trust.addTrustedCa(ca.chain[ca.chain.length - 1]!)
    const node = await startDhtNode(this.bootstrapPort)
    const dht = new SecureDht(node, identity, { log: QUIET })
    const { identity: _i, trustedCas: _t, noStart, ...rest } = options
    const cm = new ConnectionManager({
      identity,
      dht,
      trust,
      bindAddress: '127.0.0.1',
      connectTimeoutMs: 15_000,
      logger: process.env.DHTNET_TEST_VERBOSE ? (l, m) => process.stderr.write(`[${name}] ${l} ${m}\n`) : undefined,
      onChannelRequest: () => true,
      // the connection suites run once per transport policy (connection-over-*.test.ts)
      ...(process.env.DHTNET_TEST_TRANSPORT ? { transport: process.env.DHTNET_TEST_TRANSPORT as TransportPolicy } : {}),
      ...rest,
    })
    if (!noStart) await cm.start()
    const device = { name, identity, trust, node, dht, cm }
    this.devices.push(device)
    return device
  }

  /** Write an identity to files for a child process. */
  writeIdentity(identity: Identity, name: string): { key: string; cert: string } {
    this.tmp ??= mkdtempSync(join(tmpdir(), 'dhtnet-testnet-'))
    const key = join(this.tmp, `${name}.pem`)
    const cert = join(this.tmp, `${name}.crt`)
    writeFileSync(key, privateKeyToPem(identity.privateKey), { mode: 0o600 })
    writeFileSync(cert, chainToPem(identity.chain))
    return { key, cert }
  }

  /**
   * Spawn a peer process running a ConnectionManager (test/helpers/cm-peer.ts). Resolves when it printed "ready".
   * Its stdout lines (JSON) are delivered to `onLine`.
   */
  async spawnPeer(
    name: string,
    options: { identity?: Identity; env?: Record<string, string>; onLine?: (msg: Record<string, unknown>) => void } = {},
  ): Promise<{ child: ChildProcess; identity: Identity; lines: Array<Record<string, unknown>> }> {
    const identity = options.identity ?? (await this.newIdentity(name))
    const files = this.writeIdentity(identity, name)
    const caFiles = this.writeIdentity(this.ca, 'ca')
    const script = fileURLToPath(new URL('./cm-peer.ts', import.meta.url))
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        PEER_KEY: files.key,
        PEER_CERT: files.cert,
        PEER_CA: caFiles.cert,
        PEER_BOOTSTRAP: `127.0.0.1:${this.bootstrapPort}`,
        ...options.env,
      },
    })
    this.children.add(child)
    child.on('exit', () => this.children.delete(child))
    let stderr = ''
    child.stderr.on('data', (d) => {
      stderr += d
      if (process.env.DHTNET_TEST_VERBOSE) process.stderr.write(`[${name}] ${d}`)
    })
    const lines: Array<Record<string, unknown>> = []
    const rl = createInterface({ input: child.stdout })
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`peer ${name} not ready within 20 s: ${stderr}`)), 20_000)
      child.once('exit', (code, sig) => {
        clearTimeout(timer)
        reject(new Error(`peer ${name} exited (${code ?? sig}) before ready: ${stderr}`))
      })
      rl.on('line', (line) => {
        let msg: Record<string, unknown>
        try {
          msg = JSON.parse(line) as Record<string, unknown>
        } catch {
          return
        }
        lines.push(msg)
        options.onLine?.(msg)
        if (msg.event === 'ready') {
          clearTimeout(timer)
          resolve()
        }
      })
    })
    await ready
    return { child, identity, lines }
  }

  /** Stop a child by pid: SIGTERM, then SIGKILL after `graceMs`. Resolves with its exit code/signal. */
  async stopChild(child: ChildProcess, graceMs = 3000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode }
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    process.kill(child.pid!, 'SIGTERM')
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL')
    }, graceMs)
    const [code, signal] = await exited
    clearTimeout(timer)
    return { code, signal }
  }

  async close(): Promise<void> {
    for (const child of [...this.children]) await this.stopChild(child).catch(() => {})
    for (const d of this.devices) {
      await d.cm.close()
      d.dht.close()
      await d.node.stop()
    }
    this.devices.length = 0
    await this.bootstrap.stop()
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true })
  }
}
