/**
 * Options, timeouts and limits of the TURN/TCP client, with their defaults.
 */
import type { LoggerLike } from '../../util/log.js'
import type { TurnTlsOptions } from './connection.js'
import type { TurnTransport } from './server-address.js'

export interface TurnTimeouts {
  /** Opening a TCP (and TLS) connection to the server (default 5000). */
  readonly connectMs: number
  /** One request/response exchange (default 8000; RFC 8489's 39.5 s is far too long for a fallback path). */
  readonly transactionMs: number
  /** The whole allocate(): resolution, connection, challenge and Allocate (default 15000). */
  readonly allocateMs: number
  /** Opening a data connection and its CONNECTION-BIND (default 10000; the server drops a peer after 30 s). */
  readonly bindMs: number
  /** connect(): CONNECT (the server tries the peer for up to 30 s) plus the data connection (default 15000). */
  readonly peerConnectMs: number
  /** Refresh this long before the allocation expires, at most half its lifetime (default 60 s, as pjnath). */
  readonly refreshMarginS: number
  /** Renew permissions this often (default 240 s; they last 300 s). */
  readonly permissionRefreshMs: number
  /** close(): wait this long for the Refresh with LIFETIME 0 (default 2000). */
  readonly closeMs: number
}

export interface TurnLimits {
  /** Largest STUN message accepted from the server (default 4096, pjnath's max_pkt_size in DHTNet). */
  readonly maxMessageBytes: number
  /** Requests in flight on the control connection (default 16). */
  readonly maxPendingTransactions: number
  /** CONNECTION-ATTEMPTs being bound at once (data connections opening); more are ignored (default 8). */
  readonly maxPendingConnectionAttempts: number
  /** Of which from one peer IP address (default 4). */
  readonly maxPendingAttemptsPerPeer: number
  /** Outbound connect() calls in progress (default 8). */
  readonly maxPendingConnects: number
  /** Relayed connections alive (inbound and outbound); attempts above it are ignored (default 64). */
  readonly maxConnections: number
  /** Peer IP addresses with a permission kept alive (default 64). */
  readonly maxPermissions: number
}

export const DEFAULT_TURN_TIMEOUTS: TurnTimeouts = {
  connectMs: 5000,
  transactionMs: 8000,
  allocateMs: 15_000,
  bindMs: 10_000,
  peerConnectMs: 15_000,
  refreshMarginS: 60,
  permissionRefreshMs: 240_000,
  closeMs: 2000,
}

export const DEFAULT_TURN_LIMITS: TurnLimits = {
  maxMessageBytes: 4096,
  maxPendingTransactions: 16,
  maxPendingConnectionAttempts: 8,
  maxPendingAttemptsPerPeer: 4,
  maxPendingConnects: 8,
  maxConnections: 64,
  maxPermissions: 64,
}

/** Lifetime asked for (seconds): RFC 8656's default, 10 minutes; the server may grant less. */
export const DEFAULT_LIFETIME_S = 600

export interface TurnTcpAllocateOptions {
  /** 'host[:port]', '[v6]:port', 'turn:host[:port][?transport=tcp]', 'turns:host[:port]' (or a URL). Credentials in
   *  the URI (turn:USER:PASS@host) are used when username/password are not given. */
  readonly server: string | URL
  readonly username?: string | undefined
  readonly password?: string | undefined
  /** The realm we expect (the server's own is used for the key; a difference is logged). */
  readonly realm?: string | undefined
  /** 'tcp' (default, port 3478) or 'tls' (port 5349); a turns: URI means tls. */
  readonly transport?: TurnTransport | undefined
  readonly tls?: TurnTlsOptions | undefined
  /** Lifetime to ask for, seconds (default 600). */
  readonly lifetimeS?: number | undefined
  readonly timeouts?: Partial<TurnTimeouts> | undefined
  readonly limits?: Partial<TurnLimits> | undefined
  /** Aborts allocate() (not the allocation once made: close() does that). */
  readonly signal?: AbortSignal | undefined
  readonly logger?: LoggerLike | undefined
}
