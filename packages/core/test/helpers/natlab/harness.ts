/**
 * The NAT lab as one object: topology (public side once per run), coturn, the bootstrap dhtnet-node, a lab CA,
 * and runCase(): fresh routers + hosts with the given NAT modes, a serving device on hB, a connecting device on
 * hA, the result, and everything of the case removed again. Used by natlab.test.ts and scripts/natlab.
 */
import { generateIdentity } from '../../../src/identity/generate.js'
import { chainToPem, privateKeyToPem } from '../../../src/identity/pem.js'
import type { Identity } from '../../../src/identity/types.js'
import { NatLab, type NatMode } from './topology.js'
import { type DeviceConfig, type LabProcess, STUN_URL, TURN_PASS, TURN_REALM, TURN_URL, TURN_USER, startBootstrap, startCoturn, startDevice, tempDir } from './procs.js'
import { NET } from './topology.js'

export interface CaseSpec {
  name: string
  natA: NatMode
  natB: NatMode
  /** stun: STUN only; turn: STUN + TURN/UDP (both devices). */
  servers: 'stun' | 'turn'
  bytes: number
  /** Bound of connectDevice on the connecting device. */
  timeoutMs: number
  /**
   * The tools' TURN setting on the devices (runtime `turn`: by default one server for WebRTC's UDP relay and
   * ICE-TCP's TCP relay), with `servers: 'stun'` for STUN. `passA`/`passB`: a password other than the lab's;
   * `onlyA`: B gets no TURN.
   */
  turn?: { transport?: 'udp' | 'tcp' | 'tls'; passA?: string; passB?: string; onlyA?: boolean }
  /** Keep every log line of both devices (result.allLogs). */
  keepLogs?: boolean
  /** connect: wait this long between 256 KiB blocks. */
  paceMs?: number
}

export interface CaseResult {
  spec: CaseSpec
  ok: boolean
  /** connecting device (hA): error code when it failed */
  code?: string
  message?: string
  hint?: string
  /** selected pair as seen by hA (local/remote) and by hB */
  pairA?: string
  pairB?: string
  remoteA?: string
  /** ConnectionInfo.path / .relay as seen by A (result) and B (its 'connection' event). */
  pathA?: string
  relayA?: string
  pathB?: string
  relayB?: string
  connectMs?: number
  elapsedMs?: number
  mbPerS?: number
  bytes?: number
  receivedBytes?: number
  sha256Sent?: string
  sha256Received?: string
  /** the device process exited within its bound (no hang) */
  exitCode: number | null
  wallMs: number
  /** last lines of both devices, for failure messages */
  logs: string
  /** keepLogs: every log line of both devices, their whole output and coturn's */
  allLogs?: string
}

export class NatLabRun {
  /** Processes of the case in progress (for the emergency clean-up). */
  private readonly live = new Set<LabProcess>()
  /** If the test process dies without close() (e.g. killed by the runner's timeout): kill our processes by pid and
   * delete our namespaces synchronously. */
  private readonly emergency = (): void => {
    for (const p of [this.coturn, ...(this.bootstrap ? [this.bootstrap] : []), ...this.live]) {
      if (p.running && p.pid !== undefined) {
        try {
          process.kill(p.pid, 'SIGKILL')
        } catch {
          // gone
        }
      }
    }
    this.lab.destroy()
    this.dir.remove()
  }

  private constructor(
    readonly lab: NatLab,
    private readonly coturn: LabProcess,
    private readonly bootstrap: LabProcess | undefined,
    private readonly ca: Identity,
    private readonly dir: ReturnType<typeof tempDir>,
  ) {
    process.once('exit', this.emergency)
  }

