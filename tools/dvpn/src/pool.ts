/**
 * The server's address pool: each client session gets host number i of the clients' subnets (IPv4 network + i, IPv6
 * network + i), held by a lease. A leaving client's lease is kept for a grace period, so that the same device
 * reconnecting gets the same addresses back (and the TCP sessions through the tunnel survive); after it the
 * addresses are free. `authorized_peers` may pin a device to fixed addresses, which nobody else gets.
 */
import { randomBytes } from 'node:crypto'
import { formatIPv4, formatIPv6, inSubnet4, inSubnet6, type Subnet4, type Subnet6 } from './addresses.js'

export interface PinnedAddresses {
  readonly v4: number
  /** Default: the IPv6 network + the same host number as v4. */
  readonly v6?: bigint
}

export interface PoolOptions {
  readonly v4: Subnet4
  readonly v6: Subnet6
  /** The server's own addresses (never leased). */
  readonly reserved4?: readonly number[]
  readonly reserved6?: readonly bigint[]
  /** Device id (40 or 64 hex, lowercase) → its fixed addresses. */
  readonly pins?: ReadonlyMap<string, PinnedAddresses>
  /** How long a released lease stays reserved for its device. */
  readonly graceMs: number
  /** Most sessions one device may hold at once (default 8). */
  readonly maxLivePerPeer?: number
  /** Called when a released lease expires and its addresses are free again. */
  readonly onFreed?: (lease: Lease) => void
  readonly now?: () => number
}

export interface PeerKey {
  /** 40-hex id. */
  readonly id: string
  /** 64-hex long id. */
  readonly longId: string
}

export class Lease {
  /** Session token: a reconnecting client names it to get this lease back. Renewed at each acquire. */
  token: string
  live = true
  releasedAt = 0
  timer: NodeJS.Timeout | undefined
  constructor(
    readonly index: number,
    readonly v4: number,
    readonly v6: bigint,
    readonly peer: string,
    readonly pinned: boolean,
  ) {
    this.token = newToken()
  }

  describe(): string {
    return `${formatIPv4(this.v4)}, ${formatIPv6(this.v6)}`
  }
}

export type AcquireResult =
  | { readonly ok: true; readonly lease: Lease; readonly resumed: boolean; /** a live session that held it and must end */ readonly replaced: boolean }
  | { readonly ok: false; readonly reason: string }

function newToken(): string {
  return randomBytes(12).toString('hex')
}

export class AddressPool {
  readonly capacity: number
  private readonly options: PoolOptions
  private readonly byIndex = new Map<number, Lease>()
  /** Host numbers nobody may lease (server addresses) and pinned ones (their device only). */
  private readonly reserved = new Set<number>()
  private readonly pinnedIndex = new Map<string, number>()
  private readonly pinnedOwner = new Map<number, string>()
  private readonly now: () => number

  constructor(options: PoolOptions) {
    this.options = options
    this.now = options.now ?? Date.now
    const hosts4 = 2 ** (32 - options.v4.prefix) - 2
    const hosts6 = options.v6.prefix >= 96 ? 2 ** (128 - options.v6.prefix) - 2 : Infinity
    // host numbers 1..capacity; bounded so that a /8 does not mean millions of sessions
    this.capacity = Math.min(hosts4, hosts6, 65534)
    for (const a of options.reserved4 ?? []) if (inSubnet4(a, options.v4)) this.reserved.add(a - options.v4.network)
    for (const a of options.reserved6 ?? []) {
      if (inSubnet6(a, options.v6)) {
        const i = a - options.v6.network
        if (i <= BigInt(this.capacity)) this.reserved.add(Number(i))
      }
    }
    for (const [peer, pin] of options.pins ?? []) {
      if (!inSubnet4(pin.v4, options.v4)) throw new Error(`pinned address ${formatIPv4(pin.v4)} of ${peer} is outside the clients' subnet`)
      const index = pin.v4 - options.v4.network
      if (index < 1 || index > this.capacity) throw new Error(`pinned address ${formatIPv4(pin.v4)} of ${peer} is not a host address of the clients' subnet`)
      if (this.reserved.has(index)) throw new Error(`pinned address ${formatIPv4(pin.v4)} of ${peer} is the server's`)
      const owner = this.pinnedOwner.get(index)
      if (owner !== undefined && owner !== peer) throw new Error(`${formatIPv4(pin.v4)} is pinned to two devices (${owner}, ${peer})`)
      if (pin.v6 !== undefined && !inSubnet6(pin.v6, options.v6)) throw new Error(`pinned address ${formatIPv6(pin.v6)} of ${peer} is outside the clients' IPv6 subnet`)
      this.pinnedIndex.set(peer, index)
      this.pinnedOwner.set(index, peer)
    }
  }

