/**
 * Shared start-up of the tools (dnc, dsh, dvpn): identity (given files, or ~/.dhtnet created on first run),
 * DhtNode + SecureDht, TrustStore (our own CA trusted, plus anonymous mode), ConnectionManager, and a clean stop.
 * Every failure is a DhtnetError naming the step (identity, DHT bootstrap, ...) so a tool can print it as is.
 */
import { homedir } from 'node:os'
import { join } from 'node:path'
import { DhtnetError } from '../errors.js'
import type { Identity } from '../identity/types.js'
import { loadIdentity } from '../identity/load.js'
import { TrustStore } from '../identity/truststore.js'
import { ensureIdentity } from '../config/ensure-identity.js'
import { DhtNode } from '../dht/node.js'
import { SecureDht } from '../dht/secure-dht.js'
import { ConnectionManager, type ConnectionManagerOptions, type TransportPolicy } from '../connection/connection-manager.js'
import type { IceServerSpec } from '../transport/webrtc/ice-servers.js'
import { preloadNative } from '../transport/webrtc/native.js'
import { PortMapper, type PortMapperOptions } from '../nat/port-mapper.js'
import type { Logger } from '../util/log.js'
import { turnSettings, type TurnServerOptions } from './turn.js'

export type { TurnServerOptions } from './turn.js'

export interface LoadedToolIdentity {
  readonly identity: Identity
  readonly certificate: string
  readonly privateKey: string
  readonly created: boolean
}

export interface ToolRuntimeOptions {
  /** An identity already loaded with loadToolIdentity (then identityFiles/identityDir are not used). */
  readonly identity?: LoadedToolIdentity
  /** Identity files; without them the default identity is loaded, or created on first run. */
  readonly identityFiles?: { readonly certificate: string; readonly privateKey: string; readonly password?: string }
  /** Folder of the default identity (default $DHTNET_HOME or ~/.dhtnet). */
  readonly identityDir?: string
  /** `host[:port]` bootstrap nodes (default port 4222). */
  readonly bootstrap: readonly string[]
  /** LAN discovery (multicast); default: on only when no bootstrap is given. */
  readonly discovery?: boolean
  /** Local address for the DHT and ICE sockets (tests: 127.0.0.1). Default: every interface. */
  readonly bindAddress?: string
  /** UDP port of the DHT (default ephemeral). */
  readonly dhtPort?: number
  /** Short-lived client: a random DHT node id, announced as a client (kept out of routing tables). */
  readonly dhtClient?: boolean
  /** Keep the DHT node id and known nodes here across restarts. */
  readonly persistPath?: string
  readonly turn?: TurnServerOptions
  /** More STUN/TURN servers, as 'stun:HOST:PORT' / 'turn:USER:PASS@HOST:PORT'. */
  readonly iceServers?: readonly IceServerSpec[]
  /** Accept peers whose chain ends at any CA (otherwise only our own CA and explicitly allowed peers). */
  readonly anonymous: boolean
  /** Peers to trust whatever their CA (ids or certificates). */
  readonly allowedPeers?: readonly string[]
  /** Wait at most this long for the first DHT node to answer (default 10 s). */
  readonly bootstrapTimeoutMs?: number
  /** Fail (DHT_NOT_CONNECTED) when no bootstrap node answered in time, instead of carrying on (default false). */
  readonly requireBootstrap?: boolean
  /** Bound of the certificate publication at start (default 10 s). */
  readonly publishTimeoutMs?: number
  /**
   * A client that only connects out (default false): it does not wait for our certificate publication (its
   * requests carry its certificate; it is published anyway, in the background) and listens at its keys from its
   * first connect on, so it accepts no incoming connection before.
   */
  readonly clientOnly?: boolean
  readonly connectTimeoutMs?: number
  /**
   * UPnP IGD / NAT-PMP port mapping for our peer connections (DHTNet's enable_upnp; default false here, the tools
   * pass their setting). Options tune the mapper (tests: the lab gateway). Not used when ICE is bound to a
   * loopback address, nor in test runs (DHTNET_FORBID_PUBLIC_BOOTSTRAP=1: the gateway is outside the test).
   */
  readonly upnp?: boolean | PortMapperOptions
  /** Which transports connections may use (default 'auto': ICE-TCP + TLS and WebRTC, racing). */
  readonly transport?: TransportPolicy
  /**
   * Speak only as a C++ DHTNet device (ConnectionManager's emulateDhtnet). Default: the environment variable
   * DHTNET_EMULATE_DHTNET=1 (interoperability tests, debugging).
   */
  readonly emulateDhtnet?: boolean
  readonly log?: Logger
  /** Where to say that a default identity was created, and where (default: `log` at info level). */
  readonly identityLog?: (line: string) => void
  readonly signal?: AbortSignal
  /** Hooks passed to the ConnectionManager. */
  readonly onIceRequest?: ConnectionManagerOptions['onIceRequest']
  readonly onChannelRequest?: ConnectionManagerOptions['onChannelRequest']
  readonly onConnectionReady?: ConnectionManagerOptions['onConnectionReady']
}

