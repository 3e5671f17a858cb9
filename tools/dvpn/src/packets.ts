/**
 * IP packets as the TUN gives them (IFF_NO_PI: raw IPv4 or IPv6) and the datagram format of our protocol: one
 * datagram carries one or more whole packets back to back, each delimited by the length in its own IP header, so a
 * single packet costs no extra byte and a batch costs none either.
 *
 * Parsing is bounded by the datagram: a header that is short, claims less than a header or more than what is left
 * ends the parse; what came before it is kept (counted by the caller as malformed).
 */

export const IPV4_HEADER = 20
export const IPV6_HEADER = 40
/** The largest IP packet (the TUN's largest MTU). */
export const MAX_PACKET = 65535

/** The length an IP packet declares (header included), or 0 when `buf[offset..]` is not the start of one. */
export function declaredLength(buf: Uint8Array, offset: number): number {
  const left = buf.length - offset
  if (left < 1) return 0
  const version = buf[offset]! >> 4
  if (version === 4) {
    if (left < IPV4_HEADER) return 0
    const n = (buf[offset + 2]! << 8) | buf[offset + 3]!
    const ihl = (buf[offset]! & 0x0f) * 4
    return n >= IPV4_HEADER && n >= ihl ? n : 0
  }
  if (version === 6) {
    if (left < IPV6_HEADER) return 0
    return IPV6_HEADER + ((buf[offset + 4]! << 8) | buf[offset + 5]!)
  }
  return 0
}

/**
 * Split a datagram into its packets (views of it), appended to `out`. Returns the number of bytes that were not
 * whole packets (0 for a well-formed datagram).
 */
export function splitPackets(datagram: Buffer, out: Buffer[]): number {
  let off = 0
  while (off < datagram.length) {
    const n = declaredLength(datagram, off)
    if (n === 0 || n > datagram.length - off) return datagram.length - off
    out.push(datagram.subarray(off, off + n))
    off += n
  }
  return 0
}

/**
 * Group packets into datagrams of at most `maxBytes`: a packet alone is sent as it is (no copy); consecutive packets
 * that fit together are copied into one buffer. A packet over `maxBytes` is skipped and counted in `tooLarge`.
 */
export function batchPackets(packets: readonly Buffer[], maxBytes: number, emit: (datagram: Buffer, count: number) => void): { tooLarge: number } {
  let tooLarge = 0
  let group: Buffer[] = []
  let groupBytes = 0
  const flush = (): void => {
    if (group.length === 1) emit(group[0]!, 1)
    else if (group.length > 1) emit(Buffer.concat(group, groupBytes), group.length)
    group = []
    groupBytes = 0
  }
  for (const p of packets) {
    if (p.length > maxBytes) {
      tooLarge++
      continue
    }
    if (groupBytes + p.length > maxBytes) flush()
    group.push(p)
    groupBytes += p.length
  }
  flush()
  return { tooLarge }
}

// --- addresses in headers ------------------------------------------------------------------------------------------

export function ipVersion(p: Uint8Array): number {
  return p.length > 0 ? p[0]! >> 4 : 0
}

export function src4(p: Buffer): number {
  return p.readUInt32BE(12)
}

export function dst4(p: Buffer): number {
  return p.readUInt32BE(16)
}

/** High and low 64 bits of the IPv6 source address. */
export function src6(p: Buffer): bigint {
  return (p.readBigUInt64BE(8) << 64n) | p.readBigUInt64BE(16)
}

export function dst6(p: Buffer): bigint {
  return (p.readBigUInt64BE(24) << 64n) | p.readBigUInt64BE(32)
}

/** Only what a tunnel forwards: a whole IPv4 or IPv6 header with a declared length equal to the packet's. */
export function isWholePacket(p: Buffer): boolean {
  return p.length >= IPV4_HEADER && declaredLength(p, 0) === p.length
}
