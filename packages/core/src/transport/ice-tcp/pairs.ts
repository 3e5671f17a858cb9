/**
 * Candidate pairs for ICE-TCP (RFC 6544 §6.2): our active host candidates × the peer's passive candidates of the same
 * family, pruned of what can never work or must not be tried (IPv6 link-local: announced, never checked; loopback
 * unless both sides are loopback and loopback is allowed; unspecified/multicast; port 0), deduplicated and bounded.
 */
import type { IceCandidate } from './candidates.js'
import { isLinkLocal, isLoopback, isUnusable, type HostAddress } from './gather.js'
import type { IceRole } from './check-messages.js'

export interface OutboundPair {
  readonly local: HostAddress
  readonly localPriority: number
  readonly remote: IceCandidate
}

/** RFC 8445 §6.1.2.3: 2^32·min(G,D) + 2·max(G,D) + (G > D ? 1 : 0), G = the controlling side's candidate. */
export function pairPriority(role: IceRole, localPriority: number, remotePriority: number): bigint {
  const g = BigInt(role === 'controlling' ? localPriority : remotePriority)
  const d = BigInt(role === 'controlling' ? remotePriority : localPriority)
  const [min, max] = g < d ? [g, d] : [d, g]
  return (min << 32n) + 2n * max + (g > d ? 1n : 0n)
}

/** Why a remote passive candidate is not tried, or undefined when it is. */
export function skipReason(remote: IceCandidate, includeLoopback: boolean): string | undefined {
  if (remote.transport !== 'TCP' || remote.tcpType !== 'passive') return 'not a TCP passive candidate'
  if (remote.port === 0) return 'port 0'
  if (isUnusable(remote.address)) return 'unusable address'
  if (remote.family === 6 && isLinkLocal(remote.address)) return 'IPv6 link-local'
  if (isLoopback(remote.address) && !includeLoopback) return 'loopback'
  return undefined
}

export function outboundPairs(
  remote: readonly IceCandidate[],
  hosts: readonly HostAddress[],
  localPriorityOf: (host: HostAddress) => number,
  role: IceRole,
  includeLoopback: boolean,
  max: number,
): OutboundPair[] {
  const pairs: OutboundPair[] = []
  const seen = new Set<string>()
  for (const r of remote) {
    if (skipReason(r, includeLoopback)) continue
    for (const h of hosts) {
      if (h.family !== r.family || isLoopback(h.address) !== isLoopback(r.address)) continue
      if (h.family === 6 && isLinkLocal(h.address)) continue
      const key = `${h.address}|${r.address}|${r.port}`
      if (seen.has(key)) continue
      seen.add(key)
      pairs.push({ local: h, localPriority: localPriorityOf(h), remote: r })
    }
  }
  pairs.sort((a, b) => {
    const pa = pairPriority(role, a.localPriority, a.remote.priority)
    const pb = pairPriority(role, b.localPriority, b.remote.priority)
    return pa > pb ? -1 : pa < pb ? 1 : 0
  })
  return pairs.slice(0, max)
}