export interface ToolRuntime {
  readonly identity: Identity
  /** Where the identity came from, and whether it was created by this run. */
  readonly identitySource: { readonly certificate: string; readonly privateKey: string; readonly created: boolean }
  readonly node: DhtNode
  readonly dht: SecureDht
  readonly trust: TrustStore
  readonly connections: ConnectionManager
  /** True once a DHT node answered. */
  readonly dhtConnected: boolean
  /** Close connections, the SecureDht and the DHT node (persisting its state). Idempotent. */
  stop(): Promise<void>
}

/** `$DHTNET_CACHE_DIR`, else ~/.cache/dhtnet (DHTNet's cachePath()). */
/**
 * The public OpenDHT network's bootstrap nodes (the ones DHTNet's shipped configuration and OpenDHT's docs name).
 * Tools use them, together with LAN discovery, when no bootstrap is configured, so a first run just works.
 */
export const PUBLIC_BOOTSTRAP_NODES: readonly string[] = ['bootstrap.jami.net:4222', 'bootstrap.sfl.io:4222']

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.DHTNET_CACHE_DIR?.trim()
  return fromEnv ? fromEnv : join(homedir(), '.cache', 'dhtnet')
}

/** TURN options as DHTNet's tools take them (-t/-u/-w/-r) → an ICE server spec. */
export function turnIceServer(turn: TurnServerOptions): IceServerSpec {
  // a bare host[:port] as DHTNet takes it, or a full URL (turn:..., turns:..., ?transport=...) passed on as written
  const url = /^(turns?|stuns?):/i.test(turn.host) ? turn.host : `turn:${turn.host}`
  const host = url.replace(/^[a-z]+:/i, '')
  if (!turn.user || turn.pass === undefined) {
    throw new DhtnetError('BAD_ICE_SERVER', `TURN server ${host} needs a user name and a password`, { hint: 'give -u USER and -w PASSWORD (or turn_user/turn_pass in the YAML)' })
  }
  return { url, username: turn.user, password: turn.pass }
}

export async function loadToolIdentity(options: Pick<ToolRuntimeOptions, 'identityFiles' | 'identityDir' | 'log' | 'identityLog' | 'signal'>): Promise<LoadedToolIdentity> {
  const log = options.log ?? (() => {})
  if (options.identityFiles) {
    const { certificate, privateKey, password } = options.identityFiles
    const identity = await loadIdentity({ key: privateKey, certificate, ...(password !== undefined ? { password } : {}), role: 'device' })
    return { identity, certificate, privateKey, created: false }
  }
  const ensured = await ensureIdentity({
    ...(options.identityDir ? { dir: options.identityDir } : {}),
    log: options.identityLog ?? ((line) => log('info', line)),
    ...(options.signal ? { signal: options.signal } : {}),
  })
  return { identity: ensured.identity, certificate: ensured.certPath, privateKey: ensured.keyPath, created: ensured.created }
}

