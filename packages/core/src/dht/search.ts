/**
 * Iterative Kademlia search for one key in one address family, with OpenDHT's rules (search.h, dht.cpp):
 * keep the 14 closest nodes, at most 4 requests in flight, a node is synced when it gave us a token in the last
 * 10 minutes, the search is synced when its first 8 live nodes are; a get is done when those 8 answered it; puts go
 * to the first 8 synced nodes, listens to the first 4 (refreshed every 20 s); 25 bad nodes in a row expire it.
 */
import { xorCmp } from './infohash.js'
import { Field, type ParsedMessage, type Query, type WireNode } from './wire.js'
import { type DhtValue } from './value-shim.js'

export const SEARCH_NODES = 14
export const TARGET_NODES = 8
export const LISTEN_NODES = 4
export const MAX_IN_FLIGHT = 4
export const MAX_BAD_NODES = 25
export const TOKEN_VALIDITY_MS = 10 * 60_000
export const LISTEN_REFRESH_MS = 20_000
export const REANNOUNCE_MARGIN_MS = 10_000
/** a request unanswered this long (its first attempt) no longer holds the search back */
export const SLOW_AFTER_MS = 600

/** Re-announce a permanent value this long after announcing it: 10 s before it expires (half its life if shorter). */
export function reannounceDelay(expirationMs: number): number {
  return Math.max(expirationMs - REANNOUNCE_MARGIN_MS, expirationMs / 2)
}

export interface NodeRef {
  id: Buffer
  host: string
  port: number
  family: 4 | 6
}

/** What a search needs from its node (network, routing table, clock). */
export interface SearchHost {
  now(): number
  closestKnown(key: Buffer, family: 4 | 6, n: number): NodeRef[]
  sendFind(n: NodeRef, key: Buffer): Promise<ParsedMessage>
  sendGet(n: NodeRef, key: Buffer, query?: Query): Promise<ParsedMessage>
  sendPut(n: NodeRef, key: Buffer, packed: Buffer, createdSec: number | undefined, token: Buffer): Promise<ParsedMessage>
  sendRefresh(n: NodeRef, key: Buffer, vid: bigint, token: Buffer): Promise<ParsedMessage>
  sendListen(n: NodeRef, key: Buffer, token: Buffer, sid: number, query?: Query): Promise<ParsedMessage>
  /** nodes carried by a reply, already filtered and inserted into the routing table */
  replyNodes(msg: ParsedMessage, from: NodeRef): WireNode[]
  /** how long storage nodes keep a value of this type */
  expirationOf(type: number): number
}

export interface SearchGet {
  query?: Query
  start: number
  onValues(values: DhtValue[], from: NodeRef): void
  onDone(): void
  done?: boolean
}

export interface SearchPut {
  value: DhtValue
  packed: Buffer
  /** ms */
  created: number
  permanent: boolean
  /** called once with the number of nodes that acknowledged it */
  onDone?: (acks: number) => void
  acks: number
  done?: boolean
  /** when to announce again (permanent puts), ms */
  reannounceAt: number
}

export interface SearchListen {
  sid: number
  query?: Query
}

class SearchNode implements NodeRef {
  id: Buffer
  host: string
  port: number
  family: 4 | 6
  token?: Buffer
  tokenTime = 0
  lastGetReply = 0
  inFlight = false
  /** a request to it is late (its first attempt went unanswered): treated as bad until it answers, as OpenDHT's "candidate" */
  slow = false
  bad = false
  /** value id → ack time */
  acked = new Map<bigint, number>()
  putInFlight = new Set<bigint>()
  /** listen sid → last confirmed send time */
  listened = new Map<number, number>()
  listenInFlight = new Set<number>()

  constructor(r: NodeRef) {
    this.id = r.id
    this.host = r.host
    this.port = r.port
    this.family = r.family
  }
}

export class Search {
  readonly nodes: SearchNode[] = []
  private badInARow = 0
  readonly gets = new Set<SearchGet>()
  readonly puts = new Map<bigint, SearchPut>()
  readonly listens = new Map<number, SearchListen>()
  /** maintenance searches only want to be synced, then stop */
  findOnly = false
  private stepping = false
  private stepAgain = false
  stopped = false
  expired = false
  lastActivity: number

