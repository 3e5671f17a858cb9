/**
 * The devices we talk to: per device its live connections, the connection being set up (shared by concurrent
 * connectDevice calls), the pending calls by channel name, and its certificate chain once known.
 *
 * A device is keyed by its 64-hex long id; while its certificate is looked up from a 40-hex id, a placeholder is
 * keyed by that id. Lookups by either form find both.
 */
import type { X509Certificate } from 'node:crypto'
import { parsePeerId, publicKeyIds } from '../identity/ids.js'
import type { Channel, PeerLink } from './peer-link.js'

export interface DeviceState {
  readonly links: Set<PeerLink>
  /** Connection being set up by us, shared by concurrent connectDevice calls. */
  connecting: Promise<PeerLink> | undefined
  /** Pending connectDevice calls by channel name (isConnecting, uniqueName). */
  readonly pendingByName: Map<string, Set<Promise<Channel>>>
  chain: X509Certificate[] | undefined
  /** The certificate lookup in progress (a device known by its 40-hex id): concurrent calls share it. */
  lookup: Promise<X509Certificate[]> | undefined
}

export class DeviceRegistry {
  private readonly devices = new Map<string, DeviceState>()

  /** The device entry under `key`, created when absent. */
  get(key: string): DeviceState {
    let d = this.devices.get(key)
    if (!d) {
      d = { links: new Set(), connecting: undefined, pendingByName: new Map(), chain: undefined, lookup: undefined }
      this.devices.set(key, d)
    }
    return d
  }

  /** Every entry for a peer id (either form): the one keyed by its long id, and a placeholder keyed by its 40-hex
   *  id while its certificate is being looked up. */
  lookup(peer: string): DeviceState[] {
    const { hex } = parsePeerId(peer)
    const out: DeviceState[] = []
    for (const [key, device] of this.devices) {
      if (key === hex) out.push(device)
      else if (device.chain) {
        const ids = publicKeyIds(device.chain[0]!)
        if (ids.id === hex || ids.longId === hex) out.push(device)
      }
    }
    return out
  }

  /** The long id of a device we already know by its 40-hex id, with its chain. */
  knownByKeyId(keyId: string): { longId: string; chain: X509Certificate[] } | undefined {
    for (const [key, device] of this.devices) {
      if (device.chain && publicKeyIds(device.chain[0]!).id === keyId) return { longId: key, chain: device.chain }
    }
    return undefined
  }

  /** Drop an entry that holds nothing any more. */
  forgetIfIdle(key: string): void {
    const d = this.devices.get(key)
    if (d && d.links.size === 0 && !d.connecting && !d.lookup && d.pendingByName.size === 0) this.devices.delete(key)
  }

  all(): IterableIterator<DeviceState> {
    return this.devices.values()
  }

  entries(): Array<[string, DeviceState]> {
    return [...this.devices]
  }

  clear(): void {
    this.devices.clear()
  }

  /** The oldest live connection, as DHTNet's getConnectedInfo (first in id order). */
  static liveLink(device: DeviceState): PeerLink | undefined {
    for (const link of device.links) if (!link.closed) return link
    return undefined
  }

  /** Remember a channel by name (uniqueName looks channels up in both directions, as DHTNet does). */
  static trackChannel(link: PeerLink, channel: Channel): void {
    link.channelsByName.set(channel.name, channel)
    channel.once('close', () => {
      if (link.channelsByName.get(channel.name) === channel) link.channelsByName.delete(channel.name)
    })
  }

  static findChannel(device: DeviceState, name: string): Channel | undefined {
    for (const link of device.links) {
      if (link.closed) continue
      const found = link.channelsByName.get(name)
      if (found) return found
    }
    return undefined
  }

  /** Does this device entry match a device id or an account id (the 40/64-hex id of the issuer CA)? */
  static matches(key: string, device: DeviceState, hex: string): boolean {
    if (key === hex) return true
    const chain = device.chain
    if (!chain) return false
    const ids = publicKeyIds(chain[0]!)
    const issuer = chain.length > 1 ? publicKeyIds(chain[1]!) : undefined
    return ids.id === hex || ids.longId === hex || issuer?.id === hex || issuer?.longId === hex
  }
}