  /**
   * `sharedBootstrap`: one dhtnet-node for the whole run instead of a fresh one per case. Off by default: the
   * shared node's routing table fills with the dead DHT nodes of earlier cases (same router addresses, often the
   * same ports), and lookups then stall on them or come back empty (see the NAT lab notes in the report).
   */
  static async start(options: { sharedBootstrap?: boolean; maxAllocateLifetimeS?: number } = {}): Promise<NatLabRun> {
    const dir = tempDir()
    const lab = NatLab.create()
    // Started one after the other, each kept as soon as it exists: a failed start must not leak the other process
    // (a process whose readiness wait failed is stopped by the start function itself).
    let coturn: LabProcess | undefined
    let bootstrap: LabProcess | undefined
    try {
      coturn = await startCoturn(lab.pub, dir.path, options.maxAllocateLifetimeS !== undefined ? { maxAllocateLifetimeS: options.maxAllocateLifetimeS } : {})
      if (options.sharedBootstrap) bootstrap = await startBootstrap(lab.boot)
      const ca = await generateIdentity({ name: 'natlab-ca', keySize: 2048 })
      return new NatLabRun(lab, coturn, bootstrap, ca, dir)
    } catch (err) {
      await coturn?.stop()
      await bootstrap?.stop()
      lab.destroy()
      dir.remove()
      throw err
    }
  }

  /** Stop every process and delete every namespace and file of the run. Never throws. */
  async close(): Promise<void> {
    process.off('exit', this.emergency)
    await Promise.all([this.coturn.stop(), this.bootstrap?.stop(), ...[...this.live].map((p) => p.stop())])
    this.lab.destroy()
    this.dir.remove()
  }

  get coturnLog(): string[] {
    return this.coturn.output
  }

  private async writeIdentity(name: string): Promise<{ key: string; cert: string; identity: Identity }> {
    const identity = await generateIdentity({ name, issuer: this.ca, keySize: 2048 })
    const key = this.dir.write(`${name}.pem`, privateKeyToPem(identity.privateKey), 0o600)
    const cert = this.dir.write(`${name}.crt`, chainToPem(identity.chain))
    return { key, cert, identity }
  }

