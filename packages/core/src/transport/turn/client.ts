/**
 * TurnTcpClient.allocate(): a TCP relay on a TURN server over TCP or TLS (RFC 8656 with RFC 6062's
 * REQUESTED-TRANSPORT = TCP), as DHTNet's TurnTransport makes one (PJ_TURN_TP_TCP, static credentials, port 3478).
 *
 *   resolve the server once → connect (TLS handshake for turns:) → Allocate without credentials → 401 with REALM and
 *   NONCE → Allocate with them (438 handled) → XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS, LIFETIME → TurnAllocation.
 *
 * Errors (DhtnetError): TURN_AUTH_FAILED (401 with a fresh nonce, 441), TURN_REFUSED (403, 437, 442, 486, 508 and
 * other error answers), TURN_UNREACHABLE (no connection, no answer, the whole allocate over `allocateMs`),
 * TLS_FAILED (certificate), BAD_ICE_SERVER / UNSUPPORTED_TRANSPORT (the address), ABORTED. No message names the
 * user name or the password.
 */
import { DhtnetError, isDhtnetError, throwIfAborted } from '../../errors.js'
import { toLogger } from '../../util/log.js'
import { StunAttr, StunMethod } from '../stun/constants.js'
import { StunMessageBuilder } from '../stun/builder.js'
import { formatHostPort, type TransportAddress } from '../stun/ip.js'
import type { StunMessage } from '../stun/message.js'
import { LongTermCredentials, printable } from './auth.js'
import { TurnConnection, describeEndpoint, openServerSocket, type ServerEndpoint } from './connection.js'
import { TurnAllocation } from './allocation.js'
import { TurnErrorCode, classifyTurnError, encodeRequestedTransport, errorCodeOf, reasonOf } from './attributes.js'
import { parseTurnServer, resolveTurnHost } from './server-address.js'
import { DEFAULT_LIFETIME_S, DEFAULT_TURN_LIMITS, DEFAULT_TURN_TIMEOUTS, type TurnTcpAllocateOptions } from './options.js'

/** Longest user name or password accepted (RFC 8489: USERNAME < 513 bytes). */
const MAX_CREDENTIAL_BYTES = 512

export const TurnTcpClient = {
  /** A TCP relay allocation; see the file header for the steps and errors. */
  allocate(options: TurnTcpAllocateOptions): Promise<TurnAllocation> {
    return allocateTcpRelay(options)
  },
}

