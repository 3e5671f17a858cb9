/**
 * NAT lab topology in network namespaces (see ../../../../../README NAT lab section and netlab.md):
 *
 *   <p>-inet  bridge br0 = "internet" 198.51.100.0/24, 198.51.100.1 = ISP core (ip_forward=0: drops what it
 *             would have to forward; it is the default gateway of the public side, which coturn needs, netlab
 *             pitfall 2)
 *    ├─ <p>-pub   198.51.100.10  coturn (STUN + TURN/UDP)
 *    ├─ <p>-boot  198.51.100.20  bootstrap dhtnet-node :4222
 *    └─ per case: <p>-<n>rA wan0 198.51.100.101 / lan0 10.0.1.1 ── <p>-<n>hA eth0 10.0.1.2
 *                 <p>-<n>rB wan0 198.51.100.102 / lan0 10.0.2.1 ── <p>-<n>hB eth0 10.0.2.2
 *
 * Routers do NAT with nftables (forward policy drop, lan→wan accept, established/related accept) and their input
 * chain DROPS unsolicited WAN packets (netlab pitfall 1: otherwise an early peer packet creates a conntrack entry
 * that remaps the host's own outbound port and hole punching fails even with EIM).
 *
 * Every namespace name starts with a per-run prefix; nothing is created in the root namespace (veths are created
 * directly inside the namespaces with `ip -n`), and destroy() removes every namespace of the run.
 */
import { spawnSync } from 'node:child_process'

/** eim: port-restricted cone (EIM/APDF); sym: symmetric (APDM/APDF); fullcone: EIM/EIF; blockudp: UDP dropped
 * except to the DHT bootstrap (so that the DHT signalling works and only the media path is blocked). */
export type NatMode = 'eim' | 'sym' | 'fullcone' | 'blockudp'

export const NET = {
  core: '198.51.100.1',
  turn: '198.51.100.10',
  boot: '198.51.100.20',
  bootPort: 4222,
  routerWan: { A: '198.51.100.101', B: '198.51.100.102' },
  routerLan: { A: '10.0.1.1', B: '10.0.2.1' },
  host: { A: '10.0.1.2', B: '10.0.2.2' },
} as const

export class CommandError extends Error {}

/** Run a command (bounded: 15 s), throw with its stderr when it fails. */
export function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 15_000 })
  if (r.error) throw new CommandError(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new CommandError(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr.trim()}`)
  return r.stdout
}

/** Why the lab cannot run here (not root, no `ip netns`, no nft), or undefined when it can. */
export function labUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'the NAT lab needs Linux network namespaces'
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'the NAT lab needs root (network namespaces)'
  const ip = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 5000 })
  if (ip.error || ip.status !== 0) return `\`ip netns\` is unavailable: ${ip.error?.message ?? ip.stderr.trim()}`
  return undefined
}

