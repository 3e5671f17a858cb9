/**
 * The private-key operation of decryptions, off the event loop: a worker thread holding our RSA key (a KeyObject,
 * cloned into the worker, never exported as bytes) that performs the raw RSA operation on one block. An RSA-4096
 * private operation costs ~7.5 ms; on the main thread a few hundred of them stalled a node for seconds (issue 12).
 * The padding check, AES-GCM and the inner signature stay on the main thread: they cost microseconds.
 *
 * The worker is started on first use or by prewarm(), keeps the process alive only while an operation is pending,
 * and is restarted after a crash. Its code is a few lines of plain JavaScript evaluated in the worker (`eval: true`), so
 * it runs the same from the TypeScript sources and from dist.
 */
import { Worker } from 'node:worker_threads'
import type { KeyObject } from 'node:crypto'
import { DhtnetError } from '../errors.js'

const WORKER_CODE = `
const { parentPort, workerData } = require('node:worker_threads')
const { privateDecrypt, constants } = require('node:crypto')
const key = workerData.key
parentPort.on('message', (m) => {
  let out, error
  try { out = privateDecrypt({ key, padding: constants.RSA_NO_PADDING }, m.block) } catch (e) { error = String((e && e.message) || e) }
  parentPort.postMessage({ id: m.id, out, error })
})
`

interface Pending {
  resolve(out: Buffer): void
  reject(err: Error): void
}

export class RsaWorker {
  private worker: Worker | undefined
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private closed = false
  /** raw RSA operations done */
  operations = 0

  constructor(private readonly privateKey: KeyObject) {}

  /** The raw RSA private-key operation (no padding) on one block, in the worker. */
  decryptBlock(block: Uint8Array): Promise<Buffer> {
    if (this.closed) return Promise.reject(new DhtnetError('CLOSED', 'the decryption worker is closed'))
    const w = this.start()
    const id = this.nextId++
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      if (this.pending.size === 1) w.ref()
      w.postMessage({ id, block })
    })
  }

  /** Start the thread now: its first operation otherwise waits ~35 ms for it to boot (measured here), which a
   *  fresh process would add to its first connection (the answer is its first decryption). */
  prewarm(): void {
    if (!this.closed) this.start()
  }

  get busy(): number {
    return this.pending.size
  }

  private start(): Worker {
    if (this.worker) return this.worker
    const w = new Worker(WORKER_CODE, {
      eval: true,
      workerData: { key: this.privateKey },
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 8 },
    })
    w.on('message', (m: { id: number; out?: Uint8Array; error?: string }) => {
      const p = this.pending.get(m.id)
      if (!p) return
      this.pending.delete(m.id)
      if (this.pending.size === 0) w.unref()
      this.operations++
      if (m.out) p.resolve(Buffer.from(m.out.buffer, m.out.byteOffset, m.out.byteLength))
      else p.reject(new DhtnetError('DECRYPT_FAILED', `RSA decryption failed: ${m.error ?? 'no output'}`))
    })
    const fail = (err: Error) => {
      if (this.worker !== w) return
      this.worker = undefined
      const pending = [...this.pending.values()]
      this.pending.clear()
      for (const p of pending) p.reject(new DhtnetError('DECRYPT_FAILED', `the decryption worker stopped: ${err.message}`, { cause: err }))
    }
    w.on('error', fail)
    w.on('exit', (code) => fail(new Error(`exit code ${code}`)))
    // after the listeners: adding a 'message' listener refs the worker's port again (an idle worker, prewarmed and
    // never used, would otherwise keep the process alive)
    w.unref()
    this.worker = w
    return w
  }

  /** Stop the worker; pending operations fail. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const w = this.worker
    this.worker = undefined
    const pending = [...this.pending.values()]
    this.pending.clear()
    for (const p of pending) p.reject(new DhtnetError('CLOSED', 'the decryption worker was closed'))
    if (w) await w.terminate()
  }
}
