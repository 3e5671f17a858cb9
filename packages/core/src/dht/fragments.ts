/**
 * Reassembly of values sent as fragments (`y:"p"` datagrams) after a header message that announced their sizes.
 * Like OpenDHT 4.x: partial messages are keyed by (source address, tid); fragments may arrive before the header
 * ("early parts", bounded) or out of order; overlapping or out-of-range fragments are ignored; a partial message is
 * dropped 3 s after its last part or 10 s after its start. Memory is bounded by a count and a byte budget.
 */
import { Unpackr } from 'msgpackr'
import type { ParsedMessage } from './wire.js'
import { decodeValue } from './value-shim.js'
import { checkMsgpack } from './msgpack-check.js'

export interface ReassemblerOptions {
  partTimeoutMs?: number
  totalTimeoutMs?: number
  maxPartials?: number
  /** budget for all buffered fragment bytes */
  maxBytes?: number
  /** largest total a single message may announce */
  maxMessageBytes?: number
  maxEarlyParts?: number
  maxEarlyBytes?: number
}

interface PartialValue {
  total: number
  received: number
  frags: Map<number, Buffer> // offset → data
}

interface Partial {
  start: number
  lastPart: number
  msg?: ParsedMessage
  values: Map<number, PartialValue>
  early: Map<number, { offset: number; data: Buffer }>[]
  earlyBytes: number
  bytes: number
}

const unpackr = new Unpackr({ int64AsType: 'bigint', mapsAsObjects: true, useRecords: false })

export class Reassembler {
  private readonly partials = new Map<string, Partial>()
  private bytes = 0
  private lastSweep = 0
  private readonly o: Required<ReassemblerOptions>
  dropped = 0

  constructor(
    opts: ReassemblerOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    this.o = {
      partTimeoutMs: opts.partTimeoutMs ?? 3000,
      totalTimeoutMs: opts.totalTimeoutMs ?? 10_000,
      maxPartials: opts.maxPartials ?? 512,
      maxBytes: opts.maxBytes ?? 32 * 1024 * 1024,
      maxMessageBytes: opts.maxMessageBytes ?? 8 * 1024 * 1024,
      maxEarlyParts: opts.maxEarlyParts ?? 16,
      maxEarlyBytes: opts.maxEarlyBytes ?? 64 * 1024,
    }
  }

  get size(): number {
    return this.partials.size
  }

  get bufferedBytes(): number {
    return this.bytes
  }

  has(key: string): boolean {
    return this.partials.has(key)
  }

  /** A header message (with `valueSizes`) arrived. Returns the complete message if early parts already complete it. */
  header(key: string, msg: ParsedMessage): ParsedMessage | undefined {
    this.sweep()
    let total = 0
    for (const s of msg.valueSizes.values()) total += s
    if (total > this.o.maxMessageBytes) {
      this.dropped++
      return undefined
    }
    if (this.partials.get(key)?.msg) return undefined // duplicate header (a retry): keep the first
    const p = this.partialFor(key)
    if (!p) return undefined
    p.msg = msg
    p.lastPart = this.now()
    for (const [i, size] of msg.valueSizes) p.values.set(i, { total: size, received: 0, frags: new Map() })
    const early = p.early
    p.early = []
    this.bytes -= p.earlyBytes
    p.bytes -= p.earlyBytes
    p.earlyBytes = 0
    for (const f of early) this.append(p, f)
    return this.tryComplete(key, p)
  }

  /** The partial message for `key`, created if there is room (else counted as dropped and undefined). */
  private partialFor(key: string): Partial | undefined {
    let p = this.partials.get(key)
    if (!p) {
      if (this.partials.size >= this.o.maxPartials) {
        this.dropped++
        return undefined
      }
      p = { start: this.now(), lastPart: this.now(), values: new Map(), early: [], earlyBytes: 0, bytes: 0 }
      this.partials.set(key, p)
    }
    return p
  }

  /** A fragment datagram arrived. Returns the complete message when this was its last missing part. */
  fragment(key: string, frags: Map<number, { offset: number; data: Buffer }>): ParsedMessage | undefined {
    this.sweep()
    if (frags.size === 0) return undefined
    for (const f of frags.values()) if (f.data.length === 0) return undefined
    const p = this.partialFor(key)
    if (!p) return undefined
    if (!p.msg) {
      let n = 0
      for (const f of frags.values()) n += f.data.length
      if (p.early.length >= this.o.maxEarlyParts || p.earlyBytes + n > this.o.maxEarlyBytes || this.bytes + n > this.o.maxBytes) {
        this.drop(key)
        return undefined
      }
      p.early.push(frags)
      p.earlyBytes += n
      p.bytes += n
      this.bytes += n
      p.lastPart = this.now()
      return undefined
    }
    if (this.append(p, frags)) {
      p.lastPart = this.now()
      return this.tryComplete(key, p)
    }
    return undefined
  }

  private append(p: Partial, frags: Map<number, { offset: number; data: Buffer }>): boolean {
    let added = false
    for (const [index, { offset, data }] of frags) {
      const pv = p.values.get(index)
      if (!pv || pv.received === pv.total) continue
      if (data.length === 0 || offset > pv.total || data.length > pv.total - offset) continue
      if (this.bytes + data.length > this.o.maxBytes) continue
      let overlap = false
      for (const [o, d] of pv.frags) {
        if (offset < o + d.length && o < offset + data.length) {
          overlap = true
          break
        }
      }
      if (overlap) continue
      const copy = Buffer.from(data) // do not pin the whole datagram
      pv.frags.set(offset, copy)
      pv.received += copy.length
      p.bytes += copy.length
      this.bytes += copy.length
      added = true
    }
    return added
  }

  private tryComplete(key: string, p: Partial): ParsedMessage | undefined {
    if (!p.msg) return undefined
    for (const pv of p.values.values()) if (pv.received !== pv.total) return undefined
    const msg = p.msg
    for (const pv of p.values.values()) {
      const buf = Buffer.alloc(pv.total)
      for (const [o, d] of pv.frags) d.copy(buf, o)
      try {
        if (!checkMsgpack(buf)) throw new Error('malformed value')
        msg.values.push(decodeValue(unpackr.unpack(buf)))
      } catch {
        // an undecodable value is skipped, like OpenDHT
      }
    }
    msg.valueSizes = new Map()
    this.drop(key)
    return msg
  }

  private drop(key: string): void {
    const p = this.partials.get(key)
    if (!p) return
    this.bytes -= p.bytes
    this.partials.delete(key)
  }

  /** Drop partial messages that timed out. */
  sweep(force = false): void {
    const t = this.now()
    if (!force && t - this.lastSweep < 250) return
    this.lastSweep = t
    for (const [key, p] of this.partials) {
      if (t - p.start > this.o.totalTimeoutMs || t - p.lastPart > this.o.partTimeoutMs) {
        this.dropped++
        this.drop(key)
      }
    }
  }

  clear(): void {
    this.partials.clear()
    this.bytes = 0
  }
}