  constructor(
    readonly key: Buffer,
    readonly family: 4 | 6,
    private readonly host: SearchHost,
  ) {
    this.lastActivity = host.now()
    this.refill()
  }

  get idle(): boolean {
    return this.gets.size === 0 && this.puts.size === 0 && this.listens.size === 0
  }

  private synced(n: SearchNode, now: number): boolean {
    return !n.bad && !n.slow && n.token !== undefined && now - n.tokenTime < TOKEN_VALIDITY_MS
  }

  private live(): SearchNode[] {
    return this.nodes.filter((n) => !n.bad && !n.slow)
  }

  /** first TARGET_NODES live nodes all synced */
  isSynced(now = this.host.now()): boolean {
    const first = this.live().slice(0, TARGET_NODES)
    return first.length > 0 && first.every((n) => this.synced(n, now))
  }

  insert(r: NodeRef): boolean {
    if (r.family !== this.family) return false
    const existing = this.nodes.find((n) => n.id.equals(r.id))
    if (existing) return false
    const far = this.nodes.length >= SEARCH_NODES ? this.nodes[this.nodes.length - 1]! : undefined
    if (far && xorCmp(this.key, r.id, far.id) >= 0 && !this.nodes.some((n) => n.bad)) return false
    const sn = new SearchNode(r)
    let i = this.nodes.findIndex((n) => xorCmp(this.key, r.id, n.id) < 0)
    if (i < 0) i = this.nodes.length
    this.nodes.splice(i, 0, sn)
    while (this.nodes.length > SEARCH_NODES) {
      // drop a bad node first, else the farthest one
      let j = -1
      for (let k = this.nodes.length - 1; k >= 0; k--)
        if (this.nodes[k]!.bad && !this.nodes[k]!.inFlight) {
          j = k
          break
        }
      if (j < 0) j = this.nodes.length - 1
      this.nodes.splice(j, 1)
    }
    return this.nodes.includes(sn)
  }

  /** Seed from the routing table (on creation, and when the search ran out of live nodes). */
  refill(): void {
    for (const r of this.host.closestKnown(this.key, this.family, SEARCH_NODES)) this.insert(r)
    if (this.live().length > 0) this.expired = false
  }

  addGet(g: SearchGet): void {
    this.gets.add(g)
    this.lastActivity = this.host.now()
    this.step()
  }

  addPut(p: SearchPut): void {
    const old = this.puts.get(p.value.id)
    if (old && !old.done) old.onDone?.(old.acks)
    this.puts.set(p.value.id, p)
    for (const n of this.nodes) {
      n.acked.delete(p.value.id)
    }
    this.lastActivity = this.host.now()
    this.step()
  }

  cancelPut(vid: bigint): void {
    const p = this.puts.get(vid)
    if (!p) return
    this.puts.delete(vid)
    if (!p.done) {
      p.done = true
      p.onDone?.(p.acks)
    }
  }

  addListen(l: SearchListen): void {
    this.listens.set(l.sid, l)
    this.lastActivity = this.host.now()
    this.step()
  }

  removeListen(sid: number): void {
    this.listens.delete(sid)
    for (const n of this.nodes) {
      n.listened.delete(sid)
      n.listenInFlight.delete(sid)
    }
  }

  /**
   * Did our listen `sid` go to this node (same id, address and port)? Sent or confirmed: storage nodes push the
   * values they hold before they answer the listen.
   */
  listenedBy(sid: number, id: Uint8Array, host: string, port: number): boolean {
    for (const n of this.nodes) {
      if (n.port === port && n.host === host && n.id.equals(id)) return n.listened.has(sid) || n.listenInFlight.has(sid)
    }
    return false
  }

  stop(): void {
    this.stopped = true
    for (const g of this.gets) this.finishGet(g)
    for (const p of this.puts.values()) this.finishPut(p)
    this.puts.clear()
    this.listens.clear()
  }

  private finishGet(g: SearchGet): void {
    if (g.done) return
    g.done = true
    this.gets.delete(g)
    g.onDone()
  }

  private finishPut(p: SearchPut): void {
    if (p.done) return
    p.done = true
    p.onDone?.(p.acks)
  }