export async function startToolRuntime(options: ToolRuntimeOptions): Promise<ToolRuntime> {
  // The test runner sets this: tests and benchmarks never send traffic to the public network.
  if (process.env.DHTNET_FORBID_PUBLIC_BOOTSTRAP === '1' && options.bootstrap.some((b) => PUBLIC_BOOTSTRAP_NODES.includes(b))) {
    throw new DhtnetError('PUBLIC_BOOTSTRAP_FORBIDDEN', 'this run may not contact the public OpenDHT network (DHTNET_FORBID_PUBLIC_BOOTSTRAP=1)', {
      hint: 'give a local bootstrap with -b host:port',
    })
  }
  const log: Logger = options.log ?? (() => {})
  const loaded = options.identity ?? (await loadToolIdentity(options))
  const identity = loaded.identity

  const trust = new TrustStore()
  const issuer = identity.chain[1]
  if (issuer?.ca) trust.addTrustedCa(issuer)
  else if (!options.anonymous) log('warn', 'our certificate has no CA in its chain: only explicitly allowed peers will be accepted (or use anonymous mode)')
  for (const p of options.allowedPeers ?? []) trust.allow(p)

  const iceServers: IceServerSpec[] = [...(options.iceServers ?? [])]
  // one TURN server: a UDP relay for WebRTC and a TCP relay for ICE-TCP (turn.ts), unless turn.transport picks one
  const turn = options.turn ? turnSettings(options.turn) : undefined
  if (turn) iceServers.push(...turn.iceServers)

  const bind = options.bindAddress
  const bindFamily = bind === undefined ? 0 : bind.includes(':') ? 6 : 4
  const node = new DhtNode({
    port: options.dhtPort ?? 0,
    ...(bindFamily === 4 ? { bindIpv4: bind!, bindIpv6: false } : bindFamily === 6 ? { bindIpv4: false, bindIpv6: bind! } : {}),
    bootstrap: [...options.bootstrap],
    discovery: options.discovery ?? options.bootstrap.length === 0,
    ...(bind && bindFamily === 4 ? { discoveryInterface4: bind } : {}),
    ...(options.persistPath ? { persistPath: options.persistPath } : {}),
    ...(options.dhtClient ? { isClient: true } : { identityId: identity.id }),
    logger: {
      debug: (m: string) => log('debug', m),
      info: (m: string) => log('info', m),
      warn: (m: string) => log('warn', m),
    },
  })
  const dht = new SecureDht(node, identity, { log })
  const portMapper = makePortMapper(options, log)
  const connections = new ConnectionManager({
    identity,
    dht,
    trust,
    anonymous: options.anonymous,
    iceServers,
    ...(turn?.tcpRelay ? { tcpRelay: turn.tcpRelay } : {}),
    ...(bind ? { bindAddress: bind } : {}),
    ...(portMapper ? { portMapper } : {}),
    ...(options.transport ? { transport: options.transport } : {}),
    emulateDhtnet: options.emulateDhtnet ?? process.env.DHTNET_EMULATE_DHTNET === '1',
    // the address the DHT sees us at: a server-reflexive ICE-TCP candidate when it is routable
    publicAddress: () => reportedIpv4(node),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
    ...(options.onIceRequest ? { onIceRequest: options.onIceRequest } : {}),
    ...(options.onChannelRequest ? { onChannelRequest: options.onChannelRequest } : {}),
    ...(options.onConnectionReady ? { onConnectionReady: options.onConnectionReady } : {}),
    logger: log,
  })

  // set by the event below, also while we await: a boolean TypeScript would narrow to `false` in between
  let connected = false as boolean
  node.on('connected', () => {
    connected = true
    log('debug', 'DHT: connected')
  })
  // started only now: a bad option (ICE server, ...) fails above before any socket is opened
  await node.start()
  // the WebRTC library loads while we wait for the first DHT answer
  preloadNative()

  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      await connections.close().catch((err: unknown) => log('warn', `closing connections: ${(err as Error).message}`))
      await portMapper?.close().catch((err: unknown) => log('warn', `removing port mappings: ${(err as Error).message}`))
      dht.close()
      await node.stop().catch((err: unknown) => log('warn', `stopping the DHT: ${(err as Error).message}`))
    })())

  try {
    if (options.bootstrap.length > 0 && !connected) {
      const waitMs = options.bootstrapTimeoutMs ?? 10_000
      const ok = await waitConnected(node, waitMs, options.signal)
      connected ||= ok
      if (!ok) {
        const message = `no DHT node answered within ${Math.round(waitMs / 100) / 10} s (bootstrap ${options.bootstrap.join(', ')})`
        if (options.requireBootstrap) {
          throw new DhtnetError('DHT_NOT_CONNECTED', message, { hint: 'check the bootstrap address (-b host[:port]) and that it runs' })
        }
        log('warn', `${message}; retrying in the background`)
      }
    }
    await connections.start({ publishTimeoutMs: options.publishTimeoutMs ?? 10_000, clientOnly: options.clientOnly ?? false })
  } catch (err) {
    await stop()
    throw err
  }
  return {
    identity,
    identitySource: { certificate: loaded.certificate, privateKey: loaded.privateKey, created: loaded.created },
    node,
    dht,
    trust,
    connections,
    get dhtConnected() {
      return connected
    },
    stop,
  }
}

/** The port mapper the options ask for, or undefined (off, loopback-bound, or a test run). */
function makePortMapper(options: ToolRuntimeOptions, log: Logger): PortMapper | undefined {
  if (!options.upnp) return undefined
  const bind = options.bindAddress
  if (bind !== undefined && (/^127\./.test(bind) || bind === '::1' || bind === 'localhost')) {
    log('debug', `UPnP: not used (ICE is bound to the loopback address ${bind})`)
    return undefined
  }
  if (process.env.DHTNET_FORBID_PUBLIC_BOOTSTRAP === '1') {
    log('debug', 'UPnP: not used in this run (DHTNET_FORBID_PUBLIC_BOOTSTRAP=1: no traffic to the real gateway)')
    return undefined
  }
  return new PortMapper({ ...(typeof options.upnp === 'object' ? options.upnp : {}), log })
}

function waitConnected(node: DhtNode, ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const done = (v: boolean): void => {
      clearTimeout(timer)
      node.off('connected', onConnected)
      signal?.removeEventListener('abort', onAbort)
      resolve(v)
    }
    const onConnected = (): void => done(true)
    const onAbort = (): void => {
      clearTimeout(timer)
      node.off('connected', onConnected)
      reject(new DhtnetError('ABORTED', 'interrupted while joining the DHT'))
    }
    const timer = setTimeout(() => done(false), ms)
    node.on('connected', onConnected)
    if (signal?.aborted) return onAbort()
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** The IPv4 address DHT nodes report seeing us at (OpenDHT's `sa`), as text; undefined when none did yet. */
function reportedIpv4(node: DhtNode): string | undefined {
  const hex = node.reportedAddresses()[4]
  if (!hex || hex.length !== 8) return undefined
  return [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.')
}
