/**
 * dvpn as a user runs it (the BUILT tools/dvpn/dist/cli.js), in the NAT lab of packages/core/test/helpers/natlab: a
 * public side with coturn (STUN + TURN) and a dhtnet-node bootstrap, home routers doing NAT with nftables, hosts
 * behind them. Identities are made here (RSA-2048, one lab CA, so the server trusts its clients without anonymous
 * mode; a stranger gets another CA). Every process is stopped by its pid; the namespaces go with the lab.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { NET } from '../../../../packages/core/test/helpers/natlab/topology.js'
import { TURN_PASS, TURN_REALM, TURN_USER } from '../../../../packages/core/test/helpers/natlab/procs.js'
import type { Processes, Proc, StartOptions } from '../../../../packages/cli-kit/test/helpers/processes.js'
import { run } from '../../../../packages/cli-kit/test/helpers/processes.js'
import { DHTNET_NODE, repoRoot, userEnv } from '../../../../packages/cli-kit/test/helpers/tools.js'

export { removeTempDirs, tempDir } from '../../../../packages/cli-kit/test/helpers/tools.js'
export const DVPN = join(repoRoot, 'tools/dvpn/dist/cli.js')

export function assertBuilt(): void {
  for (const f of [DVPN, DHTNET_NODE]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: build first (pnpm exec turbo run build)`)
  }
}

import type { LabIdentity } from '../../../../packages/cli-kit/test/helpers/identities.js'
export { newCa, writeIdentity, type LabIdentity } from '../../../../packages/cli-kit/test/helpers/identities.js'

/** The YAML lines every lab process shares: the bootstrap and the lab's TURN server (which also answers STUN). */
export function labYaml(identity: LabIdentity): string {
  return [
    `bootstrap: "${NET.boot}:${NET.bootPort}"`,
    `turn_host: "${NET.turn}:3478"`,
    `turn_user: "${TURN_USER}"`,
    `turn_pass: "${TURN_PASS}"`,
    `turn_realm: "${TURN_REALM}"`,
    'enable_upnp: false',
    `certificate: "${identity.cert}"`,
    `privateKey: "${identity.key}"`,
    '',
  ].join('\n')
}

export interface Started {
  readonly proc: Proc
  readonly config: string
}

/** `dvpn <args>` in a namespace, with a YAML configuration written from `yaml` into `home`. */
export function startDvpn(procs: Processes, name: string, netns: string, home: string, yaml: string, args: string[], options: StartOptions = {}): Started {
  mkdirSync(home, { recursive: true })
  const config = join(home, 'dvpn.yaml')
  writeFileSync(config, yaml)
  const proc = procs.start(name, process.execPath, [DVPN, '-d', config, '--verbose', ...args], { stdin: 'ignore', env: userEnv(home), netns, ...options })
  return { proc, config }
}

export interface Joined {
  readonly tun: string
  readonly client4: string
  readonly server4: string
  readonly client6: string
  readonly server6: string
}

/** The client's "connected:" line. */
export async function waitJoined(proc: Proc, timeoutMs = 60_000): Promise<Joined> {
  const m = await proc.waitFor(/connected: (\S+) (\S+) ↔ (\S+), (\S+) ↔ (\S+);/, timeoutMs, 'stderr')
  return { tun: m[1]!, client4: m[2]!, server4: m[3]!, client6: m[4]!, server6: m[5]! }
}

/** `ip netns exec <ns> <cmd>`; output, or throws with stderr. */
export async function inNs(
  netns: string,
  cmd: string,
  args: string[],
  options: { allowFailure?: boolean; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], options)
}

