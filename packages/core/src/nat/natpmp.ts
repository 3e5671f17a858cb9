/**
 * A minimal NAT-PMP client (RFC 6886) for UDP and TCP mappings: external address, map, unmap.
 *
 * Our own rather than @achingbrain/nat-port-mapper's: that one always binds UDP 5350, sends the lifetime in ms
 * where the protocol wants seconds, and its unmap removes TCP mappings only (netlab.md, defects 1, 2, 4). Each
 * request here uses its own ephemeral socket, closed when the request ends: no handle outlives a call.
 */
import { createSocket } from 'node:dgram'
import { DhtnetError, throwIfAborted } from '../errors.js'

export const NATPMP_PORT = 5351
const OP_EXTERNAL_ADDRESS = 0
const OP_MAP_UDP = 1
const OP_MAP_TCP = 2

const RESULT_MESSAGES: Record<number, string> = {
  1: 'unsupported version',
  2: 'not authorized/refused (NAT-PMP disabled on the gateway?)',
  3: 'network failure (the gateway has no external address?)',
  4: 'out of resources (no ports left)',
  5: 'unsupported opcode',
}

export interface NatPmpMapResult {
  internalPort: number
  externalPort: number
  /** Lifetime granted by the gateway, seconds. */
  lifetimeS: number
}

/**
 * One request/response exchange with retransmission (RFC 6886 §3.1: 250 ms, doubling), bounded by `timeoutMs`.
 * Rejects with TIMEOUT when the gateway never answers, ABORTED on the signal.
 */
function exchange(
  gateway: string,
  request: Buffer,
  opcode: number,
  timeoutMs: number,
  signal?: AbortSignal,
  port = NATPMP_PORT,
  match: (msg: Buffer) => boolean = () => true,
): Promise<Buffer> {
  throwIfAborted(signal)
  return new Promise<Buffer>((resolve, reject) => {
    const socket = createSocket('udp4')
    let retransmit: NodeJS.Timeout | undefined
    let interval = 250
    const finish = (err: Error | undefined, msg?: Buffer) => {
      clearTimeout(deadline)
      clearTimeout(retransmit)
      signal?.removeEventListener('abort', onAbort)
      try {
        socket.close()
      } catch {
        // already closed
      }
      if (err) reject(err)
      else resolve(msg!)
    }
    const onAbort = () => finish(new DhtnetError('ABORTED', 'NAT-PMP request aborted', { cause: signal?.reason }))
    const deadline = setTimeout(() => finish(new DhtnetError('TIMEOUT', `no NAT-PMP answer from ${gateway}:${port} within ${timeoutMs} ms`)), timeoutMs)
    const send = () => {
      socket.send(request, port, gateway, (err) => {
        if (err) finish(new DhtnetError('NO_GATEWAY', `cannot send a NAT-PMP request to ${gateway}: ${err.message}`, { cause: err }))
      })
      retransmit = setTimeout(send, interval)
      interval *= 2
    }
    socket.on('error', (err) => finish(new DhtnetError('NO_GATEWAY', `NAT-PMP socket error: ${err.message}`, { cause: err })))
    socket.on('message', (msg, rinfo) => {
      // Only the gateway's answer to this opcode counts (RFC 6886 §3.1: ignore other sources).
      if (rinfo.address !== gateway || msg.length < 8 || msg[0] !== 0 || msg[1] !== 128 + opcode) return
      if (msg.readUInt16BE(2) === 0 && !match(msg)) return
      const result = msg.readUInt16BE(2)
      if (result !== 0) {
        finish(new DhtnetError('MAPPING_FAILED', `the NAT-PMP gateway ${gateway} refused: ${RESULT_MESSAGES[result] ?? `result code ${result}`}`))
        return
      }
      finish(undefined, msg)
    })
    signal?.addEventListener('abort', onAbort, { once: true })
    socket.bind(0, () => send())
  })
}

/** The gateway's external IPv4 address. */
export async function natPmpExternalAddress(gateway: string, options: { timeoutMs: number; signal?: AbortSignal; port?: number }): Promise<string> {
  const msg = await exchange(gateway, Buffer.from([0, OP_EXTERNAL_ADDRESS]), OP_EXTERNAL_ADDRESS, options.timeoutMs, options.signal, options.port)
  if (msg.length < 12) throw new DhtnetError('MAPPING_FAILED', `short NAT-PMP external address answer from ${gateway} (${msg.length} bytes)`)
  return `${msg[8]}.${msg[9]}.${msg[10]}.${msg[11]}`
}

/**
 * Map (lifetimeS > 0) or unmap (lifetimeS = 0: RFC 6886 §3.4, suggested external port 0) a UDP port.
 * The gateway may grant another external port and a shorter lifetime than asked: the answer says which.
 */
export function natPmpMapUdp(
  gateway: string,
  internalPort: number,
  suggestedExternalPort: number,
  lifetimeS: number,
  options: { timeoutMs: number; signal?: AbortSignal; port?: number },
): Promise<NatPmpMapResult> {
  return natPmpMap('UDP', gateway, internalPort, suggestedExternalPort, lifetimeS, options)
}

/** The same for a TCP port (opcode 2). */
export function natPmpMapTcp(
  gateway: string,
  internalPort: number,
  suggestedExternalPort: number,
  lifetimeS: number,
  options: { timeoutMs: number; signal?: AbortSignal; port?: number },
): Promise<NatPmpMapResult> {
  return natPmpMap('TCP', gateway, internalPort, suggestedExternalPort, lifetimeS, options)
}

async function natPmpMap(
  protocol: 'UDP' | 'TCP',
  gateway: string,
  internalPort: number,
  suggestedExternalPort: number,
  lifetimeS: number,
  options: { timeoutMs: number; signal?: AbortSignal; port?: number },
): Promise<NatPmpMapResult> {
  const opcode = protocol === 'TCP' ? OP_MAP_TCP : OP_MAP_UDP
  const req = Buffer.alloc(12)
  req[0] = 0
  req[1] = opcode
  req.writeUInt16BE(internalPort, 4)
  req.writeUInt16BE(lifetimeS === 0 ? 0 : suggestedExternalPort, 6)
  req.writeUInt32BE(lifetimeS, 8)
  // An answer for another internal port belongs to another request (DHTNet validates it the same way).
  const msg = await exchange(gateway, req, opcode, options.timeoutMs, options.signal, options.port, (m) => m.length >= 16 && m.readUInt16BE(8) === internalPort)
  return { internalPort, externalPort: msg.readUInt16BE(10), lifetimeS: msg.readUInt32BE(12) }
}