  async runCase(spec: CaseSpec): Promise<CaseResult> {
    const started = performance.now()
    const tag = spec.name.replace(/[^a-z0-9]+/gi, '-')
    // Fresh identities per case: the DHT still holds the previous case's requests at the old ids.
    const [a, b] = await Promise.all([this.writeIdentity(`${tag}-a`), this.writeIdentity(`${tag}-b`)])
    const iceServers = spec.servers === 'turn' ? [STUN_URL, TURN_URL] : [STUN_URL]
    const turnFor = (pass: string | undefined): Pick<DeviceConfig, 'turn'> =>
      spec.turn ? { turn: { host: NET.turn, user: TURN_USER, pass: pass ?? TURN_PASS, realm: TURN_REALM, ...(spec.turn.transport ? { transport: spec.turn.transport } : {}) } } : {}
    const logFileA = spec.keepLogs ? this.dir.write(`${tag}-a.log`, '') : undefined
    const logFileB = spec.keepLogs ? this.dir.write(`${tag}-b.log`, '') : undefined
    const net = this.lab.addCase(spec.natA, spec.natB)
    let server: LabProcess | undefined
    let client: LabProcess | undefined
    let bootstrap: LabProcess | undefined
    try {
      if (!this.bootstrap) {
        bootstrap = await startBootstrap(this.lab.boot)
        this.live.add(bootstrap)
      }
      server = startDevice(net.hostB, `${tag}:hB`, {
        mode: 'serve',
        key: b.key,
        cert: b.cert,
        iceServers,
        ...(spec.turn?.onlyA ? {} : turnFor(spec.turn?.passB)),
        ...(logFileB ? { logFile: logFileB } : {}),
      })
      this.live.add(server)
      await server.waitFor('device B ready', (_l, j) => j?.event === 'ready' || j?.event === 'result', 30_000)
      const early = server.jsonLines.find((j) => j.event === 'result')
      if (early) throw new Error(`device B failed to start: ${String(early.code)} ${String(early.message)}`)
      client = startDevice(net.hostA, `${tag}:hA`, {
        mode: 'connect',
        key: a.key,
        cert: a.cert,
        iceServers,
        peer: b.identity.id,
        bytes: spec.bytes,
        timeoutMs: spec.timeoutMs,
        ...turnFor(spec.turn?.passA),
        ...(logFileA ? { logFile: logFileA } : {}),
        ...(spec.paceMs ? { paceMs: spec.paceMs } : {}),
      })
      this.live.add(client)
      // Bound: start-up (≤ 25 s: tsx, DHT join, certificate publication) + connect timeout + transfer.
      const bound = 25_000 + spec.timeoutMs + 30_000
      const exited = await Promise.race([client.exited, new Promise<null>((r) => setTimeout(() => r(null), bound).unref())])
      if (exited === null) await client.stop()
      const res = client.jsonLines.find((j) => j.event === 'result') ?? {}
      // B's view of the pair (its 'connection' event may trail A's result by a few ms)
      if (res.ok) await server.waitFor('B connection', (_l, j) => j?.event === 'connection', 2000).catch(() => undefined)
      const bConn = server.jsonLines.find((j) => j.event === 'connection')
      let allLogs: string | undefined
      if (spec.keepLogs) {
        // the device flushes its log file when it stops
        await Promise.all([client.stop(), server.stop()])
        const { readFileSync } = await import('node:fs')
        allLogs = [readFileSync(logFileA!, 'utf8'), readFileSync(logFileB!, 'utf8'), client.output.join('\n'), server.output.join('\n'), this.coturn.output.join('\n')].join('\n')
      }
      return {
        spec,
        ok: res.ok === true,
        code: res.code as string | undefined,
        message: res.message as string | undefined,
        hint: res.hint as string | undefined,
        pairA: res.pair as string | undefined,
        pairB: bConn?.pair as string | undefined,
        remoteA: res.remote as string | undefined,
        pathA: res.path as string | undefined,
        relayA: res.relay as string | undefined,
        pathB: bConn?.path as string | undefined,
        relayB: bConn?.relay as string | undefined,
        connectMs: res.connectMs as number | undefined,
        elapsedMs: res.elapsedMs as number | undefined,
        mbPerS: res.mbPerS as number | undefined,
        bytes: res.bytes as number | undefined,
        receivedBytes: res.receivedBytes as number | undefined,
        sha256Sent: res.sha256Sent as string | undefined,
        sha256Received: res.sha256Received as string | undefined,
        exitCode: exited === null ? null : exited.code,
        wallMs: Math.round(performance.now() - started),
        logs: `--- hA (${spec.natA}) ---\n${client.output.slice(-30).join('\n')}\n--- hB (${spec.natB}) ---\n${server.output.slice(-30).join('\n')}`,
        ...(allLogs !== undefined ? { allLogs } : {}),
      }
    } finally {
      await Promise.all([client?.stop(), server?.stop()])
      await bootstrap?.stop()
      for (const p of [client, server, bootstrap]) if (p) this.live.delete(p)
      this.lab.removeCase(net)
    }
  }
}

/** The matrix as a text table. */
export function formatTable(results: readonly CaseResult[]): string {
  const rows = [
    ['case', 'NAT A↔B', 'servers', 'result', 'pair (A view)', 'pair (B view)', 'connect ms', 'echo MB/s', 'MiB'],
    ...results.map((r) => [
      r.spec.name,
      `${r.spec.natA}↔${r.spec.natB}`,
      r.spec.turn ? `STUN+TURN(${r.spec.turn.transport ?? 'udp+tcp'})` : r.spec.servers === 'turn' ? 'STUN+TURN' : 'STUN',
      r.ok ? 'ok' : `${r.code ?? 'fail'}${r.elapsedMs !== undefined ? ` @${(r.elapsedMs / 1000).toFixed(1)}s` : ''}`,
      r.pairA ? `${r.pairA}${r.relayA ? ` (relay ${r.relayA.toUpperCase()})` : ''}` : '-',
      r.pairB ? `${r.pairB}${r.relayB ? ` (relay ${r.relayB.toUpperCase()})` : ''}` : '-',
      r.connectMs !== undefined ? String(r.connectMs) : '-',
      r.mbPerS !== undefined ? r.mbPerS.toFixed(1) : '-',
      r.bytes ? String(r.bytes / 1024 / 1024) : '-',
    ]),
  ]
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
  return rows.map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n')
}