function existingNamespaces(): string[] {
  return run('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean)
}

/** A prefix `nl<pid%1000>` (next free number if another run uses it). */
function choosePrefix(): string {
  const taken = new Set(existingNamespaces().map((n) => n.split('-')[0]))
  for (let i = 0; i < 1000; i++) {
    const p = `nl${(process.pid + i) % 1000}`
    if (!taken.has(p)) return p
  }
  throw new CommandError('no free NAT lab prefix (1000 labs in use?)')
}

export interface CaseNet {
  /** Namespaces of the two hosts, where the devices run. */
  hostA: string
  hostB: string
  routerA: string
  routerB: string
}

export class NatLab {
  readonly prefix: string
  readonly inet: string
  readonly pub: string
  readonly boot: string
  private readonly namespaces: string[] = []
  private caseCount = 0

  private constructor(prefix: string) {
    this.prefix = prefix
    this.inet = `${prefix}-inet`
    this.pub = `${prefix}-pub`
    this.boot = `${prefix}-boot`
  }

  /** Build the public side: internet bridge with the core gateway, the TURN host and the bootstrap host. */
  static create(): NatLab {
    // Two runs may pick the same free prefix at the same moment: `ip netns add` fails for the second; try again.
    let found: NatLab | undefined
    for (let attempt = 0; !found; attempt++) {
      const candidate = new NatLab(choosePrefix())
      try {
        candidate.addNs(candidate.inet)
        found = candidate
      } catch (err) {
        if (attempt >= 5) throw err
      }
    }
    const lab = found
    try {
      lab.ns(lab.inet, 'sysctl', '-qw', 'net.ipv4.ip_forward=0')
      lab.ip(lab.inet, 'link', 'add', 'br0', 'type', 'bridge')
      lab.ip(lab.inet, 'addr', 'add', `${NET.core}/24`, 'dev', 'br0')
      lab.ip(lab.inet, 'link', 'set', 'br0', 'up')
      lab.addPublicHost(lab.pub, 'ppub', [NET.turn])
      lab.addPublicHost(lab.boot, 'pboot', [NET.boot])
    } catch (err) {
      lab.destroy()
      throw err
    }
    return lab
  }

  /** Two routers with the given NAT modes and a host behind each. Remove them with removeCase(). */
  addCase(modeA: NatMode, modeB: NatMode): CaseNet {
    const n = ++this.caseCount
    const net: CaseNet = {
      routerA: `${this.prefix}-${n}rA`,
      routerB: `${this.prefix}-${n}rB`,
      hostA: `${this.prefix}-${n}hA`,
      hostB: `${this.prefix}-${n}hB`,
    }
    this.addHomeNetwork(net.routerA, net.hostA, `p${n}A`, 'A', modeA)
    this.addHomeNetwork(net.routerB, net.hostB, `p${n}B`, 'B', modeB)
    return net
  }

  /**
   * One more host on the public side (no NAT): namespace `<prefix>-<tag>`, `address` on the internet bridge (a
   * 198.51.100.x not used above), default route through the core. Deleted with the lab (destroy()).
   */
  addPublicNamespace(tag: string, address: string): string {
    const name = `${this.prefix}-${tag}`
    this.addPublicHost(name, `p${tag}`.slice(0, 15), [address])
    return name
  }

  removeCase(net: CaseNet): void {
    for (const name of [net.hostA, net.routerA, net.hostB, net.routerB]) this.delNs(name)
  }

  /** Conntrack/NAT rules of a router, for diagnostics. */
  routerState(router: string): string {
    try {
      return run('ip', ['netns', 'exec', router, 'nft', 'list', 'ruleset'])
    } catch (err) {
      return (err as Error).message
    }
  }

  /** Delete every namespace of this run (also any left by an earlier crash of this run's prefix). Never throws. */
  destroy(): void {
    let names: string[]
    try {
      names = existingNamespaces().filter((n) => n.startsWith(`${this.prefix}-`))
    } catch {
      names = [...this.namespaces]
    }
    // Hosts and routers first, the internet last (deleting it removes the bridge ports).
    names.sort((a, b) => Number(a === this.inet) - Number(b === this.inet))
    for (const name of names) this.delNs(name)
    this.namespaces.length = 0
  }

  // ---------------------------------------------------------------------------------------------------------

  private addNs(name: string): void {
    run('ip', ['netns', 'add', name])
    this.namespaces.push(name)
    this.ip(name, 'link', 'set', 'lo', 'up')
  }

  private delNs(name: string): void {
    spawnSync('ip', ['netns', 'del', name], { timeout: 15_000 })
    const i = this.namespaces.indexOf(name)
    if (i >= 0) this.namespaces.splice(i, 1)
  }

  private ip(netns: string, ...args: string[]): void {
    run('ip', ['-n', netns, ...args])
  }

  private ns(netns: string, ...args: string[]): string {
    return run('ip', ['netns', 'exec', netns, ...args])
  }

  /** A veth from `netns` (named `dev`) to a port of the internet bridge (named `port` in the inet namespace). */
  private plugIntoInternet(netns: string, dev: string, port: string): void {
    this.ip(netns, 'link', 'add', dev, 'type', 'veth', 'peer', 'name', port, 'netns', this.inet)
    this.ip(this.inet, 'link', 'set', port, 'master', 'br0')
    this.ip(this.inet, 'link', 'set', port, 'up')
    this.ip(netns, 'link', 'set', dev, 'up')
  }

  private addPublicHost(name: string, port: string, addresses: string[]): void {
    this.addNs(name)
    this.plugIntoInternet(name, 'eth0', port)
    for (const a of addresses) this.ip(name, 'addr', 'add', `${a}/24`, 'dev', 'eth0')
    this.ip(name, 'route', 'add', 'default', 'via', NET.core)
  }

  private addHomeNetwork(router: string, host: string, port: string, side: 'A' | 'B', mode: NatMode): void {
    const lan = NET.routerLan[side]
    const hostAddr = NET.host[side]
    this.addNs(router)
    this.addNs(host)
    this.plugIntoInternet(router, 'wan0', port)
    this.ip(router, 'addr', 'add', `${NET.routerWan[side]}/24`, 'dev', 'wan0')
    this.ip(router, 'route', 'add', 'default', 'via', NET.core)
    this.ip(router, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host)
    this.ip(router, 'addr', 'add', `${lan}/24`, 'dev', 'lan0')
    this.ip(router, 'link', 'set', 'lan0', 'up')
    this.ip(host, 'addr', 'add', `${hostAddr}/24`, 'dev', 'eth0')
    this.ip(host, 'link', 'set', 'eth0', 'up')
    this.ip(host, 'route', 'add', 'default', 'via', lan)
    this.ns(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1')
    run('ip', ['netns', 'exec', router, 'nft', '-f', '-'], routerRuleset(mode, hostAddr))
  }
}

/** nftables rules of a home router (netlab.md "NAT variants"). */
export function routerRuleset(mode: NatMode, hostAddr: string): string {
  const masquerade = mode === 'sym' ? 'masquerade fully-random' : 'masquerade persistent'
  const blockUdp = mode === 'blockudp' ? `    iifname "lan0" ip daddr ${NET.boot} udp dport ${NET.bootPort} accept\n    iifname "lan0" meta l4proto udp drop\n` : ''
  const fullcone = mode === 'fullcone'
  return `table ip nlfw {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" drop
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
${blockUdp}${fullcone ? '    ct status dnat accept\n' : ''}    iifname "lan0" oifname "wan0" accept
  }
${fullcone ? `  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    iifname "wan0" udp dport 1024-65535 dnat to ${hostAddr}\n  }\n` : ''}  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    oifname "wan0" ${masquerade}
  }
}
`
}
