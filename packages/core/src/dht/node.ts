/**
 * DhtNode: an OpenDHT-wire-compatible Kademlia node over UDP (IPv4 and IPv6 sockets, one routing table each).
 * Answers every query (ping, find, get, put, refresh, listen, update), stores values with quotas, runs iterative
 * searches for get/put/listen, bootstraps from host:port, persists its id and known nodes, and optionally finds
 * peers on the LAN by multicast. See README.md in this folder for the design.
 */
import dgram from 'node:dgram'
import { EventEmitter } from 'node:events'
import { lookup } from 'node:dns/promises'
import dns from 'node:dns'
import { isIP } from 'node:net'
import { randomBytes } from 'node:crypto'
import { DhtnetError, throwIfAborted } from '../errors.js'
import { toLogger, type Logger, type LoggerLike } from '../util/log.js'
import { infoHash, randomHash, hashFromHex, xorCmp } from './infohash.js'
import {
  decodeMessage,
  WireEncoder,
  packNodes,
  unpackNodes,
  ipToBytes,
  isMartian,
  isLoopback,
  WANT4,
  WANT6,
  SEND_NODES,
  ERR_NON_AUTHORITATIVE,
  ERR_UNAUTHORIZED,
  ERR_NOT_FOUND,
  type ParsedMessage,
  type Query,
  type WireNode,
} from './wire.js'
import { MsgWriter } from './msgpack-writer.js'
import { TokenManager } from './tokens.js'
import { RateLimiter, type RateLimitOptions } from './rate-limiter.js'
import { Reassembler } from './fragments.js'
import { RoutingTable, isGood, type RoutingNode, type BucketInfo } from './routing.js'
import { Storage, matchesQuery, type StorageLimits, type StoredValue } from './storage.js'
import { ListenCache, type ListenCacheLimits, type ListenCallback, type LocalListen } from './local-listens.js'
import { Transactions, type PendingRequest } from './transactions.js'
import { Search, SEARCH_NODES, TARGET_NODES, reannounceDelay, type NodeRef, type SearchHost } from './search.js'
import { PeerDiscovery } from './discovery.js'
import { loadState, saveState, type PersistedNode } from './persist.js'
import { type DhtValue, packValue, valueTypeExpirationMs } from './value-shim.js'

export const DEFAULT_PORT = 4222
const LISTENER_EXPIRE_MS = 10 * 60_000
const MAX_LISTENERS_PER_KEY = 1024
const MAX_LISTENERS_TOTAL = 65536
const NODES_CACHE_SIZE = 8
const NO_FIELDS: number[] = []
/** shared empty buffer (never written to) */
const NO_BYTES = Buffer.alloc(0)

function sameHash(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

export interface DhtNodeOptions {
  /** UDP port for both families; 0 = ephemeral (default) */
  port?: number
  /** IPv4 bind address (default '0.0.0.0'); false = no IPv4 */
  bindIpv4?: string | false
  /** IPv6 bind address (default '::'); false = no IPv6 */
  bindIpv6?: string | false
  /** network id (0 = the public OpenDHT network) */
  network?: number
  /** `host[:port]` strings (default port 4222), DNS names resolved */
  bootstrap?: string[]
  /** file keeping the node id and known nodes across restarts */
  persistPath?: string
  /** LAN discovery by multicast (default false) */
  discovery?: boolean
  /** multicast interface for discovery (e.g. '127.0.0.1' to stay on this machine) */
  discoveryInterface4?: string
  discoveryInterface6?: string
  /** multicast port for discovery (default 8888) */
  discoveryPort?: number
  /** 40-hex key id of the node's identity: node id = SHA-1("node:" + id), as OpenDHT */
  identityId?: string
  /** client mode: announce `s:true` so others keep us out of their routing tables */
  isClient?: boolean
  rateLimit?: RateLimitOptions
  storageLimits?: StorageLimits
  /**
   * signature verifications of values put by others, per second per source IP and overall (defaults 128 and 1024;
   * -1 = unlimited); values beyond are dropped unverified (`stats().verifyDrops`)
   */
  verifyLimit?: RateLimitOptions
  /** what each of our listens remembers (defaults: 4,096 values, 4 MiB) */
  listenCache?: ListenCacheLimits
  /** user agent `v` (default "RNG1", as OpenDHT 2.4) */
  userAgent?: string
  logger?: LoggerLike
  /** value lifetime per type (default: OpenDHT's built-in types; for tests and private networks) */
  valueExpirationMs?: (type: number) => number
  /** request attempts and first retry wait (defaults 3 and 500 ms, as OpenDHT) */
  requestAttempts?: number
  requestFirstWaitMs?: number
}

export interface GetOptions {
  signal?: AbortSignal
  /** local filter applied to every value */
  filter?: (v: DhtValue) => boolean
  /** WHERE filters sent to the storage nodes (and applied locally) */
  query?: Query
  /** called with each batch of new values as they arrive, with the address they came from (undefined: our own) */
  onValues?: (values: DhtValue[], from?: string) => void
}

export interface PutOptions {
  signal?: AbortSignal
  /** keep announcing (refresh) until cancelPut */
  permanent?: boolean
  /** creation time (ms), default now */
  created?: number
}

export interface ListenOptions {
  filter?: (v: DhtValue) => boolean
  query?: Query
}

export type { ListenCallback, ListenCacheLimits }

export interface ListenHandle {
  cancel(): void
}

export interface DhtStats {
  nodes4: number
  nodes6: number
  good4: number
  good6: number
  buckets: number[]
  buckets6: number[]
  values: number
  keys: number
  storedBytes: number
  listenersRemote: number
  listens: number
  searches: number
  datagramsIn: number
  requestsIn: number
  requestsOut: number
  repliesIn: number
  rateLimitedDrops: number
  malformedDrops: number
  pendingRequests: number
  partialMessages: number
  /** signed values refused for their owner key (not RSA with e = 65537 and 2048–4096 bits) */
  rejectedKeys: number
  /** signed values dropped unverified: their source IP (or everyone) was over the verification budget */
  verifyDrops: number
  /** signed values whose signature did not verify */
  badSignatures: number
  /** listen pushes refused: to a socket id we have not given that node (or none), or from a node our listen did not go to */
  ignoredPushes: number
  /** values our listens forgot to stay within their cache bounds */
  listenCacheEvictions: number
}

export interface RoutingEntry {
  family: 4 | 6
  buckets: Array<{ depth: number; prefix: string; nodes: Array<{ id: string; host: string; port: number; good: boolean; lastHeard: number; lastReplied: number }> }>
}

interface RemoteListener {
  id: Buffer
  host: string
  port: number
  family: 4 | 6
  sid: number
  query?: Query
  version: number
  time: number
}

function keyOf(key: Buffer | string): Buffer {
  if (Buffer.isBuffer(key)) {
    if (key.length !== 20) throw new DhtnetError('BAD_KEY', `a DHT key is 20 bytes, got ${key.length}`, { hint: 'hash longer keys with DhtNode.infoHash()' })
    return key
  }
  return hashFromHex(key) ?? infoHash(key)
}

function parseHostPort(s: string): { host: string; port: number } {
  const t = s.trim()
  let host = t,
    port = DEFAULT_PORT
  const m6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t)
  if (m6) {
    host = m6[1]!
    if (m6[2]) port = Number(m6[2])
  } else if ((t.match(/:/g) ?? []).length === 1) {
    const i = t.indexOf(':')
    host = t.slice(0, i)
    port = Number(t.slice(i + 1))
  }
  if (!host || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new DhtnetError('BAD_ADDRESS', `not a host[:port] address: '${s}'`, { hint: 'use e.g. bootstrap.jami.net:4222, 10.0.0.1:4222 or [::1]:4222' })
  }
  return { host, port }
}