  /** Leases held now (live or in their grace period). */
  get size(): number {
    return this.byIndex.size
  }

  leases(): Lease[] {
    return [...this.byIndex.values()]
  }

  private pinOf(peer: PeerKey): { index: number; key: string } | undefined {
    for (const key of [peer.id, peer.longId]) {
      const index = this.pinnedIndex.get(key)
      if (index !== undefined) return { index, key }
    }
    return undefined
  }

  /**
   * A lease for a session of `peer`: its pinned addresses; else the lease its `token` names; else a lease of its
   * still in grace; else the IPv4 address it asks for (`wanted4`, the one it had) when that one is free; else the
   * lowest free host number. A live lease taken over (the device reconnected before the old session ended) is
   * reported as `replaced`.
   */
  acquire(peer: PeerKey, token?: string, wanted4?: number): AcquireResult {
    const mine = [...this.byIndex.values()].filter((l) => l.peer === peer.id)
    const pin = this.pinOf(peer)
    let lease: Lease | undefined
    if (pin) {
      lease = this.byIndex.get(pin.index)
      if (!lease) return this.create(pin.index, peer, true)
    } else {
      lease = (token ? mine.find((l) => l.token === token) : undefined) ?? mine.filter((l) => !l.live).sort((a, b) => b.releasedAt - a.releasedAt)[0]
    }
    if (lease) {
      const replaced = lease.live
      this.revive(lease)
      return { ok: true, lease, resumed: true, replaced }
    }
    const live = mine.filter((l) => l.live).length
    const maxLive = this.options.maxLivePerPeer ?? 8
    if (live >= maxLive) return { ok: false, reason: `this device already has ${live} sessions here (the most is ${maxLive})` }
    if (wanted4 !== undefined && inSubnet4(wanted4, this.options.v4)) {
      const index = wanted4 - this.options.v4.network
      if (index >= 1 && index <= this.capacity && !this.reserved.has(index) && !this.pinnedOwner.has(index) && !this.byIndex.has(index)) return this.create(index, peer, false)
    }
    for (let index = 1; index <= this.capacity; index++) {
      if (this.reserved.has(index) || this.pinnedOwner.has(index) || this.byIndex.has(index)) continue
      return this.create(index, peer, false)
    }
    return { ok: false, reason: `the address pool is full (${this.capacity} addresses, all leased or in their grace period)` }
  }

  private create(index: number, peer: PeerKey, pinned: boolean): AcquireResult {
    const o = this.options
    const pinV6 = pinned ? o.pins?.get(this.pinOf(peer)!.key)?.v6 : undefined
    const lease = new Lease(index, (o.v4.network + index) >>> 0, pinV6 ?? o.v6.network + BigInt(index), peer.id, pinned)
    this.byIndex.set(index, lease)
    return { ok: true, lease, resumed: false, replaced: false }
  }

  private revive(lease: Lease): void {
    clearTimeout(lease.timer)
    lease.timer = undefined
    lease.live = true
    lease.releasedAt = 0
    lease.token = newToken()
  }

  /** The session of this lease ended: keep the lease for the grace period, then free it. */
  release(lease: Lease): void {
    if (!lease.live || this.byIndex.get(lease.index) !== lease) return
    lease.live = false
    lease.releasedAt = this.now()
    lease.timer = setTimeout(() => this.expire(lease), this.options.graceMs)
    lease.timer.unref()
  }

  private expire(lease: Lease): void {
    lease.timer = undefined
    if (lease.live || this.byIndex.get(lease.index) !== lease) return
    this.byIndex.delete(lease.index)
    this.options.onFreed?.(lease)
  }

  /** Clear every timer (server stop). */
  close(): void {
    for (const l of this.byIndex.values()) clearTimeout(l.timer)
    this.byIndex.clear()
  }
}