export async function allocateTcpRelay(options: TurnTcpAllocateOptions): Promise<TurnAllocation> {
  throwIfAborted(options.signal)
  const logger = toLogger(options.logger)
  const timeouts = { ...DEFAULT_TURN_TIMEOUTS, ...options.timeouts }
  const limits = { ...DEFAULT_TURN_LIMITS, ...options.limits }
  const parsed = parseTurnServer(options.server, options.transport)
  const username = options.username ?? parsed.username
  const password = options.password ?? parsed.password
  if (!username || password === undefined || password === '') {
    throw new DhtnetError('BAD_ICE_SERVER', 'a TURN server needs a user name and a password', { hint: 'give -u USER -w PASSWORD (turn_user, turn_pass)' })
  }
  if (Buffer.byteLength(username) > MAX_CREDENTIAL_BYTES || Buffer.byteLength(password) > MAX_CREDENTIAL_BYTES) {
    throw new DhtnetError('BAD_ICE_SERVER', `TURN user names and passwords are at most ${MAX_CREDENTIAL_BYTES} bytes`)
  }
  const lifetimeS = options.lifetimeS ?? DEFAULT_LIFETIME_S
  if (!Number.isInteger(lifetimeS) || lifetimeS < 1 || lifetimeS > 0xffffffff) throw new DhtnetError('INVALID_ARGUMENT', `bad TURN lifetime ${lifetimeS}`)

  const started = Date.now()
  const deadline = AbortSignal.timeout(timeouts.allocateMs)
  const signal = AbortSignal.any([deadline, ...(options.signal ? [options.signal] : [])])
  const what = `${parsed.transport === 'tls' ? 'turns' : 'turn'}:${formatHostPort(parsed.host, parsed.port)}`
  let control: TurnConnection | undefined
  try {
    const address = await resolveTurnHost(parsed.host, signal)
    const server: ServerEndpoint = { address, port: parsed.port, transport: parsed.transport, host: parsed.host, tls: options.tls }
    const socket = await openServerSocket(server, { timeoutMs: timeouts.connectMs, signal })
    control = new TurnConnection(socket, server, { maxMessageBytes: limits.maxMessageBytes, maxPendingTransactions: limits.maxPendingTransactions }, logger)
    const credentials = new LongTermCredentials(username, password, options.realm)
    const response = await credentials.request(
      control,
      () => StunMessageBuilder.create(StunMethod.ALLOCATE, 'request').add(StunAttr.REQUESTED_TRANSPORT, encodeRequestedTransport()).addUint32(StunAttr.LIFETIME, lifetimeS),
      { timeoutMs: timeouts.transactionMs, signal, what: 'Allocate' },
    )
    const mismatch = credentials.realmMismatch()
    if (mismatch) logger('warn', `turn: ${mismatch}`)
    if (response.class !== 'success') throw allocateError(response, describeEndpoint(server))
    const { relayed, mapped, granted } = readAllocateSuccess(response, lifetimeS)
    if (signal.aborted) throw signal.reason
    const allocation = new TurnAllocation({
      control,
      credentials,
      server,
      relayedAddress: relayed,
      mappedAddress: mapped,
      lifetimeS: granted,
      requestedLifetimeS: lifetimeS,
      timeouts,
      limits,
      logger,
    })
    logger(
      'info',
      `turn: TCP relay ${formatHostPort(relayed.address, relayed.port)} on ${describeEndpoint(server)}` +
        `${credentials.realm !== undefined ? ` (realm ${printable(credentials.realm)})` : ''}, lifetime ${granted} s, in ${Date.now() - started} ms`,
    )
    return allocation
  } catch (err) {
    control?.close()
    if (options.signal?.aborted) throw new DhtnetError('ABORTED', `allocating a TCP relay on ${what} aborted`, { cause: err })
    if (deadline.aborted && !(isDhtnetError(err) && (err.code === 'TURN_AUTH_FAILED' || err.code === 'TURN_REFUSED'))) {
      throw new DhtnetError('TURN_UNREACHABLE', `no TCP relay allocated on ${what} within ${timeouts.allocateMs} ms`, { cause: err })
    }
    if (isDhtnetError(err, 'STUN_ERROR')) {
      throw new DhtnetError('TURN_UNREACHABLE', `${what} does not answer as a TURN server: ${err.message}`, {
        cause: err,
        hint: 'check the TURN server address and port: what answers there is not a TURN server',
      })
    }
    if (isDhtnetError(err)) throw err
    throw new DhtnetError('TURN_UNREACHABLE', `allocating a TCP relay on ${what} failed: ${(err as Error).message}`, { cause: err })
  }
}

function allocateError(response: StunMessage, where: string): DhtnetError {
  const code = errorCodeOf(response)
  const reason = reasonOf(response)
  switch (classifyTurnError(code)) {
    case 'refused':
    case 'allocation-gone': {
      const why =
        code === TurnErrorCode.ALLOCATION_QUOTA_REACHED
          ? 'allocation quota reached'
          : code === TurnErrorCode.INSUFFICIENT_CAPACITY
            ? 'insufficient capacity'
            : code === TurnErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL
              ? 'TCP relays are not allowed there'
              : code === TurnErrorCode.FORBIDDEN
                ? 'forbidden'
                : 'refused'
      const hint =
        code === TurnErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL
          ? 'the TURN server must allow TCP relays (coturn: do not set no-tcp-relay)'
          : code === TurnErrorCode.ALLOCATION_QUOTA_REACHED
            ? 'too many allocations for this user (coturn: user-quota); close unused ones or raise the quota'
            : undefined
      return new DhtnetError('TURN_REFUSED', `the TURN server ${where} refused a TCP relay (${why}): ${reason}`, hint ? { hint } : {})
    }
    default:
      return new DhtnetError('TURN_REFUSED', `the TURN server ${where} refused the allocation: ${reason}`)
  }
}

function readAllocateSuccess(response: StunMessage, asked: number): { relayed: TransportAddress; mapped: TransportAddress | undefined; granted: number } {
  let relayed: TransportAddress | undefined
  let mapped: TransportAddress | undefined
  let granted: number | undefined
  try {
    relayed = response.xorAddress(StunAttr.XOR_RELAYED_ADDRESS)
    mapped = response.xorMappedAddress
    granted = response.lifetime
  } catch (err) {
    throw new DhtnetError('STUN_ERROR', `the TURN server's Allocate answer is malformed: ${(err as Error).message}`, { cause: err })
  }
  if (!relayed || relayed.port === 0) throw new DhtnetError('STUN_ERROR', "the TURN server's Allocate answer has no relayed address")
  return { relayed, mapped, granted: Math.max(1, Math.min(granted ?? asked, 0x7fffffff)) }
}
