/** Just enough IPv4/ICMP for the tests and the benchmark: parse a packet, answer an echo request, build UDP. */

/** The Internet checksum (RFC 1071) of buf[start, end). */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length): number {
  let sum = 0
  for (let i = start; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!
  if ((end - start) % 2 === 1) sum += buf[end - 1]! << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

export interface Ipv4Summary {
  length: number
  protocol: number
  ttl: number
  src: string
  dst: string
  headerChecksumOk: boolean
  icmp?: { type: number; code: number; id: number; seq: number; checksumOk: boolean }
}

const addr = (p: Uint8Array, at: number): string => `${p[at]}.${p[at + 1]}.${p[at + 2]}.${p[at + 3]}`

/** undefined when it is not a well-formed IPv4 packet (IPv6 and others included). */
export function parseIpv4(p: Uint8Array): Ipv4Summary | undefined {
  if (p.length < 20 || p[0]! >> 4 !== 4) return undefined
  const ihl = (p[0]! & 0x0f) * 4
  const total = (p[2]! << 8) | p[3]!
  if (ihl < 20 || total < ihl || total > p.length) return undefined
  const summary: Ipv4Summary = {
    length: total,
    protocol: p[9]!,
    ttl: p[8]!,
    src: addr(p, 12),
    dst: addr(p, 16),
    headerChecksumOk: internetChecksum(p, 0, ihl) === 0,
  }
  if (summary.protocol === 1 && total - ihl >= 8) {
    summary.icmp = {
      type: p[ihl]!,
      code: p[ihl + 1]!,
      id: (p[ihl + 4]! << 8) | p[ihl + 5]!,
      seq: (p[ihl + 6]! << 8) | p[ihl + 7]!,
      checksumOk: internetChecksum(p, ihl, total) === 0,
    }
  }
  return summary
}

/** The echo reply to an IPv4 ICMP echo request: addresses swapped, TTL 64, type 0, both checksums computed. */
export function echoReply(request: Uint8Array): Buffer {
  const ihl = (request[0]! & 0x0f) * 4
  const total = (request[2]! << 8) | request[3]!
  const reply = Buffer.from(request.subarray(0, total))
  reply.set(request.subarray(16, 20), 12)
  reply.set(request.subarray(12, 16), 16)
  reply[8] = 64
  reply.writeUInt16BE(0, 10)
  reply.writeUInt16BE(internetChecksum(reply, 0, ihl), 10)
  reply[ihl] = 0 // echo reply
  reply[ihl + 1] = 0
  reply.writeUInt16BE(0, ihl + 2)
  reply.writeUInt16BE(internetChecksum(reply, ihl, total), ihl + 2)
  return reply
}

/** An IPv4/UDP packet of `size` bytes in all (UDP checksum 0: allowed for IPv4). */
export function udpPacket(src: string, dst: string, srcPort: number, dstPort: number, size: number): Buffer {
  const p = Buffer.alloc(Math.max(size, 28))
  p[0] = 0x45
  p.writeUInt16BE(p.length, 2)
  p[6] = 0x40 // don't fragment
  p[8] = 64
  p[9] = 17
  p.set(src.split('.').map(Number), 12)
  p.set(dst.split('.').map(Number), 16)
  p.writeUInt16BE(internetChecksum(p, 0, 20), 10)
  p.writeUInt16BE(srcPort, 20)
  p.writeUInt16BE(dstPort, 22)
  p.writeUInt16BE(p.length - 20, 24)
  return p
}
