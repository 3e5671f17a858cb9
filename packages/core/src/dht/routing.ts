/**
 * One routing table (one per address family) on `k-bucket`, with OpenDHT's node rules:
 * buckets of 8; only the bucket holding our id splits; a node is good when it replied within 120 min and was
 * heard within 10 min, dubious otherwise, expired after 3 unanswered requests; a full bucket first replaces an
 * expired node, else asks for a ping of a dubious one and keeps the newcomer in a small replacement cache.
 */
import KBucket from 'k-bucket'
import { HASH_LEN, randomHashWithPrefix, xorCmp } from './infohash.js'

const MIN = 60_000
export const NODE_GOOD_TIME = 120 * MIN
export const NODE_HEARD_TIME = 10 * MIN
export const NODE_EXPIRE_FAILURES = 3
export const BUCKET_SIZE = 8

export interface RoutingNode {
  id: Buffer
  vectorClock: number
  host: string
  port: number
  family: 4 | 6
  /** ms timestamps, 0 = never */
  lastHeard: number
  lastReplied: number
  /** requests sent since the last reply that got no answer */
  failures: number
  /** last time we pinged it to confirm it (ms, 0 = never) */
  lastPinged?: number
}

export interface BucketInfo {
  /** number of leading bits shared by every id of the bucket */
  depth: number
  prefix: Buffer
  nodes: RoutingNode[]
  /** last time any node of the bucket was heard (0 when empty) */
  lastActive: number
}

interface TreeNode {
  contacts: RoutingNode[] | null
  left: TreeNode | null
  right: TreeNode | null
  dontSplit: boolean
}

export function isGood(n: RoutingNode, now: number): boolean {
  return n.failures < NODE_EXPIRE_FAILURES && n.lastReplied > 0 && now - n.lastReplied < NODE_GOOD_TIME && now - n.lastHeard < NODE_HEARD_TIME
}

export function isExpired(n: RoutingNode): boolean {
  return n.failures >= NODE_EXPIRE_FAILURES
}

export class RoutingTable {
  private readonly kb: KBucket<RoutingNode>
  private readonly replacements: RoutingNode[] = []
  private insideAdd = false
  private addConfirmed = false
  private changes = 0
  /** called when a dubious node of a full bucket should be pinged */
  onPingNeeded: (n: RoutingNode) => void = () => {}

  constructor(
    readonly myId: Buffer,
    readonly family: 4 | 6,
    private readonly now: () => number = Date.now,
  ) {
    this.kb = new KBucket<RoutingNode>({
      localNodeId: myId,
      numberOfNodesPerKBucket: BUCKET_SIZE,
      numberOfNodesToPing: BUCKET_SIZE,
      // keep the incumbent object (it carries our bookkeeping), k-bucket moves it to the tail
      arbiter: (incumbent) => incumbent,
    })
    this.kb.on('ping', (old, candidate) => this.bucketFull(old, candidate))
    // `version`: contacts added or removed, and bucket splits (they change which buckets `closest` visits).
    // A split shows no event, so k-bucket's split step is wrapped; without it, every full-bucket event counts.
    this.kb.on('added', () => {
      this.changes++
    })
    this.kb.on('removed', () => {
      this.changes++
    })
    const kbi = this.kb as unknown as { _split?: (...args: unknown[]) => unknown }
    const split = kbi._split
    if (typeof split === 'function') {
      kbi._split = (...args: unknown[]) => {
        this.changes++
        return split.apply(this.kb, args)
      }
    } else
      this.kb.on('ping', () => {
        this.changes++
      })
  }

  get size(): number {
    return this.kb.count()
  }

  /**
   * Bumped by every change that can alter `closest()` or the addresses it returns (a node added, removed, moved,
   * expired or revived); lets callers cache answers built from it.
   */
  get version(): number {
    return this.changes
  }

  get(id: Buffer): RoutingNode | undefined {
    return this.kb.get(id) ?? undefined
  }

  /** We received a message from this node (`replied`: a reply to one of our requests). */
  heard(id: Buffer, host: string, port: number, replied: boolean): RoutingNode | undefined {
    if (id.length !== HASH_LEN || id.equals(this.myId)) return undefined
    const t = this.now()
    let n = this.kb.get(id)
    if (n) {
      if (n.host !== host || n.port !== port) {
        // a node that changed address: trust the new one only once it answers us
        if (!replied && !isExpired(n) && isGood(n, t)) return n
        n.host = host
        n.port = port
        this.changes++
      }
      n.lastHeard = t
      if (replied) {
        n.lastReplied = t
        if (n.failures !== 0) this.changes++
        n.failures = 0
      }
      this.add(n, true) // moves it to the tail (most recently seen)
      return n
    }
    n = { id: Buffer.from(id), vectorClock: 0, host, port, family: this.family, lastHeard: t, lastReplied: replied ? t : 0, failures: 0 }
    this.add(n, true)
    return this.kb.get(id) ?? undefined
  }

