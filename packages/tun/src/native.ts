/**
 * The compiled addon (src/native/*.c, built by node-gyp into build/Release/dhtnet_tun.node) and its typed shape.
 * Loaded on first use, so importing the package on a machine without the addon (another OS, a failed build) only
 * fails when a device is opened, with TUN_UNAVAILABLE.
 */
import { createRequire } from 'node:module'
import { DhtnetError } from '@dhtnet/core'

/** One open TUN device (the C struct behind it). Errors thrown by its methods carry .code (errno name), .errno, .syscall. */
export interface NativeTunHandle {
  /** Called with a batch: packet i is slab[meta[2i] .. meta[2i] + meta[2i+1]]. */
  onpackets?: (slab: Buffer, count: number) => void
  /** A read failed (the poll is stopped): errno name, its text, the failing call. */
  onerror?: (code: string, message: string, syscall: string) => void
  name(): string
  getMtu(): number
  setMtu(mtu: number): void
  isUp(): boolean
  setUp(up: boolean): void
  startReading(): void
  stopReading(): void
  setLoopRef(keep: boolean): void
  /** 0 when the kernel took the packet, else the errno (positive). */
  write(packet: Uint8Array): number
  /** How many the kernel took; results[i] = 0 or the errno of packet i. */
  writeMany(packets: readonly Uint8Array[], results: Int32Array): number
  stats(): NativeStats
  close(): void
}

export interface NativeStats {
  packetsIn: number
  bytesIn: number
  packetsOut: number
  bytesOut: number
  drops: number
  writeErrors: number
  readTruncated: number
  readBatches: number
  readSize: number
}

export interface NativeTunHandleConstructor {
  /** Opens `path` and attaches it to interface `name` ("" = the kernel chooses); meta.length / 2 = the batch limit. */
  new (path: string, name: string, meta: Uint32Array): NativeTunHandle
}

/** A system error from the addon, as Node's own: code 'ENOENT', errno 2, syscall 'open'. */
export interface NativeError extends Error {
  code: string
  errno: number
  syscall: string
}

export function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as NativeError).code === 'string' && typeof (err as NativeError).syscall === 'string'
}

const ADDON = '../build/Release/dhtnet_tun.node' // the same relative path from src/ (tsx) and dist/

/** The addon's class (require caches the module: loading again is a lookup). */
export function loadNative(): NativeTunHandleConstructor {
  if (process.platform !== 'linux') {
    throw new DhtnetError('TUN_UNAVAILABLE', `TUN devices are Linux only (this is ${process.platform})`)
  }
  try {
    return (createRequire(import.meta.url)(ADDON) as { TunHandle: NativeTunHandleConstructor }).TunHandle
  } catch (cause) {
    throw new DhtnetError('TUN_UNAVAILABLE', `the @dhtnet/tun addon is not built or does not load: ${(cause as Error).message}`, {
      cause,
      hint: 'build it: pnpm install (or node scripts/build-native.mjs in packages/tun); it needs python3, make and a C compiler (apt-get install build-essential python3)',
    })
  }
}
