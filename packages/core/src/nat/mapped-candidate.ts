/**
 * The glue between a port mapping and a candidate: for WebRTC, a free local UDP port to pin the ICE agent to and the
 * server-reflexive candidate line for the mapped external address (DHTNet adds its UPnP srflx candidate the same
 * way, dhtnet-core.md §8.4); for ICE-TCP, the srflx `tcptype passive` candidate of a TCP mapping of the listening
 * port (what IceTcpTransportOptions.mappedCandidates returns).
 */
import { createSocket } from 'node:dgram'
import type { PortMapping } from './port-mapper.js'

/** A UDP port that is free right now (bound once to port 0, then released). */
export function freeUdpPort(bindAddress?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket(bindAddress?.includes(':') ? 'udp6' : 'udp4')
    s.once('error', (err) => {
      s.close()
      reject(err)
    })
    s.bind(0, bindAddress, () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** ICE priority (RFC 8445 §5.1.2.1): srflx type preference 100, below host (126) and prflx (110). */
export function srflxPriority(localPreference = 65535, component = 1): number {
  return 100 * 2 ** 24 + localPreference * 2 ** 8 + (256 - component)
}

/**
 * Add `a=candidate:… typ srflx raddr … rport …` for `mapping` to the first media section of `sdp`, after its
 * last candidate (before `a=end-of-candidates`). raddr is the IPv4 host candidate on the mapped port when there
 * is one (else 0.0.0.0). Returns the SDP unchanged when it has no media section or already names that address.
 */
export function addMappedCandidate(sdp: string, mapping: PortMapping): string {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n'
  const lines = sdp.split(/\r?\n/)
  const mediaAt = lines.findIndex((l) => l.startsWith('m='))
  if (mediaAt < 0) return sdp
  let end = lines.findIndex((l, i) => i > mediaAt && l.startsWith('m='))
  if (end < 0) end = lines.length
  let insertAt = end
  let raddr = '0.0.0.0'
  const foundations = new Set<string>()
  for (let i = mediaAt + 1; i < end; i++) {
    const l = lines[i]!
    if (l.startsWith('a=candidate:')) {
      const f = l.slice('a=candidate:'.length).split(' ')
      foundations.add(f[0]!)
      if (f[4] === mapping.externalIp && Number(f[5]) === mapping.externalPort) return sdp
      if (f[7] === 'host' && Number(f[5]) === mapping.internalPort && /^\d+\.\d+\.\d+\.\d+$/.test(f[4] ?? '') && raddr === '0.0.0.0') raddr = f[4]!
      insertAt = i + 1
    } else if (l === 'a=end-of-candidates') {
      insertAt = i
      break
    }
  }
  if (insertAt === end) {
    // no candidate yet: put it at the end of the section, before trailing empty lines
    while (insertAt > mediaAt + 1 && lines[insertAt - 1] === '') insertAt--
  }
  let foundation = `upnp${mapping.externalPort}`
  for (let n = 1; foundations.has(foundation); n++) foundation = `upnp${mapping.externalPort}x${n}`
  const line = `a=candidate:${foundation} 1 UDP ${srflxPriority()} ${mapping.externalIp} ${mapping.externalPort} typ srflx raddr ${raddr} rport ${mapping.internalPort}`
  lines.splice(insertAt, 0, line)
  return lines.join(eol)
}

/**
 * The ICE-TCP srflx passive candidate of a TCP mapping: `{ address: externalIp, port: externalPort, localAddress }`
 * (localAddress = the address the gateway forwards to, the candidate's base). undefined for a UDP mapping.
 */
export function tcpMappedCandidate(mapping: PortMapping): { address: string; port: number; localAddress: string } | undefined {
  if (mapping.protocol !== 'TCP' || mapping.internalIp === undefined) return undefined
  return { address: mapping.externalIp, port: mapping.externalPort, localAddress: mapping.internalIp }
}
