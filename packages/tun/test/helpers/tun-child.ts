/**
 * A process that owns TUN devices inside a test's network namespace, driven by JSON lines on stdin and reporting
 * JSON lines on stdout (see TunChild in netns.ts). Run as `ip netns exec <ns> node --expose-gc --import tsx tun-child.ts`.
 *
 *   {"op":"open","id":"a","options":{...}}  → {"ev":"opened","id","name","mtu","isUp"} | {"ev":"open-error","id","code","message","hint"}
 *   {"op":"echo","id":"a"}                  → reads: {"ev":"packet","id",...IPv4 summary} per IPv4 packet (others: "other");
 *                                             an ICMP echo request is answered with write(echoReply) → "replied"
 *   {"op":"up"|"down","id":"a"}             → {"ev":"done","op","id","isUp"}
 *   {"op":"stats","id":"a"}                 → {"ev":"stats","id","stats","mtu"}
 *   {"op":"write","id":"a","hex":"45.."}    → {"ev":"written","id","ok"}
 *   {"op":"writeMany","id":"a","hex":[..]}  → {"ev":"wroteMany","id","count"}
 *   {"op":"pause"|"resume","id":"a"}        → {"ev":"done","op","id","isPaused"}
 *   {"op":"close","id":"a"}                 → {"ev":"closed","id"} (on the device's 'close' event)
 *   {"op":"forget","id":"a"}                → drops every reference without close(), runs the GC → {"ev":"forgotten","id"}
 *   {"op":"worker","name":"w0"}             → a worker thread opens TUN w0 through the addon and reads; once it
 *                                             said so the worker is terminated → {"ev":"worker-opened"}, {"ev":"worker-exit","code"}
 *   {"op":"exit"}                           → closes everything, exits 0
 * Device events: {"ev":"device-error","id","code","message","hint"}.
 */
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { Worker } from 'node:worker_threads'
import { setImmediate as tick } from 'node:timers/promises'
import { openTun, type TunDevice, type TunOptions } from '../../src/index.js'
import { echoReply, parseIpv4 } from './ip.js'

interface Command {
  op: string
  id?: string
  name?: string
  options?: TunOptions
  hex?: string | string[]
}

const out = (msg: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(msg) + '\n')
}
const devices = new Map<string, TunDevice>()

function device(id: string | undefined): TunDevice {
  const dev = devices.get(id ?? '')
  if (!dev) throw new Error(`no device ${id}`)
  return dev
}

function open(id: string, options: TunOptions): void {
  try {
    const dev = openTun(options)
    devices.set(id, dev)
    dev.on('error', (err) => out({ ev: 'device-error', id, code: err.code, message: err.message, hint: err.hint }))
    dev.on('close', () => out({ ev: 'closed', id }))
    out({ ev: 'opened', id, name: dev.name, mtu: dev.mtu, isUp: dev.isUp })
  } catch (err) {
    const e = err as { code?: string; message: string; hint?: string }
    out({ ev: 'open-error', id, code: e.code, message: e.message, hint: e.hint })
  }
}

function echo(id: string, dev: TunDevice): void {
  dev.on('packets', (packets) => {
    out({ ev: 'batch', id, count: packets.length })
    for (const p of packets) {
      const ip = parseIpv4(p)
      if (!ip) {
        out({ ev: 'other', id, length: p.length, version: p[0]! >> 4 })
        continue
      }
      out({ ev: 'packet', id, ...ip })
      if (ip.icmp?.type === 8) out({ ev: 'replied', id, ok: dev.write(echoReply(p)), seq: ip.icmp.seq })
    }
  })
}

/** A worker thread that opens a TUN with the addon itself (plain JS: no loader in the worker) and is terminated
 *  while reading: the addon's environment-teardown hook must close it (and the process must survive). */
async function workerDevice(name: string): Promise<void> {
  const addon = new URL('../../build/Release/dhtnet_tun.node', import.meta.url).pathname
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads')
     const { TunHandle } = require(workerData.addon)
     const handle = new TunHandle('/dev/net/tun', workerData.name, new Uint32Array(new ArrayBuffer(512)))
     handle.onpackets = () => {}
     handle.startReading()
     parentPort.postMessage(handle.name())`,
    { eval: true, workerData: { addon, name } },
  )
  const [opened] = (await once(worker, 'message')) as [string]
  out({ ev: 'worker-opened', name: opened })
  const code = await worker.terminate()
  out({ ev: 'worker-exit', code })
}

async function handle(cmd: Command): Promise<void> {
  switch (cmd.op) {
    case 'open':
      return open(cmd.id!, cmd.options ?? {})
    case 'echo':
      return echo(cmd.id!, device(cmd.id))
    case 'up':
    case 'down': {
      const dev = device(cmd.id)
      if (cmd.op === 'up') dev.up()
      else dev.down()
      return out({ ev: 'done', op: cmd.op, id: cmd.id, isUp: dev.isUp })
    }
    case 'stats': {
      const dev = device(cmd.id)
      return out({ ev: 'stats', id: cmd.id, stats: dev.stats, mtu: dev.closed ? undefined : dev.mtu })
    }
    case 'write':
      return out({ ev: 'written', id: cmd.id, ok: device(cmd.id).write(Buffer.from(String(cmd.hex), 'hex')) })
    case 'writeMany': {
      const packets = (cmd.hex as string[]).map((h) => Buffer.from(h, 'hex'))
      return out({ ev: 'wroteMany', id: cmd.id, count: device(cmd.id).writeMany(packets) })
    }
    case 'pause':
    case 'resume': {
      const dev = device(cmd.id)
      if (cmd.op === 'pause') dev.pause()
      else dev.resume()
      return out({ ev: 'done', op: cmd.op, id: cmd.id, isPaused: dev.isPaused })
    }
    case 'close':
      return device(cmd.id).close()
    case 'forget': {
      devices.delete(cmd.id!)
      // N-API finalizers run after the collection, from an immediate: collect, let them run, twice
      for (let i = 0; i < 3; i++) {
        globalThis.gc?.()
        await tick()
      }
      return out({ ev: 'forgotten', id: cmd.id, gc: typeof globalThis.gc === 'function' })
    }
    case 'worker':
      return workerDevice(cmd.name!)
    case 'exit':
      for (const dev of devices.values()) dev.close()
      await tick()
      process.exit(0)
    // falls through (exit never returns)
    default:
      throw new Error(`unknown op ${cmd.op}`)
  }
}

const lines = createInterface({ input: process.stdin })
let chain = Promise.resolve()
lines.on('line', (line) => {
  if (!line.trim()) return
  chain = chain.then(async () => {
    try {
      await handle(JSON.parse(line) as Command)
    } catch (err) {
      out({ ev: 'command-error', line, message: (err as Error).message, code: (err as { code?: string }).code })
    }
  })
})
lines.on('close', () => {
  for (const dev of devices.values()) dev.close()
  setTimeout(() => process.exit(0), 50).unref()
})
out({ ev: 'ready', pid: process.pid, uid: process.getuid?.() })