  /** A node another node told us about (not confirmed): inserted only where there is room. */
  learned(id: Buffer, host: string, port: number): void {
    if (id.length !== HASH_LEN || id.equals(this.myId) || this.kb.get(id)) return
    this.add({ id: Buffer.from(id), vectorClock: 0, host, port, family: this.family, lastHeard: 0, lastReplied: 0, failures: 0 }, false)
  }

  private add(n: RoutingNode, confirmed: boolean): void {
    if (this.insideAdd) return
    this.insideAdd = true
    this.addConfirmed = confirmed
    try {
      this.kb.add(n)
    } finally {
      this.insideAdd = false
    }
  }

  private bucketFull(old: RoutingNode[], candidate: RoutingNode): void {
    if (!this.addConfirmed) return
    const expired = old.find(isExpired)
    if (expired) {
      this.kb.remove(expired.id)
      this.kb.add(candidate)
      return
    }
    const t = this.now()
    const dubious = old.find((n) => !isGood(n, t))
    if (!dubious) return
    this.replacements.push(candidate)
    if (this.replacements.length > 32) this.replacements.shift()
    this.onPingNeeded(dubious)
  }

  /** One of our requests to this node went unanswered after every attempt: it is expired (as in OpenDHT). */
  failed(id: Buffer): void {
    const n = this.kb.get(id)
    if (!n) return
    n.failures = Math.max(n.failures + 1, NODE_EXPIRE_FAILURES)
    this.changes++
    if (isExpired(n) && this.replacements.length > 0) {
      this.kb.remove(id)
      this.promoteReplacement()
    }
  }

  remove(id: Buffer): void {
    this.kb.remove(id)
  }

  private promoteReplacement(): void {
    while (this.replacements.length) {
      const c = this.replacements.pop()!
      if (this.kb.get(c.id)) continue
      const before = this.kb.count()
      this.add(c, false)
      if (this.kb.count() > before) return
    }
  }

  /** The n closest non-expired nodes to target, closest first. */
  closest(target: Buffer, n: number, opts: { goodOnly?: boolean } = {}): RoutingNode[] {
    const t = this.now()
    const all = this.kb.closest(target, n * 3 + BUCKET_SIZE)
    const out: RoutingNode[] = []
    for (const c of all) {
      if (isExpired(c)) continue
      if (opts.goodOnly && !isGood(c, t)) continue
      out.push(c)
      if (out.length >= n) break
    }
    return out.sort((a, b) => xorCmp(target, a.id, b.id))
  }

  all(): RoutingNode[] {
    return this.kb.toArray()
  }

  goodCount(): number {
    const t = this.now()
    return this.kb.toArray().filter((n) => isGood(n, t)).length
  }

  /** The leaf buckets, from the one farthest from our id to ours. */
  buckets(): BucketInfo[] {
    const out: BucketInfo[] = []
    const walk = (node: TreeNode, depth: number, prefix: Buffer) => {
      if (node.contacts) {
        const lastActive = node.contacts.reduce((m, c) => Math.max(m, c.lastHeard), 0)
        out.push({ depth, prefix, nodes: [...node.contacts], lastActive })
        return
      }
      const right = Buffer.from(prefix)
      right[depth >> 3]! |= 0x80 >> (depth & 7)
      // visit the side not holding our id first (the farther bucket)
      const ourBit = (this.myId[depth >> 3]! >> (7 - (depth & 7))) & 1
      const sides: Array<[TreeNode | null, Buffer]> = ourBit
        ? [
            [node.left, prefix],
            [node.right, right],
          ]
        : [
            [node.right, right],
            [node.left, prefix],
          ]
      for (const [child, p] of sides) if (child) walk(child, depth + 1, p)
    }
    walk((this.kb as unknown as { root: TreeNode }).root, 0, Buffer.alloc(HASH_LEN))
    return out
  }

  /** A random id inside a bucket's range (for maintenance searches). */
  static randomIdIn(b: BucketInfo): Buffer {
    return randomHashWithPrefix(b.prefix, b.depth)
  }
}