  /** Periodic housekeeping (every second): re-listen, re-announce, token refresh, refill. */
  tick(): void {
    if (this.stopped) return
    const now = this.host.now()
    for (const p of this.puts.values()) {
      if (!p.permanent && now >= p.created + this.host.expirationOf(p.value.type)) {
        this.puts.delete(p.value.id)
        this.finishPut(p)
      } else if (p.permanent && now >= p.reannounceAt) {
        p.reannounceAt = now + reannounceDelay(this.host.expirationOf(p.value.type))
        p.created = now
        for (const n of this.nodes) n.acked.delete(p.value.id)
      }
    }
    if (this.live().length < TARGET_NODES) this.refill()
    this.step()
  }

  /** Send whatever requests are due. Re-entrant calls are coalesced. */
  step(): void {
    if (this.stopped) return
    if (this.stepping) {
      this.stepAgain = true
      return
    }
    this.stepping = true
    try {
      do {
        this.stepAgain = false
        this.doStep()
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- doStep() can call step() (stepAgain) and stop()
      } while (this.stepAgain && !this.stopped)
    } finally {
      this.stepping = false
    }
  }

  private doStep(): void {
    const now = this.host.now()
    const pendingGets = [...this.gets]
    const oldestGet = pendingGets.reduce((m, g) => Math.min(m, g.start), Infinity)
    let inFlight = this.nodes.reduce((c, n) => c + (n.inFlight && !n.slow ? 1 : 0), 0)
    const live = this.live()
    const first8 = live.slice(0, TARGET_NODES)

    // 1. get/find requests: unsynced nodes among the 14, and the first 8 for gets they have not answered yet
    for (const n of this.nodes) {
      if (inFlight >= MAX_IN_FLIGHT) break
      if (n.bad || n.inFlight) continue
      const needSync = !this.synced(n, now)
      const needGet = pendingGets.length > 0 && first8.includes(n) && n.lastGetReply < oldestGet
      if (!needSync && !needGet) continue
      inFlight++
      this.request(n, pendingGets.length > 0)
    }

    const synced = this.isSynced(now)
    const exhausted = inFlight === 0 && !this.nodes.some((n) => !n.bad && !n.slow && !this.synced(n, now))

    // 2. gets done when the first 8 answered them (or nothing is left to ask)
    for (const g of pendingGets) {
      const answered = first8.length > 0 && first8.every((n) => n.lastGetReply >= g.start)
      if ((synced && answered) || (exhausted && first8.every((n) => n.lastGetReply >= g.start)) || (live.length === 0 && inFlight === 0 && !this.nodes.some((n) => n.inFlight))) {
        this.finishGet(g)
      }
    }

    if (synced) {
      // 3. puts to the first 8 synced nodes
      for (const p of this.puts.values()) {
        for (const n of first8) {
          if (!n.acked.has(p.value.id) && !n.putInFlight.has(p.value.id)) this.announce(n, p)
        }
        if (!p.done && first8.every((n) => n.acked.has(p.value.id))) this.finishPut(p)
      }
      // 4. listens on the first 4
      for (const l of this.listens.values()) {
        for (const n of first8.slice(0, LISTEN_NODES)) {
          const last = n.listened.get(l.sid) ?? 0
          if (!n.listenInFlight.has(l.sid) && now - last >= LISTEN_REFRESH_MS) this.sendListen(n, l)
        }
      }
    }
    if (live.length === 0 && inFlight === 0) {
      for (const p of this.puts.values()) this.finishPut(p)
      if (this.badInARow >= MAX_BAD_NODES || this.nodes.length === 0) this.expired = true
    } else if (exhausted) {
      for (const p of this.puts.values()) {
        if (!p.done && first8.every((n) => n.acked.has(p.value.id) || n.bad)) this.finishPut(p)
      }
    }
  }

