/**
 * The few SDP facts the connection layer needs: the DTLS fingerprint (bound to the device identity because the SDP
 * travels inside a value signed by the device key), a sanity check of what a peer sent, and recognising a C++
 * DHTNet peer's ICE message (which this implementation cannot speak).
 */
import { DhtnetError } from '../../errors.js'

/** Longest SDP we accept from a peer (ours are ~600 bytes; many candidates stay far below this). */
export const MAX_SDP_BYTES = 32 * 1024

/** Upper-case colon-separated hex, the form libdatachannel reports. */
export function normalizeFingerprint(value: string): string {
  const hex = value.replace(/[^0-9a-fA-F]/g, '').toUpperCase()
  return hex.match(/.{2}/g)?.join(':') ?? ''
}

/** The `a=fingerprint:sha-256` value of an SDP, normalised; undefined when absent. */
export function sdpFingerprint(sdp: string): string | undefined {
  const m = /^a=fingerprint:sha-256 ([0-9A-Fa-f:]+)\s*$/m.exec(sdp)
  return m ? normalizeFingerprint(m[1]!) : undefined
}

/** What a peer's `ice_msg` is. */
export type IceMessageKind = 'sdp' | 'dhtnet-ice' | 'unknown'

/**
 * 'sdp': a WebRTC session description (ours). 'dhtnet-ice': DHTNet's "ufrag\npwd\ncandidate..." form (pjnath ICE,
 * TLS over ICE-TCP). 'unknown': anything else.
 */
export function classifyIceMessage(msg: string): IceMessageKind {
  if (msg.startsWith('v=0') && /^m=application /m.test(msg)) return 'sdp'
  const lines = msg
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
  if (lines.length >= 2 && /^\S+$/.test(lines[0]!) && /^\S+$/.test(lines[1]!)) {
    const candidates = lines.slice(2)
    if (candidates.length === 0 || candidates.some((l) => /^\S+ \d+ (UDP|TCP) \d+ \S+ \d+ typ \w+/i.test(l))) return 'dhtnet-ice'
  }
  return 'unknown'
}

/** Check a peer's SDP before handing it to the native library: size, shape, a SHA-256 fingerprint. */
export function checkRemoteSdp(sdp: string, what: string): string {
  if (typeof sdp !== 'string' || sdp.length === 0) throw new DhtnetError('BAD_SDP', `${what}: empty session description`)
  if (Buffer.byteLength(sdp) > MAX_SDP_BYTES) {
    throw new DhtnetError('BAD_SDP', `${what}: session description of ${Buffer.byteLength(sdp)} bytes (limit ${MAX_SDP_BYTES})`)
  }
  if (!sdp.startsWith('v=0') || !/^m=application .*webrtc-datachannel/m.test(sdp)) {
    throw new DhtnetError('BAD_SDP', `${what}: not a WebRTC data-channel session description`)
  }
  const fp = sdpFingerprint(sdp)
  if (!fp) throw new DhtnetError('BAD_SDP', `${what}: the session description has no a=fingerprint:sha-256 line`)
  return fp
}

/** The candidate lines of an SDP (for diagnostics). */
export function sdpCandidates(sdp: string): string[] {
  return sdp
    .split(/\r?\n/)
    .filter((l) => l.startsWith('a=candidate:'))
    .map((l) => l.slice(2))
}
