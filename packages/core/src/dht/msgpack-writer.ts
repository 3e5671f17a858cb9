/**
 * A tiny msgpack writer producing the same minimal encodings as msgpack-c, so that outgoing messages are
 * byte-identical to OpenDHT's. It exists because msgpackr cannot splice pre-packed bytes (values are packed
 * once by the value layer and embedded as is) and writes integers above 2^32 as floats.
 */
/** Bytes already msgpack-encoded, spliced as they are by `MsgWriter.any` (e.g. a packed value in a message). */
export class MsgpackRaw {
  constructor(readonly bytes: Buffer) {}
}

export class MsgWriter {
  private buf: Buffer
  private pos = 0

  constructor(initial = 512) {
    this.buf = Buffer.allocUnsafe(initial)
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  private byte(b: number): this {
    this.ensure(1)
    this.buf[this.pos++] = b
    return this
  }

  map(n: number): this {
    if (n < 16) return this.byte(0x80 | n)
    this.ensure(5)
    if (n < 0x10000) {
      this.buf[this.pos++] = 0xde
      this.buf.writeUInt16BE(n, this.pos)
      this.pos += 2
    } else {
      this.buf[this.pos++] = 0xdf
      this.buf.writeUInt32BE(n, this.pos)
      this.pos += 4
    }
    return this
  }

  array(n: number): this {
    if (n < 16) return this.byte(0x90 | n)
    this.ensure(5)
    if (n < 0x10000) {
      this.buf[this.pos++] = 0xdc
      this.buf.writeUInt16BE(n, this.pos)
      this.pos += 2
    } else {
      this.buf[this.pos++] = 0xdd
      this.buf.writeUInt32BE(n, this.pos)
      this.pos += 4
    }
    return this
  }

  str(s: string): this {
    // short ASCII strings (every key and most values of the wire protocol): written byte by byte, which is much
    // cheaper than the byteLength + write round trips into C++
    const n = s.length
    if (n < 32) {
      this.ensure(n + 1)
      const buf = this.buf
      let p = this.pos + 1
      let i = 0
      for (; i < n; i++) {
        const c = s.charCodeAt(i)
        if (c >= 0x80) break
        buf[p++] = c
      }
      if (i === n) {
        buf[this.pos] = 0xa0 | n
        this.pos = p
        return this
      }
    }
    const len = Buffer.byteLength(s)
    this.ensure(len + 5)
    if (len < 32) this.buf[this.pos++] = 0xa0 | len
    else if (len < 0x100) {
      this.buf[this.pos++] = 0xd9
      this.buf[this.pos++] = len
    } else if (len < 0x10000) {
      this.buf[this.pos++] = 0xda
      this.buf.writeUInt16BE(len, this.pos)
      this.pos += 2
    } else {
      this.buf[this.pos++] = 0xdb
      this.buf.writeUInt32BE(len, this.pos)
      this.pos += 4
    }
    this.pos += this.buf.write(s, this.pos)
    return this
  }

  bin(b: Uint8Array): this {
    const len = b.length
    this.ensure(len + 5)
    if (len < 0x100) {
      this.buf[this.pos++] = 0xc4
      this.buf[this.pos++] = len
    } else if (len < 0x10000) {
      this.buf[this.pos++] = 0xc5
      this.buf.writeUInt16BE(len, this.pos)
      this.pos += 2
    } else {
      this.buf[this.pos++] = 0xc6
      this.buf.writeUInt32BE(len, this.pos)
      this.pos += 4
    }
    this.buf.set(b, this.pos)
    this.pos += len
    return this
  }

  /** Unsigned integer, smallest encoding (number up to 2^53 or bigint up to 2^64). */
  uint(v: number | bigint): this {
    if (typeof v === 'bigint') {
      if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`uint out of range: ${v}`)
      if (v <= 0xffffffffn) return this.uint(Number(v))
      this.ensure(9)
      this.buf[this.pos++] = 0xcf
      this.buf.writeBigUInt64BE(v, this.pos)
      this.pos += 8
      return this
    }
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`uint out of range: ${v}`)
    this.ensure(9)
    if (v < 0x80) this.buf[this.pos++] = v
    else if (v < 0x100) {
      this.buf[this.pos++] = 0xcc
      this.buf[this.pos++] = v
    } else if (v < 0x10000) {
      this.buf[this.pos++] = 0xcd
      this.buf.writeUInt16BE(v, this.pos)
      this.pos += 2
    } else if (v <= 0xffffffff) {
      this.buf[this.pos++] = 0xce
      this.buf.writeUInt32BE(v, this.pos)
      this.pos += 4
    } else {
      this.buf[this.pos++] = 0xcf
      this.buf.writeBigUInt64BE(BigInt(v), this.pos)
      this.pos += 8
    }
    return this
  }

  /** Signed integer as msgpack-c packs it: non-negative values as unsigned, negatives in the smallest int type. */
  int(v: number | bigint): this {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new RangeError(`not an integer: ${v}`)
    if (v >= 0) return this.uint(v)
    if (typeof v === 'bigint') {
      if (v < -(1n << 63n)) throw new RangeError(`not an int64: ${v}`)
      if (v < -2147483648n) {
        this.ensure(9)
        this.buf[this.pos++] = 0xd3
        this.buf.writeBigInt64BE(v, this.pos)
        this.pos += 8
        return this
      }
      v = Number(v)
    }
    this.ensure(9)
    if (v >= -32) this.buf[this.pos++] = v & 0xff
    else if (v >= -0x80) {
      this.buf[this.pos++] = 0xd0
      this.buf.writeInt8(v, this.pos)
      this.pos += 1
    } else if (v >= -0x8000) {
      this.buf[this.pos++] = 0xd1
      this.buf.writeInt16BE(v, this.pos)
      this.pos += 2
    } else if (v >= -0x80000000) {
      this.buf[this.pos++] = 0xd2
      this.buf.writeInt32BE(v, this.pos)
      this.pos += 4
    } else {
      this.buf[this.pos++] = 0xd3
      this.buf.writeBigInt64BE(BigInt(v), this.pos)
      this.pos += 8
    }
    return this
  }

  float64(v: number): this {
    this.ensure(9)
    this.buf[this.pos++] = 0xcb
    this.buf.writeDoubleBE(v, this.pos)
    this.pos += 8
    return this
  }

  bool(v: boolean): this {
    return this.byte(v ? 0xc3 : 0xc2)
  }

  nil(): this {
    return this.byte(0xc0)
  }

  /** Splice bytes that are already a complete msgpack object. */
  raw(b: Uint8Array): this {
    this.ensure(b.length)
    this.buf.set(b, this.pos)
    this.pos += b.length
    return this
  }

  /**
   * Any JS value: integers (number or bigint) minimally, other numbers as float64, strings as str, Buffer/Uint8Array
   * as bin, arrays, Maps and plain objects as maps (undefined members left out), MsgpackRaw spliced as is.
   */
  any(x: unknown): this {
    if (x === null || x === undefined) return this.nil()
    switch (typeof x) {
      case 'boolean':
        return this.bool(x)
      case 'bigint':
        return this.int(x)
      case 'number':
        return Number.isSafeInteger(x) ? this.int(x) : this.float64(x)
      case 'string':
        return this.str(x)
    }
    if (x instanceof MsgpackRaw) return this.raw(x.bytes)
    if (x instanceof Uint8Array) return this.bin(x)
    if (Array.isArray(x)) {
      this.array(x.length)
      for (const item of x) this.any(item)
      return this
    }
    if (x instanceof Map) {
      const entries = [...x.entries()].filter(([, v]) => v !== undefined)
      this.map(entries.length)
      for (const [k, v] of entries) this.any(k).any(v)
      return this
    }
    if (typeof x === 'object') {
      const entries = Object.entries(x as Record<string, unknown>).filter(([, v]) => v !== undefined)
      this.map(entries.length)
      for (const [k, v] of entries) this.str(k).any(v)
      return this
    }
    throw new TypeError(`cannot msgpack-encode a ${typeof x}`)
  }

  get length(): number {
    return this.pos
  }

  /**
   * The written bytes, without a copy when they are few (as small as `finish()`'s copy would be, from the same
   * pool); the writer must not be used afterwards.
   */
  take(): Buffer {
    return this.pos < 4096 ? this.buf.subarray(0, this.pos) : this.finish()
  }

  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos))
  }
}

/** Deterministic msgpack encoding of a JS value (see `MsgWriter.any`). */
export function msgpackEncode(x: unknown): Buffer {
  return new MsgWriter().any(x).finish()
}
