/**
 * A fast structural pre-check of a msgpack datagram, run before msgpackr decodes it: every length must fit in the
 * buffer, nesting must stay shallow and exactly one object must fill the datagram. It makes hostile input
 * (deep nesting, huge declared sizes) cheap to refuse; the decoder then only sees well-formed shapes.
 *
 * It runs on every datagram, so it is written to stay cheap: no closure created per byte, lengths read inline
 * (a closure in the loop made it ~15x slower).
 */

function u16(buf: Uint8Array, pos: number): number {
  return (buf[pos]! << 8) | buf[pos + 1]!
}

function u32(buf: Uint8Array, pos: number): number {
  return ((buf[pos]! << 24) >>> 0) + (buf[pos + 1]! << 16) + (buf[pos + 2]! << 8) + buf[pos + 3]!
}

export function checkMsgpack(buf: Uint8Array, maxDepth = 16, maxItems = 200_000): boolean {
  // remaining items to read at each open container level
  const stack: number[] = []
  let depth = 0
  let pos = 0
  const end = buf.length
  let items = 0
  let remaining = 1 // objects left at the current level (root: one)
  while (true) {
    while (remaining === 0) {
      if (depth === 0) return pos === end
      remaining = stack[--depth]!
    }
    if (pos >= end) return false
    if (++items > maxItems) return false
    remaining--
    const b = buf[pos++]!
    let skip = 0
    let children = 0
    if (b <= 0x7f || b >= 0xe0) skip = 0
    else if (b <= 0x8f) children = (b & 0x0f) * 2
    else if (b <= 0x9f) children = b & 0x0f
    else if (b <= 0xbf) skip = b & 0x1f
    else {
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break
        case 0xc1:
          return false
        case 0xc4:
        case 0xd9:
          if (pos + 1 > end) return false
          skip = buf[pos]!
          pos += 1
          break
        case 0xc5:
        case 0xda:
          if (pos + 2 > end) return false
          skip = u16(buf, pos)
          pos += 2
          break
        case 0xc6:
        case 0xdb:
          if (pos + 4 > end) return false
          skip = u32(buf, pos)
          pos += 4
          break
        case 0xc7:
          if (pos + 1 > end) return false
          skip = buf[pos]! + 1
          pos += 1
          break
        case 0xc8:
          if (pos + 2 > end) return false
          skip = u16(buf, pos) + 1
          pos += 2
          break
        case 0xc9:
          if (pos + 4 > end) return false
          skip = u32(buf, pos) + 1
          pos += 4
          break
        case 0xca:
          skip = 4
          break
        case 0xcb:
          skip = 8
          break
        case 0xcc:
        case 0xd0:
          skip = 1
          break
        case 0xcd:
        case 0xd1:
          skip = 2
          break
        case 0xce:
        case 0xd2:
          skip = 4
          break
        case 0xcf:
        case 0xd3:
          skip = 8
          break
        case 0xd4:
          skip = 2
          break
        case 0xd5:
          skip = 3
          break
        case 0xd6:
          skip = 5
          break
        case 0xd7:
          skip = 9
          break
        case 0xd8:
          skip = 17
          break
        case 0xdc:
          if (pos + 2 > end) return false
          children = u16(buf, pos)
          pos += 2
          break
        case 0xdd:
          if (pos + 4 > end) return false
          children = u32(buf, pos)
          pos += 4
          break
        case 0xde:
          if (pos + 2 > end) return false
          children = u16(buf, pos) * 2
          pos += 2
          break
        case 0xdf:
          if (pos + 4 > end) return false
          children = u32(buf, pos) * 2
          pos += 4
          break
        default:
          return false
      }
    }
    if (skip) {
      if (pos + skip > end) return false
      pos += skip
    }
    if (children) {
      // every child takes at least one byte
      if (children > end - pos) return false
      if (depth + 1 > maxDepth) return false
      stack[depth++] = remaining
      remaining = children
    }
  }
}
