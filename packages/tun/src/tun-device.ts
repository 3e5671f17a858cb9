/**
 * TunDevice: one Linux TUN interface (raw IP packets, no header) read through the event loop in batches.
 * See README.md for the threading/poll model, batching and limits.
 */
import { EventEmitter } from 'node:events'
import { DhtnetError } from '@dhtnet/core'
import { DEFAULT_TUN_PATH, interfaceError, openError } from './errors.js'
import { isNativeError, loadNative, type NativeTunHandle } from './native.js'

export interface TunOptions {
  /** An exact interface name ("dvpn0") or a pattern with one %d ("dvpn%d"); default: the kernel picks ("tun%d"). */
  name?: string
  /** Set the interface MTU right after opening (68..65535). Default: the kernel's (1500). */
  mtu?: number
  /** Bring the interface up after opening (IFF_UP). Default false: addresses are usually set first (`ip addr`). */
  up?: boolean
  /** The TUN clone device. Default /dev/net/tun. */
  path?: string
  /** The most packets read per event-loop wake-up, delivered in one 'packets' event (1..1024, default 64). */
  batchSize?: number
}

export interface TunStats {
  /** Packets (and their bytes) read from the interface and delivered in 'packets'. */
  packetsIn: number
  bytesIn: number
  /** Packets (and bytes) the kernel took from write()/writeMany(). */
  packetsOut: number
  bytesOut: number
  /** Writes dropped because the kernel could not take them now (queue full: EAGAIN, ENOBUFS, ENOMEM; interface down: EIO). */
  drops: number
  /** Writes the kernel refused (EINVAL: not an IPv4/IPv6 packet, or empty). */
  writeErrors: number
  /** Packets read that were larger than the read buffer (the MTU was raised behind our back): dropped. */
  readTruncated: number
  /** 'packets' events emitted (packetsIn / readBatches = the average batch). */
  readBatches: number
}

export interface TunEvents {
  /** Packets read in one event-loop wake-up, in arrival order. Each Buffer is a view of a shared slab: copy it
   *  (Buffer.from(p)) to keep it long, or it keeps its slab (256 KiB) alive. */
  packets: [packets: Buffer[]]
  /** A read failed (e.g. the interface was deleted): the device is closed after this event. */
  error: [error: DhtnetError]
  /** The device is closed (emitted once, on the next tick after close()). */
  close: []
}

const MAX_BATCH = 1024
// errno values (Linux) write() may return: 0 = taken; queue full or interface down = dropped; EINVAL = not an IP packet
const EIO = 5
const EAGAIN = 11
const ENOMEM = 12
const EINVAL = 22
const ENOBUFS = 105
const EMSGSIZE = 90

/** Interface names as the kernel accepts them (dev_valid_name): 1-15 bytes, no '/', ':' or white space. */
function checkName(name: string): void {
  if (typeof name !== 'string') throw new DhtnetError('INVALID_ARGUMENT', `invalid interface name ${String(name)}: not a string`)
  const bytes = Buffer.byteLength(name)
  const percent = name.match(/%/g)?.length ?? 0
  if (bytes < 1 || bytes > 15 || name === '.' || name === '..' || /[/:\s]/.test(name) || percent > 1 || (percent === 1 && !name.includes('%d'))) {
    throw new DhtnetError('INVALID_ARGUMENT', `invalid interface name ${JSON.stringify(name)}`, {
      hint: 'use 1-15 bytes without "/", ":" or spaces, with at most one "%d" (e.g. "dvpn%d")',
    })
  }
}

function checkMtu(mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new DhtnetError('INVALID_ARGUMENT', `invalid MTU ${mtu}: it must be an integer from 68 to 65535`)
  }
}

/** Opens a TUN interface. Synchronous (open + ioctl). Throws TUN_UNAVAILABLE, TUN_PERMISSION, TUN_ERROR or INVALID_ARGUMENT. */
export function openTun(options: TunOptions = {}): TunDevice {
  return new TunDevice(options)
}

export class TunDevice extends EventEmitter<TunEvents> {
  /** The clone device this interface was opened from. */
  readonly path: string
  readonly #handle: NativeTunHandle
  readonly #meta: Uint32Array
  #results = new Int32Array(64)
  #name: string
  #closed = false
  #paused = false
  #reading = false