/** `ping` (IPv4 or IPv6 by the address): 3 echoes, all answered. */
export async function ping(netns: string, address: string): Promise<string> {
  const r = await inNs(netns, 'ping', [...(address.includes(':') ? ['-6'] : []), '-c', '3', '-i', '0.2', '-W', '3', address], { allowFailure: true, timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(`ping ${address} from ${netns} failed (exit ${r.code}):\n${r.stdout}${r.stderr}`)
  return r.stdout
}

/**
 * What dvpn may change in a namespace, as sorted text: links, addresses, every routing table (IPv4 and IPv6), rules,
 * the nftables ruleset, forwarding. Equal before and after a run = everything was undone.
 */
export async function networkState(netns: string): Promise<string> {
  const parts: string[] = []
  const take = async (label: string, cmd: string, args: string[]): Promise<void> => {
    const r = await inNs(netns, cmd, args)
    const lines = r.stdout
      .split('\n')
      .map((l) => l.replace(/\s+/g, ' ').trim())
      // the kernel's own IPv6 link-local addresses and routes (their DAD state changes by itself; dvpn's TUNs have none)
      .filter((l) => l !== '' && !l.includes('fe80:'))
      .sort()
    parts.push(`## ${label}`, ...lines)
  }
  await take('links', 'ip', ['-o', 'link', 'show'])
  await take('addresses', 'ip', ['-o', 'addr', 'show'])
  await take('routes', 'ip', ['route', 'show', 'table', 'all'])
  await take('routes6', 'ip', ['-6', 'route', 'show', 'table', 'all'])
  await take('rules', 'ip', ['rule', 'show'])
  await take('rules6', 'ip', ['-6', 'rule', 'show'])
  await take('nft', 'nft', ['list', 'ruleset'])
  await take('forwarding', 'sysctl', ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding'])
  return parts.join('\n')
}

/** The links whose name starts with dvpn (our TUNs) in a namespace. */
export async function dvpnLinks(netns: string): Promise<string[]> {
  const r = await inNs(netns, 'ip', ['-o', 'link', 'show'])
  return r.stdout
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined && n.startsWith('dvpn'))
}

/**
 * A TCP service in a namespace (node): `echo` answers every line, `sink` hashes what it receives and prints
 * "sha256 <hex> <bytes>" at the end, `whoami` prints the address each connection comes from.
 */
export function tcpService(procs: Processes, netns: string, kind: 'echo' | 'sink' | 'whoami', host: string, port: number): Proc {
  const code = {
    echo: `require('net').createServer(c=>{c.on('error',()=>{});c.pipe(c)}).listen(${port},'${host}',()=>console.log('listening'))`,
    sink: `const h=require('crypto').createHash('sha256');let n=0;const s=require('net').createServer(c=>{c.on('data',d=>{h.update(d);n+=d.length});c.on('end',()=>{console.log('sha256 '+h.digest('hex')+' '+n);c.end();s.close()})}).listen(${port},'${host}',()=>console.log('listening'))`,
    whoami: `require('net').createServer(c=>{console.log('from '+c.remoteAddress);c.end('hi\\n')}).listen(${port},'${host}',()=>console.log('listening'))`,
  }[kind]
  return procs.start(`tcp ${kind} ${host}:${port}`, process.execPath, ['-e', code], { netns, stdin: 'ignore' })
}

/** Sends `bytes` pseudo-random bytes to host:port and prints "sent <sha256> <bytes>" once the peer closed. */
export function tcpSend(procs: Processes, netns: string, host: string, port: number, bytes: number): Proc {
  const code = `const c=require('crypto'),h=c.createHash('sha256');let left=${bytes};const s=require('net').connect(${port},'${host}',()=>{const pump=()=>{while(left>0){const b=c.randomBytes(Math.min(left,1<<20));left-=b.length;h.update(b);if(!s.write(b))return s.once('drain',pump)}s.end()};pump()});s.on('data',()=>{});s.on('close',()=>console.log('sent '+h.digest('hex')+' '+${bytes}));s.on('error',e=>{console.error(e.message);process.exit(1)})`
  return procs.start(`tcp send ${host}:${port}`, process.execPath, ['-e', code], { netns, stdin: 'ignore' })
}

/** One TCP connection that sends a numbered line every 200 ms and prints each echo; "closed" if it ever ends. */
export function tcpProbe(procs: Processes, netns: string, host: string, port: number): Proc {
  const code = `let n=0,buf='';const s=require('net').connect(${port},'${host}',()=>{console.log('open');setInterval(()=>s.write((++n)+'\\n'),200)});s.setNoDelay(true);s.on('data',d=>{buf+=d;let i;while((i=buf.indexOf('\\n'))>=0){console.log('echo '+buf.slice(0,i));buf=buf.slice(i+1)}});s.on('close',()=>{console.log('closed');process.exit(3)});s.on('error',e=>console.error(e.message))`
  return procs.start(`tcp probe ${host}:${port}`, process.execPath, ['-e', code], { netns, stdin: 'ignore' })
}

/** The highest echo a probe printed so far. */
export function lastEcho(probe: Proc): number {
  const all = [...probe.stdoutText.matchAll(/^echo (\d+)$/gm)]
  return all.length ? Number(all.at(-1)![1]) : 0
}