export class DhtNode extends EventEmitter {
  /** OpenDHT InfoHash::get: SHA-1 of text or bytes. */
  static infoHash(data: string | Uint8Array): Buffer {
    return infoHash(data)
  }

  private readonly opts: DhtNodeOptions
  private id: Buffer
  private encoder: WireEncoder
  private sock4?: dgram.Socket
  private sock6?: dgram.Socket
  private tables: { 4: RoutingTable; 6: RoutingTable }
  private readonly tokens = new TokenManager()
  private readonly limiter: RateLimiter
  private readonly reassembler = new Reassembler()
  private readonly storage: Storage
  private txs: Transactions
  /** our listens by search socket id (random: a push must name one, and come from a node the listen went to) */
  private readonly listenSockets = new Map<number, { listen: LocalListen; family: 4 | 6 }>()
  private listenCacheEvictions = 0
  private readonly remoteListeners = new Map<string, Map<string, RemoteListener>>()
  private remoteListenerCount = 0
  private readonly listens = new Set<LocalListen>()
  private readonly searches = new Map<string, Search>()
  private readonly localPuts = new Map<string, Map<bigint, { value: DhtValue; permanent: boolean }>>()
  private tick?: NodeJS.Timeout
  private discovery?: PeerDiscovery
  private bootstrapAddrs: Array<{ host: string; port: number; family: 4 | 6 }> = []
  private nextBootstrap = 0
  private bootstrapDelay = 10_000
  private nextMaintenance = 0
  private nextPersist = 0
  private nextExpire = 0
  private started = false
  private stopped = false
  private wasConnected = false
  private readonly counters = { datagramsIn: 0, requestsIn: 0, requestsOut: 0, repliesIn: 0, malformed: 0, ignoredPushes: 0 }
  private readonly log: Logger
  private readonly network: number
  private publicAddress: { 4?: string; 6?: string } = {}
  private readonly expirationOf: (type: number) => number
  /** recent `nodesFor` answers, valid while both routing tables keep their version */
  private readonly nodesCache: {
    t4?: RoutingTable
    t6?: RoutingTable
    v4: number
    v6: number
    entries: Array<{ target: Buffer; want: number; nodes: { n4: Buffer; n6: Buffer } }>
  } = { v4: -1, v6: -1, entries: [] }

  constructor(opts: DhtNodeOptions = {}) {
    super()
    this.opts = opts
    this.network = opts.network ?? 0
    if (!Number.isInteger(this.network) || this.network < 0 || this.network > 0xffffffff) {
      throw new DhtnetError('BAD_OPTION', `network id must be a uint32, got ${opts.network}`)
    }
    if (opts.identityId !== undefined && !/^[0-9a-fA-F]{40}$/.test(opts.identityId)) {
      throw new DhtnetError('BAD_OPTION', `identityId must be a 40-hex key id, got '${opts.identityId}'`)
    }
    this.log = toLogger(opts.logger)
    this.id = opts.identityId ? infoHash(`node:${opts.identityId.toLowerCase()}`) : randomHash()
    this.encoder = this.makeEncoder()
    this.tables = { 4: new RoutingTable(this.id, 4), 6: new RoutingTable(this.id, 6) }
    this.limiter = new RateLimiter(opts.rateLimit)
    this.expirationOf = opts.valueExpirationMs ?? valueTypeExpirationMs
    this.storage = new Storage(opts.storageLimits, this.expirationOf, opts.verifyLimit ? { verifyLimit: opts.verifyLimit } : {})
    this.txs = this.makeTransactions()
  }

  private makeEncoder(): WireEncoder {
    return new WireEncoder({ myId: this.id, userAgent: this.opts.userAgent ?? 'RNG1', network: this.network, isClient: !!this.opts.isClient })
  }

  private makeTransactions(): Transactions {
    return new Transactions(
      (r) => this.sendRequestDatagrams(r),
      {
        ...(this.opts.requestAttempts !== undefined ? { maxAttempts: this.opts.requestAttempts } : {}),
        ...(this.opts.requestFirstWaitMs !== undefined ? { firstWaitMs: this.opts.requestFirstWaitMs } : {}),
      },
      (r) => this.requestTimedOut(r),
    )
  }

  private setId(id: Buffer): void {
    this.id = id
    this.encoder = this.makeEncoder()
    this.tables = { 4: new RoutingTable(this.id, 4), 6: new RoutingTable(this.id, 6) }
    this.setupTables()
  }

  private setupTables(): void {
    for (const f of [4, 6] as const) {
      this.tables[f].onPingNeeded = (n) => this.confirmNode(n)
    }
  }

  /** 40-hex node id */
  get nodeId(): string {
    return this.id.toString('hex')
  }

  get nodeIdBytes(): Buffer {
    return Buffer.from(this.id)
  }

  /** bound UDP port (IPv4 socket's, else IPv6's) */
  get port(): number {
    return this.sock4?.address().port ?? this.sock6?.address().port ?? 0
  }

  get port6(): number {
    return this.sock6?.address().port ?? 0
  }

  get isRunning(): boolean {
    return this.started && !this.stopped
  }