  private request(n: SearchNode, isGet: boolean): void {
    n.inFlight = true
    const sentAt = this.host.now()
    const query = isGet ? this.mergedQuery() : undefined
    const p = isGet ? this.host.sendGet(n, this.key, query) : this.host.sendFind(n, this.key)
    const slowTimer = setTimeout(() => {
      if (!n.inFlight || this.stopped) return
      n.slow = true
      this.step()
    }, SLOW_AFTER_MS)
    p.then(
      (msg) => {
        clearTimeout(slowTimer)
        n.inFlight = false
        n.slow = false
        if (this.stopped) return
        this.badInARow = 0
        this.lastActivity = this.host.now()
        if (!msg.token || msg.token.length === 0) {
          // OpenDHT ignores the content of a reply without a token and blacklists the sender
          n.bad = true
          this.step()
          return
        }
        n.token = msg.token
        n.tokenTime = this.host.now()
        if (isGet) n.lastGetReply = sentAt
        for (const wn of this.host.replyNodes(msg, n)) this.insert(wn)
        if (isGet && msg.values.length > 0) {
          for (const g of [...this.gets]) {
            if (g.start > sentAt + 1) continue
            const vals = msg.values
            if (vals.length) g.onValues(vals, n)
          }
        }
        this.step()
      },
      () => {
        clearTimeout(slowTimer)
        n.inFlight = false
        n.slow = false
        if (this.stopped) return
        n.bad = true
        this.badInARow++
        this.step()
      },
    )
  }

  /** One get query that serves every pending get: a common WHERE if all share it, else none (filter locally). */
  private mergedQuery(): Query | undefined {
    let q: Query | undefined
    let first = true
    for (const g of this.gets) {
      const gq = g.query && g.query.where.length ? { select: [], where: g.query.where } : undefined
      if (first) {
        q = gq
        first = false
        continue
      }
      if (JSON.stringify(q, big) !== JSON.stringify(gq, big)) return undefined
    }
    return q
  }

  private announce(n: SearchNode, p: SearchPut): void {
    const vid = p.value.id
    n.putInFlight.add(vid)
    const now = this.host.now()
    const createdSec = p.created < now - 1000 ? Math.floor(p.created / 1000) : undefined
    const send = async (): Promise<ParsedMessage> => {
      if (p.permanent) {
        // OpenDHT's probe: SELECT id,seq WHERE id=vid; refresh when the node already has this seq
        const probe = await this.host.sendGet(n, this.key, { select: [Field.Id, Field.SeqNum], where: [{ field: Field.Id, value: vid }] })
        if (probe.token) {
          n.token = probe.token
          n.tokenTime = this.host.now()
        }
        const have =
          (probe.fields ?? []).some((r) => r.get(Field.Id) === vid && r.get(Field.SeqNum) === BigInt(p.value.seq ?? 0)) ||
          probe.values.some((v) => v.id === vid && (v.seq ?? 0) === (p.value.seq ?? 0))
        if (have) return this.host.sendRefresh(n, this.key, vid, n.token!)
      }
      return this.host.sendPut(n, this.key, p.packed, createdSec, n.token!)
    }
    send().then(
      () => {
        n.putInFlight.delete(vid)
        if (this.stopped || this.puts.get(vid) !== p) return
        n.acked.set(vid, this.host.now())
        p.acks++
        this.step()
      },
      () => {
        n.putInFlight.delete(vid)
        if (this.stopped) return
        // a refused put (e.g. 401 after a token rotation) makes the node unsynced: it will be re-asked for a token
        n.token = undefined
        n.acked.delete(vid)
        n.bad = true
        this.badInARow++
        this.step()
      },
    )
  }

  private sendListen(n: SearchNode, l: SearchListen): void {
    n.listenInFlight.add(l.sid)
    this.host.sendListen(n, this.key, n.token!, l.sid, l.query).then(
      (msg) => {
        n.listenInFlight.delete(l.sid)
        if (this.stopped) return
        if (msg.token && msg.token.length) {
          n.token = msg.token
          n.tokenTime = this.host.now()
        }
        n.listened.set(l.sid, this.host.now())
      },
      () => {
        n.listenInFlight.delete(l.sid)
        if (this.stopped) return
        n.token = undefined
        n.bad = true
        this.badInARow++
        this.step()
      },
    )
  }
}

function big(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString()
  if (Buffer.isBuffer(v)) return v.toString('hex')
  if (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer') return JSON.stringify(v)
  return v
}