  /** Use openTun(). */
  constructor(options: TunOptions = {}) {
    super()
    const path = options.path ?? DEFAULT_TUN_PATH
    if (typeof path !== 'string' || path === '') throw new DhtnetError('INVALID_ARGUMENT', 'path must be a non-empty string')
    const name = options.name ?? ''
    if (name !== '') checkName(name)
    if (options.mtu !== undefined) checkMtu(options.mtu)
    const batch = options.batchSize ?? 64
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_BATCH) {
      throw new DhtnetError('INVALID_ARGUMENT', `invalid batchSize ${batch}: it must be an integer from 1 to ${MAX_BATCH}`)
    }
    const TunHandle = loadNative()
    this.path = path
    // offset/length pairs of one batch, written by the addon; its own ArrayBuffer so the memory never moves
    this.#meta = new Uint32Array(new ArrayBuffer(batch * 2 * 4))
    try {
      this.#handle = new TunHandle(path, name, this.#meta)
    } catch (err) {
      throw openError(err, path, name)
    }
    this.#name = this.#handle.name()
    try {
      if (options.mtu !== undefined) this.setMtu(options.mtu)
      if (options.up) this.up()
    } catch (err) {
      this.#handle.close()
      this.#closed = true
      throw err
    }
    this.#handle.onpackets = (slab, count) => this.#onPackets(slab, count)
    this.#handle.onerror = (code, message, syscall) => this.#onReadError(code, message, syscall)
    // Reading runs while someone listens to 'packets' and the device is not paused. (The typed event map does not
    // list EventEmitter's own 'newListener'/'removeListener' events, hence the plain EventEmitter view.)
    const plain = this as EventEmitter
    plain.on('newListener', (event: string | symbol) => {
      if (event === 'packets') this.#updateReading(1) // emitted before the listener is added
    })
    plain.on('removeListener', (event: string | symbol) => {
      if (event === 'packets') this.#updateReading()
    })
  }

  /** The interface name as the kernel knows it now (asked again each time: it follows a rename). */
  get name(): string {
    if (!this.#closed) this.#name = this.#handle.name()
    return this.#name
  }

  /** The interface MTU, asked from the kernel (SIOCGIFMTU). */
  get mtu(): number {
    this.#checkOpen()
    try {
      return this.#handle.getMtu()
    } catch (err) {
      throw interfaceError(err, this.#name, 'read the MTU')
    }
  }

  /** Sets the interface MTU (SIOCSIFMTU); the read buffers follow it. */
  setMtu(mtu: number): void {
    this.#checkOpen()
    checkMtu(mtu)
    try {
      this.#handle.setMtu(mtu)
    } catch (err) {
      if (isNativeError(err) && err.code === 'EINVAL') {
        throw new DhtnetError('INVALID_ARGUMENT', `${this.#name}: the kernel refused MTU ${mtu}`, { cause: err })
      }
      throw interfaceError(err, this.#name, `set the MTU to ${mtu}`)
    }
  }

  /** Whether the interface is administratively up (IFF_UP). */
  get isUp(): boolean {
    this.#checkOpen()
    try {
      return this.#handle.isUp()
    } catch (err) {
      throw interfaceError(err, this.#name, 'read the interface flags')
    }
  }

  /** Brings the interface up (like `ip link set <name> up`). */
  up(): void {
    this.#setUp(true)
  }

  /** Takes the interface down. */
  down(): void {
    this.#setUp(false)
  }

  /**
   * Writes one IP packet into the interface (as if it arrived from the network). Never blocks and never queues:
   * true when the kernel took it; false when it was dropped (queue full or interface down: stats.drops) or refused (not an IPv4/IPv6
   * packet: stats.writeErrors). Throws CLOSED after close(), TUN_ERROR when the interface is gone.
   */
  write(packet: Uint8Array): boolean {
    this.#checkOpen()
    if (!(packet instanceof Uint8Array)) throw new DhtnetError('INVALID_ARGUMENT', 'write(packet): packet must be a Buffer or Uint8Array')
    const errno = this.#handle.write(packet)
    return errno === 0 || this.#softWriteError(errno)
  }

  /** Writes several packets in one call into the addon; returns how many the kernel took (same rules as write()). */
  writeMany(packets: readonly Uint8Array[]): number {
    this.#checkOpen()
    if (!Array.isArray(packets)) throw new DhtnetError('INVALID_ARGUMENT', 'writeMany(packets): packets must be an array')
    if (this.#results.length < packets.length) this.#results = new Int32Array(Math.max(packets.length, this.#results.length * 2))
    let written: number
    try {
      written = this.#handle.writeMany(packets, this.#results)
    } catch (err) {
      if (err instanceof TypeError) throw new DhtnetError('INVALID_ARGUMENT', 'writeMany(packets): every packet must be a Buffer or Uint8Array', { cause: err })
      throw err
    }
    if (written < packets.length) {
      for (let i = 0; i < packets.length; i++) {
        const errno = this.#results[i] ?? 0
        if (errno !== 0) this.#softWriteError(errno)
      }
    }
    return written
  }

  /** Stops reading (the kernel queues up to the interface's txqueuelen, then drops). */
  pause(): this {
    this.#paused = true
    this.#updateReading()
    return this
  }

  /** Reads again (if someone listens to 'packets'). */
  resume(): this {
    this.#paused = false
    this.#updateReading()
    return this
  }

  get isPaused(): boolean {
    return this.#paused
  }

  /** While reading, the device keeps the event loop alive (the default), like a listening socket. */
  ref(): this {
    if (!this.#closed) this.#handle.setLoopRef(true)
    return this
  }

  /** Lets the process exit even while the device is reading. */
  unref(): this {
    if (!this.#closed) this.#handle.setLoopRef(false)
    return this
  }

  /** Counters since open (a fresh object each time). */
  get stats(): TunStats {
    const s = this.#handle.stats()
    return {
      packetsIn: s.packetsIn,
      bytesIn: s.bytesIn,
      packetsOut: s.packetsOut,
      bytesOut: s.bytesOut,
      drops: s.drops,
      writeErrors: s.writeErrors,
      readTruncated: s.readTruncated,
      readBatches: s.readBatches,
    }
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Stops reading and closes the fd: the kernel removes the (non-persistent) interface. Idempotent; 'close' follows. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#reading = false
    this.#handle.close()
    this.#handle.onpackets = undefined
    this.#handle.onerror = undefined
    process.nextTick(() => this.emit('close'))
  }

  #checkOpen(): void {
    if (this.#closed) throw new DhtnetError('CLOSED', `TUN device ${this.#name} is closed`)
  }

  #setUp(up: boolean): void {
    this.#checkOpen()
    try {
      this.#handle.setUp(up)
    } catch (err) {
      throw interfaceError(err, this.#name, `bring the interface ${up ? 'up' : 'down'}`)
    }
  }

  /** false for errors that drop the one packet (already counted by the addon); throws for the others. */
  #softWriteError(errno: number): false {
    if (errno === EIO || errno === EAGAIN || errno === ENOBUFS || errno === ENOMEM || errno === EINVAL || errno === EMSGSIZE) return false
    const err = Object.assign(new Error(`write: errno ${errno}`), { errno })
    throw new DhtnetError('TUN_ERROR', `${this.#name}: write failed (errno ${errno})`, {
      cause: err,
      ...(errno === 77 /* EBADFD */ ? { hint: 'the interface was deleted (ip link del?)' } : {}),
    })
  }

  #updateReading(adding = 0): void {
    const want = !this.#closed && !this.#paused && this.listenerCount('packets') + adding > 0
    if (want === this.#reading) return
    this.#reading = want
    if (want) this.#handle.startReading()
    else this.#handle.stopReading()
  }

  #onPackets(slab: Buffer, count: number): void {
    const meta = this.#meta
    const packets = new Array<Buffer>(count)
    for (let i = 0; i < count; i++) {
      const offset = meta[2 * i]!
      packets[i] = slab.subarray(offset, offset + meta[2 * i + 1]!)
    }
    this.emit('packets', packets)
  }

  #onReadError(code: string, message: string, syscall: string): void {
    const gone = code === 'EBADF' || code === 'EBADFD' || code === 'ENODEV'
    const err = new DhtnetError('TUN_ERROR', `${this.#name}: ${syscall} failed: ${message} (${code})`, {
      cause: Object.assign(new Error(message), { code, syscall }),
      ...(gone ? { hint: 'the interface was deleted (ip link del?)' } : {}),
    })
    this.close()
    this.emit('error', err)
  }
}
