/**
 * Drives Debian's real `dhtnode` (OpenDHT 2.4.12) for interop tests and benchmarks: started on an ephemeral port
 * with no bootstrap but ours and peer discovery off (its default), its interactive prompt fed through a pipe (a
 * FIFO), its output collected and matched; stopped by pid (SIGTERM, then SIGKILL).
 *
 * dhtnode 2.4.12 has no bind-address option: it listens on the wildcard addresses, but it only ever talks to the
 * loopback peers it is given.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'

export function dhtnodePath(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v dhtnode'], { encoding: 'utf8' })
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null
}

export interface DhtnodeOptions {
  /** -i: generate an identity (RSA-4096 key, certificate), needed for s/e commands. */
  identity?: boolean
  /** -b host:port */
  bootstrap?: string
  /** -p (0 = ephemeral) */
  port?: number
  /** -n */
  network?: number
  /** -s: service mode (no prompt) */
  service?: boolean
  /** -v: DHT logs (to stdout) */
  verbose?: boolean
  /** -U: no rate limit */
  noRateLimit?: boolean
  startTimeoutMs?: number
}

export class DhtnodeProcess {
  readonly child: ChildProcess
  output = ''
  nodeId = ''
  /** Public key id (40 hex) when started with an identity. */
  keyId = ''
  port = 0
  private exited = false
  private waiters = new Set<() => void>()

  private constructor(child: ChildProcess) {
    this.child = child
    const onData = (d: Buffer) => {
      this.output += d.toString('utf8')
      if (this.output.length > 4_000_000) this.output = this.output.slice(-2_000_000)
      for (const w of this.waiters) w()
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.on('exit', () => {
      this.exited = true
      for (const w of this.waiters) w()
    })
  }

  get pid(): number {
    return this.child.pid!
  }

  static async start(opts: DhtnodeOptions = {}): Promise<DhtnodeProcess> {
    const bin = dhtnodePath()
    if (!bin) throw new Error('dhtnode is not installed (apt-get install dhtnode)')
    const args = ['-p', String(opts.port ?? 0)]
    if (opts.identity) args.push('-i')
    if (opts.bootstrap) args.push('-b', opts.bootstrap)
    if (opts.network) args.push('-n', String(opts.network))
    if (opts.service) args.push('-s')
    if (opts.verbose) args.push('-v')
    if (opts.noRateLimit) args.push('-U')
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    const p = new DhtnodeProcess(child)
    try {
      const banner = await p.waitFor(/OpenDHT node ([0-9a-f]{40}) running on port (\d+)/, 0, opts.startTimeoutMs ?? 20_000)
      p.nodeId = banner[1]!
      p.port = Number(banner[2])
      if (opts.identity) p.keyId = (await p.waitFor(/Public key ID ([0-9a-f]{40})/, 0, 5_000))[1]!
    } catch (err) {
      await p.stop()
      throw err
    }
    return p
  }

  /** Wait until `re` matches the output from `from` on; returns the match. Rejects on timeout or exit. */
  waitFor(re: RegExp, from: number, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.output.slice(from).match(re)
        if (m) {
          done()
          resolve(m)
        } else if (this.exited) {
          done()
          reject(new Error(`dhtnode exited while waiting for ${re}; output:\n${this.output.slice(-2000)}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} from dhtnode; output since:\n${this.output.slice(from).slice(-3000)}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(check)
      }
      this.waiters.add(check)
      check()
    })
  }

  /** Type a command at the prompt; resolves with the output after it once `until` matches. */
  async command(line: string, until: RegExp, timeoutMs = 15_000): Promise<string> {
    const from = this.output.length
    this.child.stdin!.write(line + '\n')
    const m = await this.waitFor(until, from, timeoutMs)
    return this.output.slice(from, from + (m.index ?? 0) + m[0].length)
  }

  /** Type a command without waiting. Returns the output offset before it. */
  send(line: string): number {
    const from = this.output.length
    this.child.stdin!.write(line + '\n')
    return from
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.exited || this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()))
    try {
      process.kill(this.pid, 'SIGTERM')
    } catch {
      return
    }
    const timer = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }, graceMs)
    await exited
    clearTimeout(timer)
  }
}

/** Values printed by dhtnode (`\tValue[id:… data(text/plain):"…"]`), in order. */
export function parseDhtnodeValues(text: string): Array<{ id: string; signed: boolean; decrypted: boolean; userType?: string; text?: string; raw: string }> {
  const out = []
  for (const m of text.matchAll(
    /Value\[id:([0-9a-f]+) (signed \(v\d+\) )?(decrypted )?(?:data(?:\(([^)]*)\))?:("(?:[^"\\]|\\.)*"|[0-9a-f]*|\d+ bytes)|Certificate|encrypted )?[^\]]*\]/g,
  )) {
    const body = m[5]
    out.push({
      id: m[1]!,
      signed: m[2] !== undefined,
      decrypted: m[3] !== undefined,
      userType: m[4],
      text: body?.startsWith('"') ? body.slice(1, -1) : undefined,
      raw: m[0],
    })
  }
  return out
}
