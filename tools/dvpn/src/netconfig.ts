/**
 * Changes to the host's network configuration (the `ip` command of iproute2, `nft`, sysctl), each recorded with
 * the command that undoes it, so that everything dvpn added is removed on exit, on a signal and on an error, in
 * reverse order. Addresses and routes on our TUN go away with it (the kernel removes them when the device closes);
 * what lives outside it (underlay host routes, nftables tables, sysctl values) is undone explicitly.
 */
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'

export type Runner = (cmd: string, args: readonly string[], input?: string) => Promise<string>

/** How long one command may take. */
const COMMAND_TIMEOUT_MS = 10_000

export class CommandError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message)
    this.name = 'CommandError'
  }
}

/** execFile with a bound; stderr in the error. */
export const runCommand: Runner = (cmd, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(cmd, args as string[], { timeout: COMMAND_TIMEOUT_MS, encoding: 'utf8', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const what = (err as NodeJS.ErrnoException).code === 'ENOENT' ? `${cmd} is not installed` : (stderr || err.message).trim()
        reject(new CommandError(`${cmd} ${args.join(' ')}: ${what}`, stderr))
      } else resolve(stdout)
    })
    if (input !== undefined) child.stdin?.end(input)
  })

interface Change {
  readonly what: string
  readonly undo: () => Promise<void>
}

export class NetChanges {
  private readonly changes: Change[] = []
  private readonly log: (line: string) => void

  constructor(
    private readonly run: Runner = runCommand,
    log?: (line: string) => void,
  ) {
    this.log = log ?? (() => {})
  }

  /** `ip <args>` (no undo recorded: for what dies with the TUN). */
  async ip(...args: string[]): Promise<string> {
    this.log(`ip ${args.join(' ')}`)
    return this.run('ip', args)
  }

  /** `ip <args>`, undone by `ip <undoArgs>`. */
  async ipUndoable(args: string[], undoArgs: string[]): Promise<void> {
    await this.ip(...args)
    this.record(`ip ${args.join(' ')}`, async () => {
      await this.run('ip', undoArgs)
    })
  }

  /**
   * A host route to `address` through the path the kernel uses now (the underlay, before the tunnel takes the
   * default), so that a full tunnel does not swallow the traffic to the peer itself. Undone on exit. Returns false
   * when there is nothing to add (no route, or the address is on a local link).
   */
  async pinUnderlayRoute(address: string): Promise<boolean> {
    const v6 = address.includes(':')
    const fam = v6 ? ['-6'] : []
    let out: string
    try {
      out = await this.run('ip', [...fam, '-o', 'route', 'get', address])
    } catch {
      return false
    }
    const via = /\bvia (\S+)/.exec(out)?.[1]
    const dev = /\bdev (\S+)/.exec(out)?.[1]
    if (!dev || /^(lo)$/.test(dev)) return false
    const host = `${address}/${v6 ? 128 : 32}`
    const spec = [...(via ? ['via', via] : []), 'dev', dev]
    try {
      await this.ipUndoable([...fam, 'route', 'add', host, ...spec], [...fam, 'route', 'del', host, ...spec])
      return true
    } catch (err) {
      // already there (a route the user made, or our own from an earlier connection): leave it as it is
      if (err instanceof CommandError && /File exists/.test(err.message)) return false
      throw err
    }
  }

  /** Write a sysctl value (/proc/sys path), restoring the old value on undo when it differed. */
  async sysctl(key: string, value: string): Promise<void> {
    const path = `/proc/sys/${key.replace(/\./g, '/')}`
    const old = (await readFile(path, 'utf8')).trim()
    if (old === value) return
    this.log(`sysctl ${key}=${value} (was ${old})`)
    await writeFile(path, value)
    this.record(`sysctl ${key}=${value}`, () => writeFile(path, old))
  }

  /** Load an nftables table (`nft -f -`), deleted on undo. */
  async nftTable(family: string, name: string, ruleset: string): Promise<void> {
    this.log(`nft: table ${family} ${name}`)
    // a table of that name left by a process that was killed: replace it
    await this.run('nft', ['delete', 'table', family, name]).catch(() => undefined)
    await this.run('nft', ['-f', '-'], ruleset)
    this.record(`nft table ${family} ${name}`, async () => {
      await this.run('nft', ['delete', 'table', family, name])
    })
  }

  /** Record an undo step for a change made elsewhere. */
  record(what: string, undo: () => Promise<void>): void {
    this.changes.push({ what, undo })
  }

  get count(): number {
    return this.changes.length
  }

  /** Undo everything, last first. Never throws; returns what could not be undone. */
  async undoAll(): Promise<string[]> {
    const failed: string[] = []
    while (this.changes.length > 0) {
      const c = this.changes.pop()!
      try {
        await c.undo()
        this.log(`undone: ${c.what}`)
      } catch (err) {
        failed.push(`${c.what}: ${(err as Error).message}`)
      }
    }
    return failed
  }
}
