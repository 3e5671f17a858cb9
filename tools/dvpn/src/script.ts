/**
 * The up-script of DHTNet's dvpn (`script_path`), called with DHTNet's arguments so that existing scripts (its
 * dvpn_up.sh) keep working:
 *
 *   $1 ptp_address (the other end's IPv4)   $2 tun_address (ours)   $3 tun (interface name)
 *   $4 server (the peer's public address)    $5 "true" on the client, "false" on the server
 *   $6 tun_address_ipv6 (ours)               $7 ptp_address_ipv6 (the other end's)
 *
 * Executed directly (the file must be executable, `#!` line), as DHTNet does; dvpn waits for it (bounded) and
 * carries on whatever its status, as DHTNet does, but says so when it failed.
 */
import { spawn } from 'node:child_process'

export interface ScriptArgs {
  readonly peer4: string
  readonly local4: string
  readonly tun: string
  /** The peer's public address (IP only), or "" when unknown. */
  readonly remote: string
  readonly isClient: boolean
  readonly local6: string
  readonly peer6: string
}

export function scriptArguments(a: ScriptArgs): string[] {
  return [a.peer4, a.local4, a.tun, a.remote, a.isClient ? 'true' : 'false', a.local6, a.peer6]
}

export interface ScriptResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly output: string
}

const SCRIPT_TIMEOUT_MS = 30_000
const MAX_OUTPUT = 64 * 1024

export function runScript(path: string, args: ScriptArgs, timeoutMs = SCRIPT_TIMEOUT_MS): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    let output = ''
    const child = spawn(path, scriptArguments(args), { stdio: ['ignore', 'pipe', 'pipe'] })
    const take = (b: Buffer): void => {
      if (output.length < MAX_OUTPUT) output += b.toString('utf8')
    }
    child.stdout.on('data', take)
    child.stderr.on('data', take)
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'not executable (chmod +x, and a #! line)' : err.message
      reject(new Error(`script_path ${path}: ${why}`))
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, output: output.trimEnd() })
    })
  })
}
