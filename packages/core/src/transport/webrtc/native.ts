/**
 * node-datachannel's process-wide state: its native logger and its threads.
 *
 * The library is global by nature: `initLogger` takes one callback for the whole process, and its threads keep the
 * process alive until `cleanup()` runs. This module is the one place that touches that state:
 *  - every live PeerConnection is registered here (a strong reference: a collected PeerConnection closes
 *    mid-transfer) and unregistered when closed;
 *  - the native log is routed to the loggers of the live peers;
 *  - when the last PeerConnection is gone, `cleanup()` runs so the process can exit. A later PeerConnection
 *    re-initialises the library (and the logger) transparently.
 */
import { createRequire } from 'node:module'
import type { Logger, LogLevel } from '../../util/log.js'

type NativeModule = typeof import('node-datachannel')

let native: NativeModule | undefined
let preloadScheduled = false

/**
 * node-datachannel, loaded on first use. Loading it (the native library, ~11 ms here) is a large part of a tool's
 * start-up; a process that never makes a peer connection (dhtnet-node, crtmgr, a tool printing its help) does not
 * pay it, and a connecting one can hide it behind a network wait (preloadNative).
 */
export function nativeModule(): NativeModule {
  if (!native) native = createRequire(import.meta.url)('node-datachannel') as NativeModule
  return native
}

/**
 * Load node-datachannel on the next turn of the event loop, i.e. while the caller waits for the network (DHT
 * bootstrap, certificate lookup). Idempotent; a loading error surfaces at the first real use.
 */
export function preloadNative(): void {
  if (native || preloadScheduled) return
  preloadScheduled = true
  setImmediate(() => {
    try {
      nativeModule()
    } catch {
      // reported by the first WebRtcPeer
    }
  }).unref()
}

type NativeLevel = 'Verbose' | 'Debug' | 'Info' | 'Warning' | 'Error' | 'Fatal'
const NATIVE_LEVELS: readonly NativeLevel[] = ['Verbose', 'Debug', 'Info', 'Warning', 'Error', 'Fatal']

/** Native messages that are expected and harmless: logged at debug level only. */
const HARMLESS = [/SCTP reset stream .* failed/i, /Unexpected local description/i, /ICE role conflict/i]

const live = new Set<object>()
const sinks = new Map<Logger, number>()
let loggerInstalled = false
let cleanupTimer: NodeJS.Timeout | undefined

function nativeLogLevel(): NativeLevel {
  const env = process.env.DHTNET_WEBRTC_LOG
  const found = NATIVE_LEVELS.find((l) => l.toLowerCase() === env?.toLowerCase())
  return found ?? 'Warning'
}

function route(level: string, message: string): void {
  let ours: LogLevel = level === 'Warning' ? 'warn' : level === 'Error' || level === 'Fatal' ? 'error' : 'debug'
  if (ours === 'warn' && HARMLESS.some((re) => re.test(message))) ours = 'debug'
  for (const sink of sinks.keys()) {
    try {
      sink(ours, `webrtc: ${message}`)
    } catch {
      // a throwing logger must not break the native callback
    }
  }
}

/** Register a live peer connection owner; returns the function that unregisters it (idempotent). */
export function acquireNative(owner: object, log: Logger): () => void {
  if (cleanupTimer) {
    clearTimeout(cleanupTimer)
    cleanupTimer = undefined
  }
  if (!loggerInstalled) {
    nativeModule().initLogger(nativeLogLevel(), route)
    loggerInstalled = true
  }
  live.add(owner)
  sinks.set(log, (sinks.get(log) ?? 0) + 1)
  let released = false
  return () => {
    if (released) return
    released = true
    live.delete(owner)
    const n = (sinks.get(log) ?? 1) - 1
    if (n <= 0) sinks.delete(log)
    else sinks.set(log, n)
    if (live.size === 0) scheduleCleanup()
  }
}

function scheduleCleanup(): void {
  if (cleanupTimer) return
  // Give the native close a moment to finish its callbacks, then release the threads.
  cleanupTimer = setTimeout(() => {
    cleanupTimer = undefined
    if (live.size > 0) return
    nativeModule().cleanup()
    loggerInstalled = false
  }, 20)
}

/** Number of live peer connections in this process (for tests and diagnostics). */
export function livePeerConnections(): number {
  return live.size
}
