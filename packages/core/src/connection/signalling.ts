/**
 * DHTNet's connection request (`PeerConnectionRequest`, reference §2.1): the inner payload of an encrypted DHT value
 * of type 0 and user type "peer_request", put at SHA1("peer:" + hex id) of the recipient.
 *
 *   msgpack map { "id": uint64, "ice_msg": str, "isAnswer": bool, "connType": str }
 *
 * `id` is the connection id chosen by the requester (random in [1, 2^53]); the answer echoes it. `ice_msg` is DHTNet's
 * own ICE-TCP description ("ufrag\npwd\ncandidate lines", transport/ice-tcp), empty when we do not offer that
 * transport. Extensions, which msgpack-c's MSGPACK_DEFINE_MAP skips so a C++ peer is not disturbed:
 *  - `"dnx": 1` on every value of ours: the peer runs this implementation (native multiplexer, the extensions below);
 *    its absence means a C++ DHTNet peer (DHTNet's MultiplexedSocket over ICE-TCP + TLS only);
 *  - `"sdp": "<WebRTC SDP>"`: the WebRTC transport's description, when offered;
 *  - `"cert": "<PEM chain>"` on requests (see `certificate`);
 *  - `"refused": "<CODE>"` on answers (with an empty ice_msg), so that a requester we decline fails at once with
 *    that code instead of waiting for a timeout.
 */
import { randomInt } from 'node:crypto'
import { DhtnetError } from '../errors.js'
import { msgpackDecode, msgpackEncode } from '../dht/value.js'

export const PEER_REQUEST_USER_TYPE = 'peer_request'
/** DHTNet draws ids uniformly in [1, 2^53]. */
export const ID_MAX = 2n ** 53n
/** Largest ice_msg (and sdp) we accept (ours are < 1 KiB; DHTNet's with many candidates a few KiB). */
const MAX_ICE_MSG = 64 * 1024
/** Version of our extensions (`dnx`). */
export const NATIVE_SIGNALLING_VERSION = 1
const MAX_CONN_TYPE = 256
/** A PEM chain of a few RSA-4096 certificates stays far below this. */
const MAX_CERT_PEM = 32 * 1024

/** Reason codes a responder may send back. */
export type RefusalCode = 'REFUSED' | 'UNTRUSTED' | 'CERT_NOT_FOUND' | 'UNSUPPORTED_TRANSPORT' | 'BUSY'
const REFUSAL_CODES: readonly RefusalCode[] = ['REFUSED', 'UNTRUSTED', 'CERT_NOT_FOUND', 'UNSUPPORTED_TRANSPORT', 'BUSY']

export interface PeerConnectionRequest {
  id: bigint
  iceMsg: string
  isAnswer: boolean
  connType: string
  /** Our extension on answers: the request was declined for this reason. */
  refused?: RefusalCode
  /** Our extension: the version of our signalling extensions; absent for a C++ DHTNet peer. */
  native?: number
  /** Our extension: the WebRTC transport's description (SDP). */
  sdp?: string
  /**
   * Our extension on requests: the requester's certificate chain (PEM, leaf first), so the responder need not look
   * it up on the DHT (one round trip less, and no race with the requester's own certificate publication). It is
   * only believed when its key is the key that signed the value.
   */
  certificate?: string
}

export function newRequestId(): bigint {
  // randomInt's range is < 2^48, so compose two draws: [0, 2^53) + 1
  const hi = BigInt(randomInt(0, 2 ** 21))
  const lo = BigInt(randomInt(0, 2 ** 32))
  return ((hi << 32n) | lo) + 1n
}

export function encodeRequest(req: PeerConnectionRequest): Buffer {
  const map: Record<string, unknown> = {
    id: req.id,
    ice_msg: req.iceMsg,
    isAnswer: req.isAnswer,
    connType: req.connType,
  }
  if (req.native !== undefined) map.dnx = req.native
  if (req.sdp) map.sdp = req.sdp
  if (req.refused) map.refused = req.refused
  if (req.certificate) map.cert = req.certificate
  return msgpackEncode(map)
}

/** Decode and validate. Throws DhtnetError('BAD_REQUEST') naming what is wrong. */
export function decodeRequest(data: Uint8Array | undefined): PeerConnectionRequest {
  const bad = (why: string) => new DhtnetError('BAD_REQUEST', `malformed connection request: ${why}`)
  if (!data || data.length === 0) throw bad('no data')
  if (data.length > 2 * MAX_ICE_MSG + MAX_CERT_PEM + 1024) throw bad(`${data.length} bytes is too large`)
  let obj: unknown
  try {
    obj = msgpackDecode(data, 'connection request')
  } catch {
    throw bad('not msgpack')
  }
  if (obj instanceof Map) obj = Object.fromEntries(obj)
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj) || obj instanceof Uint8Array) throw bad('not a map')
  const o = obj as Record<string, unknown>
  const rawId = o.id
  let id: bigint
  if (typeof rawId === 'bigint') id = rawId
  else if (typeof rawId === 'number' && Number.isSafeInteger(rawId)) id = BigInt(rawId)
  else throw bad('id is not an integer')
  if (id <= 0n || id >= 2n ** 64n) throw bad('id out of range')
  const iceMsg = typeof o.ice_msg === 'string' ? o.ice_msg : o.ice_msg instanceof Uint8Array ? Buffer.from(o.ice_msg).toString('utf8') : undefined
  if (iceMsg === undefined) throw bad('ice_msg is not a string')
  if (iceMsg.length > MAX_ICE_MSG) throw bad('ice_msg is too large')
  const isAnswer = o.isAnswer === undefined ? false : o.isAnswer
  if (typeof isAnswer !== 'boolean') throw bad('isAnswer is not a boolean')
  const connType = o.connType === undefined ? '' : o.connType
  if (typeof connType !== 'string' || connType.length > MAX_CONN_TYPE) throw bad('connType is not a short string')
  const req: PeerConnectionRequest = { id, iceMsg, isAnswer, connType }
  if (typeof o.cert === 'string' && o.cert.length <= MAX_CERT_PEM) req.certificate = o.cert
  if (typeof o.dnx === 'number' && Number.isSafeInteger(o.dnx) && o.dnx >= 1) req.native = o.dnx
  if (typeof o.sdp === 'string' && o.sdp.length <= MAX_ICE_MSG) req.sdp = o.sdp
  if (typeof o.refused === 'string') {
    req.refused = (REFUSAL_CODES as readonly string[]).includes(o.refused) ? (o.refused as RefusalCode) : 'REFUSED'
  }
  return req
}

/**
 * Ids of requests and answers already handled (reference §2.6): a replayed DHT value is ignored. Keyed by signer
 * and id, kept 24 h, bounded in size (oldest dropped first).
 */
export class TreatedIds {
  private readonly seen = new Map<string, number>()
  constructor(
    private readonly maxEntries = 16384,
    private readonly ttlMs = 24 * 3600 * 1000,
  ) {}

  /** true if (signer, id) was seen before; records it otherwise. */
  checkAndAdd(signer: string, id: bigint, now = Date.now()): boolean {
    const key = `${signer}:${id}`
    const at = this.seen.get(key)
    if (at !== undefined && now - at < this.ttlMs) return true
    this.seen.delete(key)
    this.seen.set(key, now)
    this.prune(now)
    return false
  }

  get size(): number {
    return this.seen.size
  }

  private prune(now: number): void {
    for (const [k, at] of this.seen) {
      if (this.seen.size <= this.maxEntries && now - at < this.ttlMs) break
      this.seen.delete(k)
    }
  }
}