  // ------------------------------------------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    if (this.started) throw new DhtnetError('ALREADY_STARTED', 'this DHT node was already started')
    this.started = true
    let saved: PersistedNode[] = []
    if (this.opts.persistPath) {
      const st = await loadState(this.opts.persistPath)
      if (st) {
        if (!this.opts.identityId) this.setId(Buffer.from(st.nodeId, 'hex'))
        saved = st.nodes
      }
    }
    this.setupTables()
    const port = this.opts.port ?? 0
    const bind4 = this.opts.bindIpv4 === undefined ? '0.0.0.0' : this.opts.bindIpv4
    const bind6 = this.opts.bindIpv6 === undefined ? '::' : this.opts.bindIpv6
    const errors: string[] = []
    if (bind4 !== false) {
      try {
        this.sock4 = await this.openSocket(4, bind4, port)
      } catch (err) {
        errors.push(`IPv4 ${bind4}:${port}: ${(err as Error).message}`)
      }
    }
    if (bind6 !== false) {
      // same port as IPv4 when the caller asked for an ephemeral one, so one port number serves both
      const p6 = port === 0 && this.sock4 ? this.sock4.address().port : port
      try {
        this.sock6 = await this.openSocket(6, bind6, p6)
      } catch (err) {
        if (p6 !== port) {
          try {
            this.sock6 = await this.openSocket(6, bind6, port)
          } catch (err2) {
            errors.push(`IPv6 [${bind6}]:${port}: ${(err2 as Error).message}`)
          }
        } else errors.push(`IPv6 [${bind6}]:${port}: ${(err as Error).message}`)
      }
    }
    if (!this.sock4 && !this.sock6) {
      this.started = false
      throw new DhtnetError('BIND_FAILED', `cannot open a UDP socket for the DHT: ${errors.join('; ')}`, {
        hint: 'choose another port (-p), or check the bind addresses',
      })
    }
    for (const e of errors) this.log('warn', `DHT: ${e} (continuing with the other family)`)
    this.tick = setInterval(() => this.onTick(), 1000)
    // rejoin from the cache: one ping each, replies fill the routing table
    for (const n of saved) {
      const fam = n.host.includes(':') ? 6 : 4
      this.tables[fam].learned(Buffer.from(n.id, 'hex'), n.host, n.port)
      this.pingNode(n.host, n.port, fam).catch(() => {})
    }
    if (this.opts.discovery) {
      this.discovery = new PeerDiscovery({
        nodeId: this.id,
        network: this.network,
        ...(this.sock4 ? { port4: this.sock4.address().port } : {}),
        ...(this.sock6 ? { port6: this.sock6.address().port } : {}),
        ...(this.opts.discoveryPort !== undefined ? { port: this.opts.discoveryPort } : {}),
        ...(this.opts.discoveryInterface4 !== undefined ? { interface4: this.opts.discoveryInterface4 } : {}),
        ...(this.opts.discoveryInterface6 !== undefined ? { interface6: this.opts.discoveryInterface6 } : {}),
        onPeer: (id, host, p, fam) => {
          if (this.tables[fam].get(id)) return
          this.log('debug', `DHT: discovered ${id.toString('hex')} at ${host}:${p}`)
          this.pingNode(host, p, fam).catch(() => {})
        },
        log: (level, m) => this.log(level, `DHT: ${m}`),
      })
      await this.discovery.start()
    }
    for (const b of this.opts.bootstrap ?? []) {
      this.bootstrap(b).catch((err) => this.log('warn', `DHT: bootstrap ${b}: ${(err as Error).message}`))
    }
  }

  private openSocket(family: 4 | 6, address: string, port: number): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      // dgram resolves the address of every send through `lookup`; dns.lookup answers an IP literal on the next
      // tick, which costs a tick per datagram: once bound, an IP literal is answered at once (same answer)
      let bound = false
      const sendLookup: NonNullable<dgram.SocketOptions['lookup']> = (host, opts, cb) => {
        const f = bound ? isIP(host) : 0
        if (f) cb(null, host, f)
        else dns.lookup(host, opts, cb)
      }
      const sock = dgram.createSocket(family === 4 ? { type: 'udp4', lookup: sendLookup } : { type: 'udp6', ipv6Only: true, lookup: sendLookup })
      const onError = (err: Error) => {
        try {
          sock.close()
        } catch {
          /* not open */
        }
        reject(err)
      }
      sock.once('error', onError)
      sock.bind(port, address, () => {
        bound = true
        sock.off('error', onError)
        sock.on('error', (err) => this.log('warn', `DHT: IPv${family} socket error: ${err.message}`))
        sock.on('message', (buf, rinfo) => this.onDatagram(buf, rinfo.address, rinfo.port, family))
        try {
          sock.setRecvBufferSize(1 << 20)
          sock.setSendBufferSize(1 << 20)
        } catch {
          /* not critical */
        }
        resolve(sock)
      })
    })
  }

  async stop(): Promise<void> {
    if (!this.started || this.stopped) return
    this.stopped = true
    clearInterval(this.tick)
    for (const s of this.searches.values()) s.stop()
    this.searches.clear()
    this.txs.close()
    for (const l of this.listens) l.cancelled = true
    this.listens.clear()
    this.listenSockets.clear()
    this.reassembler.clear()
    if (this.opts.persistPath) {
      await this.persist().catch((err) => this.log('warn', `DHT: ${(err as Error).message}`))
    }
    await this.discovery?.stop()
    const sockets = [this.sock4, this.sock6].filter((s) => s !== undefined)
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve())
            } catch {
              resolve()
            }
          }),
      ),
    )
    this.sock4 = this.sock6 = undefined
  }

  private async persist(): Promise<void> {
    const nodes: PersistedNode[] = []
    for (const f of [4, 6] as const) {
      const all = this.tables[f].all().filter((n) => n.failures < 3)
      all.sort((a, b) => b.lastReplied - a.lastReplied)
      for (const n of all.slice(0, 256)) nodes.push({ id: n.id.toString('hex'), host: n.host, port: n.port })
    }
    await saveState(this.opts.persistPath!, { version: 1, nodeId: this.nodeId, savedAt: Date.now(), nodes })
  }

  // ------------------------------------------------------------------------------------------------ sending

  private sockFor(family: 4 | 6): dgram.Socket | undefined {
    return family === 4 ? this.sock4 : this.sock6
  }

  private sendRaw(family: 4 | 6, host: string, port: number, buf: Buffer): void {
    const s = this.sockFor(family)
    if (!s || this.stopped) return
    try {
      // the completion callback costs a closure and a tick per datagram: only a host name needs it (a failed lookup
      // is only reported there); a send error to an IP literal reaches the socket's 'error' handler
      if (!isIP(host)) {
        s.send(buf, port, host, (err) => {
          if (err) this.log('debug', `DHT: send to ${host}:${port} failed: ${err.message}`)
        })
      } else s.send(buf, port, host)
    } catch (err) {
      this.log('debug', `DHT: send to ${host}:${port} failed: ${(err as Error).message}`)
    }
  }

  private sendRequestDatagrams(r: PendingRequest): void {
    this.counters.requestsOut++
    this.sendRaw(r.family, r.host, r.port, r.msg)
    for (const p of r.parts) this.sendRaw(r.family, r.host, r.port, p)
  }

  private requestTimedOut(r: PendingRequest): void {
    const n = this.tables[r.family].all().find((x) => x.host === r.host && x.port === r.port)
    if (n) this.tables[r.family].failed(n.id)
  }

  private request(n: { host: string; port: number; family: 4 | 6 }, kind: string, build: (tid: number) => Buffer | { msg: Buffer; parts: Buffer[] }): Promise<ParsedMessage> {
    if (this.stopped || !this.started) return Promise.reject(new DhtnetError('DHT_STOPPED', 'the DHT node is not running'))
    if (!this.sockFor(n.family)) return Promise.reject(new DhtnetError('NO_SOCKET', `no IPv${n.family} socket`))
    const tid = this.newTid()
    const out = build(tid)
    const { msg, parts } = Buffer.isBuffer(out) ? { msg: out, parts: [] } : out
    return this.txs.start(tid, n.host, n.port, n.family, kind, msg, parts)
  }

  private familyOf(host: string): 4 | 6 {
    return host.includes(':') ? 6 : 4
  }

  private sa(host: string): Buffer {
    return ipToBytes(host) ?? Buffer.alloc(4)
  }

  // ------------------------------------------------------------------------------------------------ receiving

  private onDatagram(buf: Buffer, host: string, port: number, family: 4 | 6): void {
    try {
      this.handleDatagram(buf, host, port, family)
    } catch (err) {
      // never let one datagram hurt the node
      this.counters.malformed++
      this.log('debug', `DHT: error handling a datagram from ${host}:${port}: ${(err as Error).message}`)
    }
  }

  private handleDatagram(buf: Buffer, host: string, port: number, family: 4 | 6): void {
    if (this.stopped) return
    this.counters.datagramsIn++
    if (isMartian(host, port)) return
    let msg: ParsedMessage
    try {
      msg = decodeMessage(buf)
    } catch {
      this.counters.malformed++
      return
    }
    if (msg.network !== this.network) return
    if (msg.kind === 'fragment') {
      const pkey = `${host}|${port}|${msg.tid}`
      if (!this.reassembler.has(pkey) && !this.limiter.allow(host)) return
      const done = msg.fragments && this.reassembler.fragment(pkey, msg.fragments)
      if (done) this.process(done, host, port, family)
      return
    }
    if (!msg.id || sameHash(msg.id, this.id)) return
    const isRequest = msg.kind !== 'reply' && msg.kind !== 'error' && msg.kind !== 'valueUpdate'
    if (!isRequest && !this.txs.match(msg.tid, host, port)) {
      // not the answer to a request of ours: a listen push (or a late reply), rate-limited like a request and taken
      // only from a node our listen went to, before any reassembly or decoding of what it carries
      if (!this.limiter.allow(host)) return
      if (!this.pushAllowed(msg.tid, msg.id, host, port, family, msg.kind !== 'reply')) return
    }
    if (msg.valueSizes.size > 0) {
      const pkey = `${host}|${port}|${msg.tid}`
      if (isRequest && !this.reassembler.has(pkey) && !this.limiter.allow(host)) return
      if (msg.kind === 'update' && !(msg.socketId !== undefined && this.pushAllowed(msg.socketId, msg.id, host, port, family, true))) {
        // a push we would ignore: not worth reassembling (answered like any update, see process())
        if (msg.socketId === undefined) this.counters.ignoredPushes++
        this.sendRaw(family, host, port, this.encoder.listenConfirm(msg.tid, this.sa(host)))
        return
      }
      const done = this.reassembler.header(pkey, msg)
      if (done) this.process(done, host, port, family)
      return
    }
    if (isRequest && !this.limiter.allow(host)) return
    this.process(msg, host, port, family)
  }

  private process(msg: ParsedMessage, host: string, port: number, family: 4 | 6): void {
    const from: NodeRef = { id: msg.id!, host, port, family }
    const table = this.tables[family]
    if (msg.kind === 'reply' || msg.kind === 'error') {
      this.counters.repliesIn++
      const r = this.txs.match(msg.tid, host, port)
      if (r) {
        if (!msg.isClient) table.heard(msg.id!, host, port, true)
        if (!this.wasConnected) this.checkConnected()
        if (msg.sa) this.publicAddress[msg.sa.length === 4 ? 4 : 6] = msg.sa.toString('hex')
        this.txs.complete(r, msg)
        return
      }
      // legacy listener push: a reply whose t is one of our listen socket ids (checked in handleDatagram)
      const s = this.listenSockets.get(msg.tid)
      if (s && msg.kind === 'reply') {
        if (!msg.isClient) table.heard(msg.id!, host, port, false)
        this.onListenUpdate(s.listen, msg, from)
      }
      return
    }
    if (msg.kind === 'valueUpdate') {
      const s = this.listenSockets.get(msg.tid)
      if (s) this.onListenUpdate(s.listen, msg, from)
      return
    }
    // a query
    this.counters.requestsIn++
    if (!msg.isClient) {
      const n = table.heard(msg.id!, host, port, false)
      // a node we never heard from: ping it so it can become good
      if (n && n.lastReplied === 0 && msg.kind !== 'ping') this.confirmNode(n)
    }
    switch (msg.kind) {
      case 'ping':
        this.sendRaw(family, host, port, this.encoder.pong(msg.tid, this.sa(host)))
        break
      case 'find': {
        const target = msg.target
        if (!target) return this.sendError(from, msg.tid, ERR_NON_AUTHORITATIVE, 'Find with no target')
        const { n4, n6 } = this.nodesFor(target, msg.want, family)
        this.sendOut(family, host, port, this.encoder.nodesValues(msg.tid, this.sa(host), n4, n6, this.tokens.make(host, port), undefined))
        break
      }
      case 'get': {
        if (!msg.infoHash) return this.sendError(from, msg.tid, ERR_NON_AUTHORITATIVE, 'Get_values with no info_hash')
        const { n4, n6 } = this.nodesFor(msg.infoHash, msg.want, family)
        const stored = this.storage.get(msg.infoHash, msg.query)
        const token = this.tokens.make(host, port)
        const fields = msg.query && msg.query.select.length ? [...new Set(msg.query.select)].filter((f) => f >= 1 && f <= 5).sort((a, b) => a - b) : NO_FIELDS
        if (fields.length > 0 && stored.length > 0) {
          this.sendOut(
            family,
            host,
            port,
            this.encoder.nodesValues(msg.tid, this.sa(host), n4, n6, token, undefined, {
              fields,
              values: stored.map((e) => (w: MsgWriter) => writeFields(w, e.value, fields)),
            }),
          )
        } else {
          this.sendOut(
            family,
            host,
            port,
            this.encoder.nodesValues(
              msg.tid,
              this.sa(host),
              n4,
              n6,
              token,
              stored.map((e) => e.packed),
            ),
          )
        }
        break
      }
      case 'put':
        this.onPut(msg, from)
        break
      case 'refresh':
        this.onRefresh(msg, from)
        break
      case 'listen':
        this.onListen(msg, from)
        break
      case 'update': {
        // answered whatever it names, so the answer tells nothing about our socket ids
        if (msg.socketId !== undefined && this.pushAllowed(msg.socketId, msg.id, host, port, family, true)) {
          this.onListenUpdate(this.listenSockets.get(msg.socketId)!.listen, msg, from)
        } else if (msg.socketId === undefined) this.counters.ignoredPushes++
        this.sendRaw(family, host, port, this.encoder.listenConfirm(msg.tid, this.sa(host)))
        break
      }
      default:
        break
    }
  }

  /**
   * May this node push values to our listen socket `sid`? Only a node (same id, address and port) our listen was
   * sent to. `explicit`: the message can only be a push (an `update` or `u`), so an unknown sid counts as ignored
   * too; a plain reply with an unknown tid is more likely a late answer and is dropped silently.
   */
  private pushAllowed(sid: number, id: Uint8Array | undefined, host: string, port: number, family: 4 | 6, explicit: boolean): boolean {
    const s = this.listenSockets.get(sid)
    if (!s) {
      if (explicit) this.counters.ignoredPushes++
      return false
    }
    const search = s.family === family && id ? this.searches.get(`${family}|${s.listen.key.toString('hex')}`) : undefined
    if (search?.listenedBy(sid, id!, host, port)) return true
    this.counters.ignoredPushes++
    return false
  }

  /** A fresh transaction id that is not one of our listen socket ids. */
  private newTid(): number {
    let tid = this.txs.newId()
    while (this.listenSockets.has(tid)) tid = this.txs.newId()
    return tid
  }

  /** A random listen socket id (a counter would let anyone who saw one of our requests guess it). */
  private newSocketId(): number {
    for (;;) {
      const sid = randomBytes(4).readUInt32BE(0)
      if (sid !== 0 && !this.listenSockets.has(sid) && !this.txs.has(sid)) return sid
    }
  }

  private sendOut(family: 4 | 6, host: string, port: number, out: { msg: Buffer; parts: Buffer[] }): void {
    this.sendRaw(family, host, port, out.msg)
    for (const p of out.parts) this.sendRaw(family, host, port, p)
  }

  private sendError(to: NodeRef, tid: number, code: number, message: string): void {
    this.sendRaw(to.family, to.host, to.port, this.encoder.error(tid, code, message))
  }

  private nodesFor(target: Buffer, want: number, family: 4 | 6): { n4: Buffer; n6: Buffer } {
    const w = want < 0 ? (family === 4 ? WANT4 : WANT6) : want
    // the closest nodes to a key only change when a routing table does: answers for recent keys are kept
    const t4 = this.tables[4],
      t6 = this.tables[6]
    const cache = this.nodesCache
    if (cache.t4 !== t4 || cache.t6 !== t6 || cache.v4 !== t4.version || cache.v6 !== t6.version) {
      cache.t4 = t4
      cache.t6 = t6
      cache.v4 = t4.version
      cache.v6 = t6.version
      cache.entries.length = 0
    }
    for (const e of cache.entries) {
      if (e.want === w && sameHash(e.target, target)) return e.nodes
    }
    const nodes = {
      n4: w & WANT4 ? packNodes(t4.closest(target, SEND_NODES), 4) : NO_BYTES,
      n6: w & WANT6 ? packNodes(t6.closest(target, SEND_NODES), 6) : NO_BYTES,
    }
    if (cache.entries.length >= NODES_CACHE_SIZE) cache.entries.shift()
    cache.entries.push({ target: Buffer.from(target), want: w, nodes })
    return nodes
  }

  /** Ping a node we only heard from, at most once a minute (never one ping per request: no amplification). */
  private confirmNode(n: RoutingNode): void {
    const now = Date.now()
    if (n.lastPinged !== undefined && now - n.lastPinged < 60_000) return
    n.lastPinged = now
    this.pingNode(n.host, n.port, n.family).catch(() => {})
  }

  /** We store a value only if we are among the 14 closest nodes we know to the key (once we know 8). */
  private closeEnough(key: Buffer, family: 4 | 6): boolean {
    const closest = this.tables[family].closest(key, SEARCH_NODES)
    if (closest.length < TARGET_NODES) return true
    return xorCmp(key, this.id, closest[closest.length - 1]!.id) < 0
  }

  private onPut(msg: ParsedMessage, from: NodeRef): void {
    const key = msg.infoHash
    if (!key) return this.sendError(from, msg.tid, ERR_NON_AUTHORITATIVE, 'Put with no info_hash')
    if (!this.tokens.check(msg.token, from.host, from.port)) return this.sendError(from, msg.tid, ERR_UNAUTHORIZED, 'Put with wrong token')
    if (msg.values.some((v) => v.id === 0n)) return this.sendError(from, msg.tid, ERR_NON_AUTHORITATIVE, 'Put with invalid id')
    const now = Date.now()
    if (this.closeEnough(key, from.family)) {
      const created = msg.created !== undefined ? msg.created * 1000 : now
      for (const v of msg.values) this.storeValue(key, v, created, from.host)
    }
    // like OpenDHT, answer success even when a policy refused the value
    for (const v of msg.values) this.sendRaw(from.family, from.host, from.port, this.encoder.valueAnnounced(msg.tid, v.id, this.sa(from.host)))
  }

  private onRefresh(msg: ParsedMessage, from: NodeRef): void {
    const key = msg.infoHash
    if (!key) return this.sendError(from, msg.tid, ERR_NON_AUTHORITATIVE, 'Refresh with no info_hash')
    if (!this.tokens.check(msg.token, from.host, from.port)) return this.sendError(from, msg.tid, ERR_UNAUTHORIZED, 'Refresh with wrong token')
    const vid = msg.valueId ?? 0n
    const r = this.storage.refresh(key, vid, Date.now())
    if (!r.keyKnown) return this.sendError(from, msg.tid, ERR_NOT_FOUND, 'Storage not found')
    if (r.entry) this.tellRemoteListeners(key, 're', [vid])
    this.sendRaw(from.family, from.host, from.port, this.encoder.valueAnnounced(msg.tid, vid, this.sa(from.host)))
  }

  private onListen(msg: ParsedMessage, from: NodeRef): void {
    const key = msg.infoHash
    if (!key) return this.sendError(from, msg.tid, ERR_NON_AUTHORITATIVE, 'Listen with no info_hash')
    if (!this.tokens.check(msg.token, from.host, from.port)) return this.sendError(from, msg.tid, ERR_UNAUTHORIZED, 'Listen with wrong token')
    const k = key.toString('hex')
    let m = this.remoteListeners.get(k)
    const lkey = `${from.id.toString('hex')}|${from.host}|${from.port}|${msg.socketId ?? 0}`
    const existing = m?.get(lkey)
    if (existing) {
      existing.time = Date.now()
      if (msg.query) existing.query = msg.query
    } else if (this.remoteListenerCount < MAX_LISTENERS_TOTAL && (m?.size ?? 0) < MAX_LISTENERS_PER_KEY) {
      if (!m) this.remoteListeners.set(k, (m = new Map<string, RemoteListener>()))
      const l: RemoteListener = { id: from.id, host: from.host, port: from.port, family: from.family, sid: msg.socketId ?? 0, version: msg.version, time: Date.now() }
      if (msg.query) l.query = msg.query
      m.set(lkey, l)
      this.remoteListenerCount++
      // existing values are pushed at once (before the listen reply, as OpenDHT)
      const vals = this.storage.get(key, msg.query)
      if (vals.length) this.pushValues(l, key, vals)
    }
    this.sendRaw(from.family, from.host, from.port, this.encoder.listenConfirm(msg.tid, this.sa(from.host), this.tokens.make(from.host, from.port)))
  }

  private pushValues(l: RemoteListener, key: Buffer, vals: StoredValue[]): void {
    const token = this.tokens.make(l.host, l.port)
    const packed = vals.map((e) => e.packed)
    if (l.version >= 1) {
      const tid = this.newTid()
      const out = this.encoder.updateValues(tid, key, l.sid, packed, undefined, token)
      // sent as a request: retried until the listener confirms
      this.txs.start(tid, l.host, l.port, l.family, 'update', out.msg, out.parts).catch(() => {})
    } else {
      const { n4, n6 } = this.nodesFor(key, WANT4 | WANT6, l.family)
      this.sendOut(l.family, l.host, l.port, this.encoder.nodesValues(l.sid, this.sa(l.host), l.family === 4 ? n4 : NO_BYTES, l.family === 6 ? n6 : NO_BYTES, token, packed))
    }
  }

  private tellRemoteListeners(key: Buffer, kind: 're' | 'exp', ids: bigint[]): void {
    const m = this.remoteListeners.get(key.toString('hex'))
    if (!m) return
    for (const l of m.values()) {
      const token = this.tokens.make(l.host, l.port)
      if (l.version >= 1) {
        const tid = this.newTid()
        const msg = this.encoder.updateIds(kind, l.sid, token, ids, l.version, tid)
        this.txs.start(tid, l.host, l.port, l.family, 'update', msg).catch(() => {})
      } else {
        this.sendRaw(l.family, l.host, l.port, this.encoder.updateIds(kind, l.sid, token, ids, 0, 0))
      }
    }
  }

  /** Store a value (local when source is undefined) and tell listeners about a new or edited value. */
  private storeValue(key: Buffer, v: DhtValue, created: number, source?: string, permanent = false): boolean {
    const out = this.storage.store(key, v, created, Date.now(), source, permanent)
    if (!out.stored) {
      this.log('debug', `DHT: refused value ${v.id.toString(16)} at ${key.toString('hex')}: ${out.reason}`)
      return false
    }
    for (const ev of out.evicted) this.valuesGone(Buffer.from(ev.key, 'hex'), [ev.entry])
    if (out.kind === 'refresh') return true
    const m = this.remoteListeners.get(key.toString('hex'))
    if (m) {
      for (const l of m.values()) if (matchesQuery(v, l.query)) this.pushValues(l, key, [out.entry])
    }
    for (const l of this.listens) {
      if (!l.cancelled && l.key.equals(key)) this.deliver(l, [v], [out.entry.packed], out.entry.expiration, false, source)
    }
    return true
  }

  private valuesGone(key: Buffer, entries: StoredValue[]): void {
    if (entries.length === 0) return
    this.tellRemoteListeners(
      key,
      'exp',
      entries.map((e) => e.value.id),
    )
  }

  // ------------------------------------------------------------------------------------------------ housekeeping

  private onTick(): void {
    if (this.stopped) return
    try {
      const now = Date.now()
      this.reassembler.sweep()
      if (now >= this.nextExpire) {
        this.nextExpire = now + 2000
        for (const [k, entries] of this.storage.expire(now)) this.valuesGone(Buffer.from(k, 'hex'), entries)
        for (const [k, m] of this.remoteListeners) {
          for (const [lk, l] of m)
            if (now - l.time > LISTENER_EXPIRE_MS) {
              m.delete(lk)
              this.remoteListenerCount--
            }
          if (m.size === 0) this.remoteListeners.delete(k)
        }
        this.expireListenCaches(now)
      }
      for (const [k, s] of this.searches) {
        s.tick()
        if (s.idle && (s.findOnly ? s.isSynced() || s.expired || now - s.lastActivity > 60_000 : now - s.lastActivity > 5 * 60_000)) {
          s.stop()
          this.searches.delete(k)
        }
      }
      this.checkConnected()
      if (now >= this.nextBootstrap && this.goodNodes() === 0 && this.bootstrapAddrs.length) {
        this.nextBootstrap = now + this.bootstrapDelay
        this.bootstrapDelay = Math.min(this.bootstrapDelay * 2, 10 * 60_000)
        for (const b of this.bootstrapAddrs) this.pingNode(b.host, b.port, b.family).catch(() => {})
      }
      if (now >= this.nextMaintenance) {
        this.nextMaintenance = now + 60_000 + Math.random() * 120_000
        if (this.nextMaintenance - 60_000 > 0 && this.tables[4].size + this.tables[6].size > 0) this.maintenance(now)
      }
      if (this.opts.persistPath && now >= this.nextPersist) {
        if (this.nextPersist !== 0) this.persist().catch((err) => this.log('warn', `DHT: ${(err as Error).message}`))
        this.nextPersist = now + 10 * 60_000
      }
    } catch (err) {
      this.log('warn', `DHT: maintenance error: ${(err as Error).message}`)
    }
  }

  private goodNodes(): number {
    return this.tables[4].goodCount() + this.tables[6].goodCount()
  }

  private checkConnected(): void {
    const good = this.goodNodes() > 0
    if (good && !this.wasConnected) {
      this.wasConnected = true
      this.bootstrapDelay = 10_000
      this.emit('connected')
    } else if (!good && this.wasConnected) {
      this.wasConnected = false
      this.emit('disconnected')
      this.discovery?.reset()
    }
  }

  /** Bucket maintenance: a find for a random id in every bucket idle for 10 minutes, plus our neighbourhood. */
  private maintenance(now: number): void {
    for (const f of [4, 6] as const) {
      const t = this.tables[f]
      if (t.size === 0 || !this.sockFor(f)) continue
      for (const b of t.buckets()) {
        if (b.nodes.length > 0 && now - b.lastActive < 10 * 60_000) continue
        this.findOnly(RoutingTable.randomIdIn(b), f)
      }
      // neighbourhood: an id sharing our prefix
      const near = Buffer.from(this.id)
      near[19] = randomBytes(1)[0]!
      this.findOnly(near, f)
      // ping dubious nodes so they become good again or get replaced
      for (const n of t.all()) if (!isGood(n, now) && n.failures < 3 && now - n.lastHeard > 10 * 60_000) this.pingNode(n.host, n.port, f).catch(() => {})
    }
  }

  private findOnly(target: Buffer, family: 4 | 6): void {
    const k = `${family}|${target.toString('hex')}`
    if (this.searches.has(k)) return
    const s = new Search(target, family, this.searchHost)
    s.findOnly = true
    this.searches.set(k, s)
    s.step()
  }

  // ------------------------------------------------------------------------------------------------ search host

  private readonly searchHost: SearchHost = {
    now: () => Date.now(),
    closestKnown: (key, family, n) => this.tables[family].closest(key, n).map((x) => ({ id: x.id, host: x.host, port: x.port, family })),
    sendFind: (n, key) => this.request(n, 'find', (tid) => this.encoder.find(tid, key, n.family === 4 ? WANT4 : WANT6)),
    sendGet: (n, key, q) => this.request(n, 'get', (tid) => this.encoder.get(tid, key, q, n.family === 4 ? WANT4 : WANT6)),
    sendPut: (n, key, packed, created, token) => this.request(n, 'put', (tid) => this.encoder.put(tid, key, packed, created, token)),
    sendRefresh: (n, key, vid, token) => this.request(n, 'refresh', (tid) => this.encoder.refresh(tid, key, vid, token)),
    sendListen: (n, key, token, sid, q) => this.request(n, 'listen', (tid) => this.encoder.listen(tid, key, token, sid, q)),
    replyNodes: (msg, from) => this.ingestNodes(msg, from),
    expirationOf: (type) => this.expirationOf(type),
  }

  /** Nodes listed in a reply: loopback addresses rewritten to the sender's, martians dropped, table updated. */
  private ingestNodes(msg: ParsedMessage, from: NodeRef): WireNode[] {
    const out: WireNode[] = []
    for (const [buf, fam] of [
      [msg.nodes4, 4],
      [msg.nodes6, 6],
    ] as const) {
      if (!buf) continue
      for (const n of unpackNodes(buf, fam)) {
        if (n.id.equals(this.id)) continue
        if (isLoopback(n.host) && from.family === fam) n.host = from.host
        if (isMartian(n.host, n.port)) continue
        this.tables[fam].learned(n.id, n.host, n.port)
        out.push(n)
      }
    }
    return out
  }

  private searchFor(key: Buffer, family: 4 | 6): Search | undefined {
    if (!this.sockFor(family)) return undefined
    const k = `${family}|${key.toString('hex')}`
    let s = this.searches.get(k)
    if (!s || s.stopped) {
      s = new Search(key, family, this.searchHost)
      this.searches.set(k, s)
    } else if (s.findOnly) s.findOnly = false
    return s
  }

  private activeFamilies(): Array<4 | 6> {
    const out: Array<4 | 6> = []
    if (this.sock4) out.push(4)
    if (this.sock6) out.push(6)
    return out
  }

  // ------------------------------------------------------------------------------------------------ public API

  /** Ping `host:port` (or host and port); resolves with the node's id and the round-trip time. */
  async ping(addr: string, port?: number): Promise<{ id: string; rttMs: number }> {
    const hp = port !== undefined ? { host: addr, port } : parseHostPort(addr)
    const [resolved] = await this.resolve(hp.host, hp.port)
    const t0 = performance.now()
    const r = await this.pingNode(resolved!.host, resolved!.port, resolved!.family)
    return { id: r.id!.toString('hex'), rttMs: performance.now() - t0 }
  }

  private pingNode(host: string, port: number, family: 4 | 6): Promise<ParsedMessage> {
    return this.request({ host, port, family }, 'ping', (tid) => this.encoder.ping(tid))
  }

  private async resolve(host: string, port: number): Promise<Array<{ host: string; port: number; family: 4 | 6 }>> {
    const h = host.replace(/^\[|\]$/g, '')
    if (ipToBytes(h)) return [{ host: h, port, family: this.familyOf(h) }]
    let addrs: Array<{ address: string; family: number }>
    try {
      addrs = await lookup(h, { all: true })
    } catch (err) {
      throw new DhtnetError('RESOLVE_FAILED', `cannot resolve '${h}': ${(err as Error).message}`, { cause: err, hint: 'check the host name and the DNS configuration' })
    }
    const out = addrs.map((a): { host: string; port: number; family: 4 | 6 } => ({ host: a.address, port, family: a.family === 6 ? 6 : 4 })).filter((a) => this.sockFor(a.family))
    if (out.length === 0) throw new DhtnetError('RESOLVE_FAILED', `'${h}' has no address of a family this node uses`, { hint: 'enable IPv4 or IPv6 binding' })
    return out
  }

  /** Add a bootstrap node (`host[:port]`, default port 4222): resolved, pinged now and again while we have no good node. */
  async bootstrap(hostPort: string): Promise<void> {
    const { host, port } = parseHostPort(hostPort)
    const addrs = await this.resolve(host, port)
    for (const a of addrs) {
      if (!this.bootstrapAddrs.some((b) => b.host === a.host && b.port === a.port)) this.bootstrapAddrs.push(a)
      this.pingNode(a.host, a.port, a.family).then(
        () => {
          // one find for our own id fills the table with our neighbourhood
          this.findOnly(this.id, a.family)
        },
        () => {},
      )
    }
  }

  /** Get every value stored at `key` (20-byte Buffer, 40-hex string, or any text, which is hashed). */
  async get(key: Buffer | string, opts: GetOptions = {}): Promise<DhtValue[]> {
    throwIfAborted(opts.signal)
    this.assertRunning()
    const k = keyOf(key)
    const found = new Map<bigint, { v: DhtValue; packed: Buffer }>()
    const accept = (vals: DhtValue[], from?: string) => {
      const fresh: DhtValue[] = []
      for (const v of vals) {
        if (opts.filter && !opts.filter(v)) continue
        if (opts.query && !matchesQuery(v, opts.query)) continue
        const prev = found.get(v.id)
        const packed = packValue(v)
        if (prev && (prev.packed.equals(packed) || (prev.v.seq ?? 0) >= (v.seq ?? 0))) continue
        found.set(v.id, { v, packed })
        fresh.push(v)
      }
      if (fresh.length && opts.onValues) {
        try {
          opts.onValues(fresh, from)
        } catch (err) {
          this.log('warn', `DHT: get callback threw: ${(err as Error).message}`)
        }
      }
    }
    for (const e of this.storage.get(k)) accept([e.value], e.source)
    return new Promise<DhtValue[]>((resolve, reject) => {
      const fams = this.activeFamilies().filter((f) => this.tables[f].size > 0)
      let pending = fams.length
      const gets: Array<{ s: Search; g: Parameters<Search['addGet']>[0] }> = []
      const finish = () => {
        opts.signal?.removeEventListener('abort', onAbort)
        resolve([...found.values()].map((e) => e.v))
      }
      const onAbort = () => {
        for (const { s, g } of gets) {
          g.done = true
          s.gets.delete(g)
        }
        reject(new DhtnetError('ABORTED', 'get aborted', { cause: opts.signal?.reason }))
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      if (pending === 0) return finish()
      for (const f of fams) {
        const s = this.searchFor(k, f)!
        const g = {
          ...(opts.query ? { query: opts.query } : {}),
          start: Date.now(),
          onValues: (vals: DhtValue[], from: NodeRef) => accept(vals, from.host),
          onDone: () => {
            if (--pending === 0) finish()
          },
        }
        gets.push({ s, g })
        s.addGet(g)
      }
    })
  }

  /**
   * Put a value at `key`: stored locally and announced to the 8 closest synced nodes of each family.
   * Resolves true when at least one node (or, alone, the local store) accepted it.
   * A missing or zero `id` gets a random one (written back into the value).
   */
  async put(key: Buffer | string, value: Omit<DhtValue, 'id'> & { id?: bigint }, opts: PutOptions = {}): Promise<boolean> {
    throwIfAborted(opts.signal)
    this.assertRunning()
    const k = keyOf(key)
    if (!value.id) value.id = randomBytes(8).readBigUInt64BE() || 1n
    const v = value as DhtValue
    const packed = packValue(v)
    if (packed.length > this.storage.limits.maxValueSize) {
      throw new DhtnetError('VALUE_TOO_BIG', `value is ${packed.length} bytes packed, the limit is ${this.storage.limits.maxValueSize}`, {
        hint: 'store large data elsewhere and put a reference',
      })
    }
    const created = opts.created ?? Date.now()
    const permanent = !!opts.permanent
    const storedLocally = this.storeValue(k, v, created, undefined, permanent)
    const kh = k.toString('hex')
    let lp = this.localPuts.get(kh)
    if (!lp) this.localPuts.set(kh, (lp = new Map<bigint, { value: DhtValue; permanent: boolean }>()))
    lp.set(v.id, { value: v, permanent })
    const fams = this.activeFamilies().filter((f) => this.tables[f].size > 0)
    if (fams.length === 0) return storedLocally
    const acks = await new Promise<number>((resolve, reject) => {
      let pending = fams.length
      let total = 0
      const onAbort = () => {
        for (const f of fams) this.searches.get(`${f}|${kh}`)?.cancelPut(v.id)
        reject(new DhtnetError('ABORTED', 'put aborted', { cause: opts.signal?.reason }))
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      for (const f of fams) {
        this.searchFor(k, f)!.addPut({
          value: v,
          packed,
          created,
          permanent,
          acks: 0,
          reannounceAt: created + reannounceDelay(this.expirationOf(v.type)),
          onDone: (n) => {
            total += n
            if (--pending === 0) {
              opts.signal?.removeEventListener('abort', onAbort)
              resolve(total)
            }
          },
        })
      }
    })
    // with peers, success means a storage node took it; alone, the local store is the DHT
    return acks > 0
  }

  /** Stop announcing a value put with `put` (the storage nodes keep it until it expires). */
  cancelPut(key: Buffer | string, id: bigint): boolean {
    const k = keyOf(key)
    const kh = k.toString('hex')
    const lp = this.localPuts.get(kh)
    const had = lp?.delete(id) ?? false
    if (lp && lp.size === 0) this.localPuts.delete(kh)
    for (const f of [4, 6] as const) this.searches.get(`${f}|${kh}`)?.cancelPut(id)
    const e = this.storage.getById(k, id)
    if (e && e.source === undefined && e.permanent) this.storage.setExpiration(e, Date.now() + this.expirationOf(e.value.type))
    return had
  }

  /**
   * Listen to `key`: `cb(values, false)` for values present now and every new or edited one, `cb(values, true)`
   * when values expire or are removed. Returns a handle to cancel.
   */
  listen(key: Buffer | string, cb: ListenCallback, opts: ListenOptions = {}): ListenHandle {
    this.assertRunning()
    const k = keyOf(key)
    const l: LocalListen = { key: k, cb, sids: new Map(), cache: new ListenCache(this.opts.listenCache), cancelled: false }
    if (opts.filter) l.filter = opts.filter
    if (opts.query) l.query = opts.query
    this.listens.add(l)
    // local values first
    const local = this.storage.get(k)
    for (const e of local) this.deliver(l, [e.value], [e.packed], e.expiration, false, e.source)
    for (const f of this.activeFamilies()) {
      const s = this.searchFor(k, f)!
      const sid = this.newSocketId()
      l.sids.set(f, sid)
      this.listenSockets.set(sid, { listen: l, family: f })
      s.addListen({ sid, ...(opts.query ? { query: opts.query } : {}) })
    }
    return {
      cancel: () => {
        if (l.cancelled) return
        l.cancelled = true
        this.listens.delete(l)
        for (const [f, sid] of l.sids) {
          this.listenSockets.delete(sid)
          this.searches.get(`${f}|${k.toString('hex')}`)?.removeListen(sid)
        }
      },
    }
  }

  private onListenUpdate(l: LocalListen, msg: ParsedMessage, from: NodeRef): void {
    if (l.cancelled) return
    if (msg.values.length) {
      this.deliver(
        l,
        msg.values,
        msg.values.map((v) => packValue(v)),
        0,
        true,
        from.host,
      )
    }
    if (msg.expired.length) {
      const gone: DhtValue[] = []
      for (const id of msg.expired) {
        const e = l.cache.get(id)
        if (e) {
          l.cache.delete(id)
          gone.push(e.v)
        }
      }
      if (gone.length) this.callListener(l, gone, true, from.host)
    }
    for (const id of msg.refreshed) {
      const e = l.cache.get(id)
      if (e) e.expireAt = Math.max(e.expireAt, Date.now() + this.expirationOf(e.v.type))
    }
  }

  /** Hand new or changed values to a listener (deduplicated by id, then by bytes/seq). */
  private deliver(l: LocalListen, vals: DhtValue[], packed: Buffer[], expiration: number, remote: boolean, from: string | undefined): void {
    const now = Date.now()
    const fresh: DhtValue[] = []
    vals.forEach((v, i) => {
      if (l.filter && !l.filter(v)) return
      if (l.query && !matchesQuery(v, l.query)) return
      const p = packed[i]!
      const exp = remote ? now + this.expirationOf(v.type) : expiration
      const prev = l.cache.get(v.id)
      if (prev) {
        prev.expireAt = Math.max(prev.expireAt, exp)
        if (prev.packed.equals(p)) return
        if (prev.v.owner && (prev.v.seq ?? 0) >= (v.seq ?? 0)) return
      }
      const before = l.cache.evicted
      l.cache.set(v.id, { v, packed: p, expireAt: exp })
      this.listenCacheEvictions += l.cache.evicted - before
      fresh.push(v)
    })
    if (fresh.length) this.callListener(l, fresh, false, from)
  }

  private callListener(l: LocalListen, vals: DhtValue[], expired: boolean, from?: string): void {
    try {
      l.cb(vals, expired, from)
    } catch (err) {
      this.log('warn', `DHT: listen callback threw: ${(err as Error).message}`)
    }
  }

  private expireListenCaches(now: number): void {
    for (const l of this.listens) {
      const gone = l.cache.expire(now)
      if (gone.length) this.callListener(l, gone, true)
    }
  }

  private assertRunning(): void {
    if (!this.started || this.stopped) throw new DhtnetError('DHT_STOPPED', 'the DHT node is not running', { hint: 'call start() first' })
  }

  /** Values stored on this node at `key` (no network). */
  getLocal(key: Buffer | string): DhtValue[] {
    return this.storage.get(keyOf(key)).map((e) => e.value)
  }

  stats(): DhtStats {
    return {
      nodes4: this.tables[4].size,
      nodes6: this.tables[6].size,
      good4: this.tables[4].goodCount(),
      good6: this.tables[6].goodCount(),
      buckets: this.tables[4].buckets().map((b) => b.nodes.length),
      buckets6: this.tables[6].buckets().map((b) => b.nodes.length),
      values: this.storage.valueCount,
      keys: this.storage.keyCount,
      storedBytes: this.storage.totalBytes,
      listenersRemote: this.remoteListenerCount,
      listens: this.listens.size,
      searches: this.searches.size,
      datagramsIn: this.counters.datagramsIn,
      requestsIn: this.counters.requestsIn,
      requestsOut: this.counters.requestsOut,
      repliesIn: this.counters.repliesIn,
      rateLimitedDrops: this.limiter.drops,
      malformedDrops: this.counters.malformed,
      pendingRequests: this.txs.size,
      partialMessages: this.reassembler.size,
      rejectedKeys: this.storage.rejectedKeys,
      verifyDrops: this.storage.verifyDrops,
      badSignatures: this.storage.badSignatures,
      ignoredPushes: this.counters.ignoredPushes,
      listenCacheEvictions: this.listenCacheEvictions,
    }
  }

  /** The routing tables, bucket by bucket (for the CLI `ll` command). */
  routingTable(): RoutingEntry[] {
    const now = Date.now()
    return ([4, 6] as const).map((family) => ({
      family,
      buckets: this.tables[family].buckets().map((b: BucketInfo) => ({
        depth: b.depth,
        prefix: b.prefix.toString('hex'),
        nodes: b.nodes.map((n) => ({ id: n.id.toString('hex'), host: n.host, port: n.port, good: isGood(n, now), lastHeard: n.lastHeard, lastReplied: n.lastReplied })),
      })),
    }))
  }

  /** Our address as other nodes see it (from `sa` in their replies), hex per family. */
  reportedAddresses(): { 4?: string; 6?: string } {
    return { ...this.publicAddress }
  }
}

/** Selected fields of one value for a `fileds` reply, in OpenDHT's field order. */
function writeFields(w: MsgWriter, v: DhtValue, fields: number[]): void {
  for (const f of fields) {
    switch (f) {
      case 1:
        w.uint(v.id)
        break
      case 2:
        w.uint(v.type)
        break
      case 3:
        if (v.owner && v.owner.length) w.bin(v.owner)
        else w.bin(Buffer.alloc(20))
        break
      case 4:
        w.uint(v.seq ?? 0)
        break
      case 5:
        w.str(v.userType ?? '')
        break
      default:
        w.nil()
        break
    }
  }
}
