/**
 * RFC 6062 §4.3/§4.4 data connections: a new TCP (or TLS) connection to the same server address, one authenticated
 * CONNECTION-BIND naming the CONNECTION-ID the server gave (in a CONNECTION-ATTEMPT indication or a CONNECT
 * response), and from its success response on, the socket carries the peer's bytes unchanged, both ways.
 */
import type { Socket } from 'node:net'
import { DhtnetError, isDhtnetError } from '../../errors.js'
import type { Logger } from '../../util/log.js'
import { StunMethod, StunAttr } from '../stun/constants.js'
import { StunMessageBuilder } from '../stun/builder.js'
import type { LongTermCredentials } from './auth.js'
import { TurnConnection, describeEndpoint, openServerSocket, type ConnectionLimits, type ServerEndpoint } from './connection.js'
import { encodeConnectionId, reasonOf } from './attributes.js'

export interface BindOptions {
  /** One bound for the connection, the TLS handshake and CONNECTION-BIND. */
  readonly timeoutMs: number
  readonly signal: AbortSignal
  readonly limits: ConnectionLimits
  readonly logger: Logger
}

/**
 * A socket bound to `connectionId`: a raw byte stream to the peer (bytes the server relayed before we read are in
 * it). Rejects TURN_UNREACHABLE (no connection, no answer in time), TURN_REFUSED (the server refused the bind, e.g.
 * the peer went away: 400/447), TURN_AUTH_FAILED, ABORTED. Nothing stays open on failure.
 */
export async function bindDataConnection(server: ServerEndpoint, credentials: LongTermCredentials, connectionId: number, options: BindOptions): Promise<Socket> {
  const deadline = AbortSignal.timeout(options.timeoutMs)
  const signal = AbortSignal.any([options.signal, deadline])
  const translate = (err: unknown): unknown => {
    if (options.signal.aborted) return new DhtnetError('ABORTED', 'binding a TURN data connection aborted', { cause: err })
    if (deadline.aborted) return new DhtnetError('TURN_UNREACHABLE', `no bound data connection to ${describeEndpoint(server)} within ${options.timeoutMs} ms`, { cause: err })
    return err
  }
  let socket: Socket
  try {
    socket = await openServerSocket(server, { timeoutMs: options.timeoutMs, signal })
  } catch (err) {
    throw translate(err)
  }
  const connection = new TurnConnection(socket, server, options.limits, options.logger)
  try {
    const response = await credentials
      .forNewConnection()
      .request(connection, () => StunMessageBuilder.create(StunMethod.CONNECTION_BIND, 'request').add(StunAttr.CONNECTION_ID, encodeConnectionId(connectionId)), {
        timeoutMs: options.timeoutMs,
        signal,
        detachOnSuccess: true,
        what: 'CONNECTION-BIND',
      })
    if (response.class !== 'success') {
      throw new DhtnetError('TURN_REFUSED', `the TURN server refused to bind connection ${connectionId}: ${reasonOf(response)}`)
    }
    return socket
  } catch (err) {
    connection.close()
    socket.destroy()
    throw isDhtnetError(err, 'ABORTED') || isDhtnetError(err, 'TURN_UNREACHABLE') ? translate(err) : err
  }
}
