/**
 * NAT lab additions for the UPnP/NAT-PMP test (natlab-upnp.test.ts): coturn on two public addresses (RFC 5780,
 * which miniupnpd's STUN check needs), a home router whose nftables table carries miniupnpd's chains, and
 * miniupnpd itself, started and stopped by pid (netlab.md "nat-port-mapper 4.0.5 ↔ miniupnpd 2.3.1").
 */
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { NET, run, type NatMode } from './topology.js'
import { type LabProcess, spawnInNs, startCoturn } from './procs.js'

/** coturn's second address: answers the CHANGE-REQUEST of miniupnpd's NAT-type check. */
export const TURN_ALT = '198.51.100.11'

/** Why this test cannot run (no miniupnpd or upnpc), or undefined. */
export function upnpLabUnavailableReason(): string | undefined {
  for (const [cmd, pkg] of [
    ['miniupnpd', 'miniupnpd-nftables'],
    ['upnpc', 'miniupnpc'],
    ['turnserver', 'coturn'],
  ] as const) {
    const r = spawnSync('sh', ['-c', `command -v ${cmd} || test -x /usr/sbin/${cmd}`], { encoding: 'utf8', timeout: 5000 })
    if (r.status !== 0) return `${cmd} is not installed (Debian package ${pkg}; scripts/setup installs it)`
  }
  return undefined
}

/** coturn (STUN + TURN) listening on both public addresses of the TURN host, so that RFC 5780 works. */
export async function startCoturnTwoIps(netns: string, workDir: string): Promise<LabProcess> {
  run('ip', ['-n', netns, 'addr', 'add', `${TURN_ALT}/24`, 'dev', 'eth0'])
  return startCoturn(netns, workDir, { alternateIp: TURN_ALT })
}

/**
 * A home router's nftables for a NAT mode with miniupnpd's chains in our own table (`inet nlfw`): forward jumps to
 * `miniupnpd`, NAT prerouting/postrouting to `prerouting_miniupnpd`/`postrouting_miniupnpd`; the input chain still
 * drops unsolicited WAN packets except the STUN answers miniupnpd's NAT check needs. Only LAN traffic is
 * masqueraded: the router's own STUN check must keep its port (else miniupnpd sees a "symmetric NAT upstream"
 * and disables port forwarding).
 */
export function upnpRouterRuleset(mode: Extract<NatMode, 'eim' | 'sym'>): string {
  const masquerade = mode === 'sym' ? 'masquerade fully-random' : 'masquerade persistent'
  return `table inet nlfw {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" ip saddr { ${NET.turn}, ${TURN_ALT} } udp sport { 3478, 3479 } accept
    iifname "wan0" drop
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    jump miniupnpd
    iifname "lan0" oifname "wan0" accept
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    ip saddr 10.0.0.0/8 oifname "wan0" ${masquerade}
  }
  chain postrouting_miniupnpd {
  }
}
`
}

/** Replace a router's ruleset by upnpRouterRuleset(mode). */
export function makeUpnpRouter(router: string, mode: Extract<NatMode, 'eim' | 'sym'>): void {
  run('ip', ['netns', 'exec', router, 'nft', 'flush', 'ruleset'])
  run('ip', ['netns', 'exec', router, 'nft', '-f', '-'], upnpRouterRuleset(mode))
}

export function miniupnpdConfig(workDir: string): string {
  return [
    'ext_ifname=wan0',
    'listening_ip=lan0',
    'http_port=5000',
    'enable_natpmp=yes',
    'enable_upnp=yes',
    'secure_mode=yes',
    // the lab's WAN address is in a reserved range: miniupnpd checks with STUN that port forwarding works
    'ext_perform_stun=yes',
    `ext_stun_host=${NET.turn}`,
    'ext_stun_port=3478',
    'upnp_table_name=nlfw',
    'upnp_nat_table_name=nlfw',
    'upnp_forward_chain=miniupnpd',
    'upnp_nat_chain=prerouting_miniupnpd',
    'upnp_nat_postrouting_chain=postrouting_miniupnpd',
    `lease_file=${join(workDir, 'miniupnpd.leases')}`,
    'uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b',
    'system_uptime=yes',
    'clean_ruleset_interval=0',
    'allow 1024-65535 10.0.1.0/24 1024-65535',
    'deny 0-65535 0.0.0.0/0 0-65535',
    '',
  ].join('\n')
}

/** miniupnpd in the router namespace, in the foreground (-d), with a fresh lease file; stop it with stop(). */
export async function startMiniupnpd(router: string, dir: { path: string; write(name: string, data: string): string }): Promise<LabProcess> {
  // a leased mapping of an earlier run would be re-installed at start
  rmSync(join(dir.path, 'miniupnpd.leases'), { force: true })
  const conf = dir.write('miniupnpd.conf', miniupnpdConfig(dir.path))
  const proc = spawnInNs(router, 'miniupnpd', 'miniupnpd', ['-d', '-f', conf, '-P', join(dir.path, 'miniupnpd.pid')])
  try {
    await proc.waitFor('miniupnpd port forwarding', (l) => /Port forwarding is now enabled/i.test(l), 10_000)
    await proc.waitFor('miniupnpd NAT-PMP', (l) => /NAT-PMP|natpmp|PCP/i.test(l), 5_000).catch(() => undefined)
  } catch (err) {
    await proc.stop()
    throw err
  }
  return proc
}

/** Router A's UPnP/NAT-PMP rules (prerouting DNAT + forward accept) as nft prints them. */
export function miniupnpdRules(router: string): string {
  return (
    run('ip', ['netns', 'exec', router, 'nft', 'list', 'chain', 'inet', 'nlfw', 'prerouting_miniupnpd']) +
    run('ip', ['netns', 'exec', router, 'nft', 'list', 'chain', 'inet', 'nlfw', 'miniupnpd'])
  )
}

/** `upnpc -l` from a host namespace (the IGD's own list of mappings). */
export function upnpcList(host: string): string {
  const r = spawnSync('ip', ['netns', 'exec', host, 'upnpc', '-u', `http://${NET.routerLan.A}:5000/rootDesc.xml`, '-l'], { encoding: 'utf8', timeout: 15_000 })
  return `${r.stdout}${r.stderr}`
}
