/**
 * Every error the library throws on purpose is a DhtnetError with a stable `code` from the catalogue below.
 * Codes are part of the public API: tools map them to messages and exit codes, tests assert them. A new code is
 * added here, in the group of its layer, with a default hint when there is something general the user can do.
 */

/** The catalogue: code → the layer it belongs to and a default hint (a throw site may give a more precise one). */
export const ERROR_CATALOGUE = {
  // --- general
  ABORTED: { layer: 'general' },
  TIMEOUT: { layer: 'general' },
  CLOSED: { layer: 'general' },
  SHUTTING_DOWN: { layer: 'general' },
  INVALID_ARGUMENT: { layer: 'general' },
  INTERNAL_ERROR: { layer: 'general', hint: 'this is a bug: please report it with the log (--verbose)' },
  USAGE: { layer: 'general' },
  BAD_OPTION: { layer: 'general' },
  BAD_ADDRESS: { layer: 'general' },
  RESOLVE_FAILED: { layer: 'general', hint: 'check the host name and the DNS configuration' },

  // --- identity and files
  NOT_PEM: { layer: 'identity' },
  NOT_RSA: { layer: 'identity', hint: 'DHTNet device keys are RSA: generate one with dhtnet-crtmgr' },
  BAD_KEY: { layer: 'identity' },
  BAD_KEY_SIZE: { layer: 'identity' },
  BAD_CERTIFICATE: { layer: 'identity' },
  BAD_CSR: { layer: 'identity' },
  BAD_NAME: { layer: 'identity' },
  BAD_IDENTITY: { layer: 'identity' },
  BAD_IDENTITY_SPEC: { layer: 'identity' },
  BAD_PATH: { layer: 'identity' },
  BAD_PEER_ID: { layer: 'identity', hint: 'print a peer id with: dhtnet-crtmgr -a -c <certificate>' },
  KEY_MISMATCH: { layer: 'identity' },
  KEY_PASSWORD: { layer: 'identity' },
  KEY_PERMISSIONS: { layer: 'identity', hint: 'make the key readable by its owner only: chmod 600 <key>' },
  KEYGEN_FAILED: { layer: 'identity' },
  NOT_CA: { layer: 'identity' },
  NEEDS_ISSUER: { layer: 'identity' },
  SELF_SIGNED_DEVICE: { layer: 'identity' },
  CHAIN_INVALID: { layer: 'identity' },
  CERT_EXPIRED: { layer: 'identity' },
  CERT_NOT_YET_VALID: { layer: 'identity', hint: "check this machine's clock" },
  IDENTITY_FILE_MISSING: { layer: 'identity' },
  FILE_MISSING: { layer: 'identity' },
  IDENTITY_FILE_UNREADABLE: { layer: 'identity' },
  IDENTITY_NOT_FOUND: { layer: 'identity' },
  AMBIGUOUS_IDENTITY: { layer: 'identity' },
  NO_IDENTITY: { layer: 'identity' },
  NO_HOME: { layer: 'identity' },
  SERVER_CA_MISSING: { layer: 'identity' },
  FILE_EXISTS: { layer: 'identity', hint: 'give --force to overwrite, or another output folder' },
  WRITE_FAILED: { layer: 'identity' },
  NOT_A_TTY: { layer: 'identity' },

  // --- DHT
  ALREADY_STARTED: { layer: 'dht' },
  BIND_FAILED: { layer: 'dht', hint: 'the port may be in use: choose another one, or 0 for any' },
  NO_SOCKET: { layer: 'dht' },
  DHT_STOPPED: { layer: 'dht' },
  DHT_NOT_CONNECTED: { layer: 'dht', hint: 'check the bootstrap address (-b host[:port]) and that it runs' },
  PUBLIC_BOOTSTRAP_FORBIDDEN: { layer: 'dht', hint: 'give a local bootstrap with -b host:port' },
  BAD_VALUE: { layer: 'dht' },
  VALUE_TOO_BIG: { layer: 'dht' },
  DECRYPT_FAILED: { layer: 'dht' },
  SEQ_EXHAUSTED: { layer: 'dht' },
  PERSIST_READ: { layer: 'dht' },
  PERSIST_WRITE: { layer: 'dht' },
  DHT_REMOTE_ERROR: { layer: 'dht' },
  REJECTED_KEY: { layer: 'dht' },
  BUDGET_EXCEEDED: { layer: 'dht' },

  // --- transports (ICE, TLS, WebRTC, TURN)
  TRANSPORT_CLOSED: { layer: 'transport' },
  TRANSPORT_ERROR: { layer: 'transport' },
  WEBRTC_ERROR: { layer: 'transport' },
  BAD_SDP: { layer: 'transport' },
  BAD_ICE_MESSAGE: { layer: 'transport' },
  BAD_ICE_SERVER: { layer: 'transport' },
  ICE_FAILED: { layer: 'transport', hint: 'no network path to the peer: configure a TURN server (-t, -u, -w)' },
  UDP_BLOCKED: { layer: 'transport', hint: 'this network seems to block UDP: configure a TURN server over TCP (-t host:3478 -u user -w pass)' },
  TLS_FAILED: { layer: 'transport' },
  UNSUPPORTED_TRANSPORT: { layer: 'transport' },
  STUN_ERROR: { layer: 'transport' },
  TURN_AUTH_FAILED: { layer: 'transport', hint: 'check the TURN user name and password (-u, -w) and realm (-r)' },
  TURN_REFUSED: { layer: 'transport' },
  TURN_UNREACHABLE: { layer: 'transport', hint: 'check the TURN server address (-t host[:port]) and that it runs' },

  // --- multiplexing
  CHANNEL_CLOSED: { layer: 'mux' },
  CHANNEL_DECLINED: { layer: 'mux' },
  CHANNEL_RESET: { layer: 'mux' },
  BAD_CHANNEL_NAME: { layer: 'mux' },
  TOO_MANY_CHANNELS: { layer: 'mux' },
  MESSAGE_TOO_LARGE: { layer: 'mux' },
  PROTOCOL_ERROR: { layer: 'mux', hint: 'the peer runs an incompatible or faulty implementation' },
  PEER_UNREACHABLE: { layer: 'mux' },
  CONNECTION_CLOSED: { layer: 'mux' },

  // --- NAT port mapping
  NO_GATEWAY: { layer: 'nat' },
  MAPPING_FAILED: { layer: 'nat' },

  // --- connections
  BAD_REQUEST: { layer: 'connection' },
  CERT_NOT_FOUND: { layer: 'connection', hint: 'the device must be online (it publishes its certificate when it starts), and the id must be right' },
  PEER_NOT_FOUND: { layer: 'connection', hint: 'check the DHT bootstrap: the node must be connected to the network the peer uses' },
  UNTRUSTED: { layer: 'connection' },
  REFUSED: { layer: 'connection' },
  BUSY: { layer: 'connection' },
  NOT_CONNECTED: { layer: 'connection' },
  IDENTITY_MISMATCH: { layer: 'connection' },

  // --- TUN (@dhtnet/tun)
  TUN_UNAVAILABLE: { layer: 'tun', hint: '/dev/net/tun is missing: load the module with `modprobe tun`, or give the container the device (docker: --device /dev/net/tun)' },
  TUN_PERMISSION: { layer: 'tun', hint: 'creating a TUN interface needs CAP_NET_ADMIN: run as root or `setcap cap_net_admin+ep $(which node)`' },
  TUN_ERROR: { layer: 'tun' },
} as const satisfies Record<string, { layer: ErrorLayer; hint?: string }>

export type ErrorLayer = 'general' | 'identity' | 'dht' | 'transport' | 'mux' | 'nat' | 'connection' | 'tun'

/** Every code a DhtnetError may carry. */
export type ErrorCode = keyof typeof ERROR_CATALOGUE

export class DhtnetError extends Error {
  readonly code: ErrorCode
  /** What the user can do about it, when there is something to do. */
  readonly hint?: string
  /** A failure that a new attempt may well not meet (a race inside a library): the connection manager retries once. */
  readonly retryable: boolean

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; hint?: string | undefined; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'DhtnetError'
    this.code = code
    this.retryable = options.retryable ?? false
    const entry = ERROR_CATALOGUE[code] as { readonly hint?: string }
    const hint = options.hint ?? entry.hint
    if (hint !== undefined) this.hint = hint
  }
}

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CATALOGUE, code)
}

export function isDhtnetError(err: unknown, code?: ErrorCode): err is DhtnetError {
  return err instanceof DhtnetError && (code === undefined || err.code === code)
}

/** The message of anything thrown: an Error's message, else its text. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Reject with an ABORTED error if the signal is already aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DhtnetError('ABORTED', 'operation aborted', { cause: signal.reason })
}
