/**
 * Addresses, routes and rules around the TUN, set with the `ip` command (iproute2) and nftables through NetChanges,
 * so that whatever outlives the TUN is undone on exit. What is set on the TUN itself (addresses, the routes through
 * it) disappears with it when dvpn closes it.
 */
import { formatIPv4, formatIPv6, formatSubnet4, formatSubnet6, type Subnet4, type Subnet6 } from './addresses.js'
import type { NetChanges } from './netconfig.js'

/** No IPv6 link-local address (nor its router solicitations through the tunnel): the VPN's addresses only. */
async function noLinkLocal(net: NetChanges, tun: string): Promise<void> {
  await net.ip('link', 'set', 'dev', tun, 'addrgenmode', 'none').catch(() => undefined)
}

export interface ServerTunPlan {
  readonly server4: number
  readonly subnet4: Subnet4
  readonly clients4: Subnet4
  readonly server6: bigint
  readonly subnet6: Subnet6
  readonly clients6: Subnet6
}

/** The server's one TUN: its own addresses in its subnets, the clients' subnets routed to it, up. */
export async function configureServerTun(net: NetChanges, tun: string, plan: ServerTunPlan): Promise<void> {
  await noLinkLocal(net, tun)
  await net.ip('link', 'set', 'dev', tun, 'up')
  await net.ip('addr', 'add', `${formatIPv4(plan.server4)}/${plan.subnet4.prefix}`, 'dev', tun)
  if (plan.clients4.network !== plan.subnet4.network || plan.clients4.prefix !== plan.subnet4.prefix) {
    await net.ip('route', 'add', formatSubnet4(plan.clients4), 'dev', tun, 'src', formatIPv4(plan.server4))
  }
  await net.ip('-6', 'addr', 'add', `${formatIPv6(plan.server6)}/${plan.subnet6.prefix}`, 'dev', tun, 'nodad')
  if (plan.clients6.network !== plan.subnet6.network || plan.clients6.prefix !== plan.subnet6.prefix) {
    await net.ip('-6', 'route', 'add', formatSubnet6(plan.clients6), 'dev', tun)
  }
}

/**
 * Forwarding and masquerading for full-tunnel clients: ip_forward (restored on exit) and an nftables table of our
 * own (`inet dvpn_<tun>`, deleted on exit) that masquerades what the clients send beyond the tunnel.
 */
export async function enableMasquerade(net: NetChanges, tun: string, clients4: Subnet4, clients6: Subnet6): Promise<string> {
  const table = `dvpn_${tun.replace(/[^A-Za-z0-9_]/g, '_')}`
  await net.sysctl('net.ipv4.ip_forward', '1')
  await net.sysctl('net.ipv6.conf.all.forwarding', '1')
  await net.nftTable(
    'inet',
    table,
    `table inet ${table} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${formatSubnet4(clients4)} oifname != "${tun}" masquerade
    ip6 saddr ${formatSubnet6(clients6)} oifname != "${tun}" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "${tun}" accept
    oifname "${tun}" ct state established,related accept
  }
}
`,
  )
  return table
}

export interface ClientTunPlan {
  readonly client4: string
  readonly server4: string
  readonly client6: string
  readonly server6: string
  /** Split tunnel: what goes through the VPN (CIDR), besides the server itself. */
  readonly routes4: readonly string[]
  readonly routes6: readonly string[]
}

/** The client's TUN: its addresses (point to point with the server), up, the VPN's networks through it. */
export async function configureClientTun(net: NetChanges, tun: string, plan: ClientTunPlan): Promise<void> {
  await noLinkLocal(net, tun)
  await net.ip('link', 'set', 'dev', tun, 'up')
  await setClientAddresses(net, tun, plan)
}

export async function setClientAddresses(net: NetChanges, tun: string, plan: ClientTunPlan): Promise<void> {
  await net.ip('addr', 'add', plan.client4, 'peer', plan.server4, 'dev', tun)
  const v6 = plan.client6 !== '' && plan.server6 !== ''
  if (v6) await net.ip('-6', 'addr', 'add', plan.client6, 'peer', plan.server6, 'dev', tun, 'nodad')
  for (const r of plan.routes4) {
    // the client's own /32 is already the peer route's business
    await net.ip('route', 'replace', r, 'dev', tun, 'src', plan.client4)
  }
  if (v6) for (const r of plan.routes6) await net.ip('-6', 'route', 'replace', r, 'dev', tun, 'src', plan.client6)
}

/** Undo setClientAddresses (a reconnection gave other addresses). Best effort. */
export async function clearClientAddresses(net: NetChanges, tun: string): Promise<void> {
  await net.ip('addr', 'flush', 'dev', tun).catch(() => undefined)
  await net.ip('-6', 'addr', 'flush', 'dev', tun).catch(() => undefined)
}

const HALF_DEFAULTS_4 = ['0.0.0.0/1', '128.0.0.0/1']
const HALF_DEFAULTS_6 = ['::/1', '8000::/1']

/**
 * Full tunnel: two half-default routes through the TUN (more specific than the default route, which stays as it
 * is, so nothing of the user's routing table is replaced), and host routes through the underlay for what must not
 * enter the tunnel: the peer's address on the path, the bootstrap nodes, the TURN server. The host routes are undone
 * on exit (NetChanges); the half-defaults go with the TUN, and are withdrawn while the client reconnects (so that
 * the DHT and ICE can reach the server again).
 */
export class FullTunnel {
  private on = false
  private readonly pinned = new Set<string>()

  constructor(
    private readonly net: NetChanges,
    private readonly tun: string,
    private readonly ipv6: boolean,
  ) {}

  /** Keep `address` (an IP) on the underlay path. */
  async keepOutside(address: string): Promise<void> {
    if (this.pinned.has(address)) return
    this.pinned.add(address)
    // while the half-defaults are on, `ip route get` would answer "through the tunnel"
    const wasOn = this.on
    if (wasOn) await this.disable()
    try {
      await this.net.pinUnderlayRoute(address)
    } finally {
      if (wasOn) await this.enable()
    }
  }

  async enable(): Promise<void> {
    if (this.on) return
    for (const r of HALF_DEFAULTS_4) await this.net.ip('route', 'replace', r, 'dev', this.tun)
    if (this.ipv6) for (const r of HALF_DEFAULTS_6) await this.net.ip('-6', 'route', 'replace', r, 'dev', this.tun)
    this.on = true
  }

  async disable(): Promise<void> {
    if (!this.on) return
    this.on = false
    for (const r of HALF_DEFAULTS_4) await this.net.ip('route', 'del', r, 'dev', this.tun).catch(() => undefined)
    if (this.ipv6) for (const r of HALF_DEFAULTS_6) await this.net.ip('-6', 'route', 'del', r, 'dev', this.tun).catch(() => undefined)
  }

  get enabled(): boolean {
    return this.on
  }
}
