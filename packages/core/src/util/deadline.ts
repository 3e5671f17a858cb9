import { DhtnetError } from '../errors.js'

/**
 * A time budget for one multi-step operation. `race()` bounds every await by the deadline, the caller's signal and
 * the owner's closing signal; the TIMEOUT error names the step that was running, so a user learns *what* did not
 * answer (the DHT, ICE, the channel request...).
 */
export class Deadline {
  readonly signal: AbortSignal
  readonly startedAt = performance.now()
  private _step = 'starting'
  /** Called on every step change (tracing). */
  onStep: ((step: string, elapsedMs: number) => void) | undefined

  get step(): string {
    return this._step
  }

  set step(step: string) {
    this._step = step
    this.onStep?.(step, performance.now() - this.startedAt)
  }
  private readonly controller = new AbortController()
  private readonly timer: NodeJS.Timeout
  private readonly cleanups: Array<() => void> = []
  private reason: 'timeout' | 'aborted' | 'closed' | undefined

  constructor(
    readonly timeoutMs: number,
    private readonly what: string,
    signal?: AbortSignal,
    closing?: AbortSignal,
  ) {
    this.signal = this.controller.signal
    this.timer = setTimeout(() => this.abort('timeout'), timeoutMs)
    for (const [s, why] of [
      [signal, 'aborted'],
      [closing, 'closed'],
    ] as const) {
      if (!s) continue
      if (s.aborted) {
        this.abort(why)
        continue
      }
      const on = () => this.abort(why)
      s.addEventListener('abort', on, { once: true })
      this.cleanups.push(() => s.removeEventListener('abort', on))
    }
  }

  get remainingMs(): number {
    return Math.max(1, Math.round(this.timeoutMs - (performance.now() - this.startedAt)))
  }

  /** The error for the current abort reason. */
  error(): DhtnetError {
    if (this.reason === 'timeout') {
      return new DhtnetError('TIMEOUT', `${this.what}: no result within ${this.timeoutMs} ms (while ${this.step})`, {
        hint: 'the peer may be offline or unreachable; check that it runs and shares a DHT with us',
      })
    }
    if (this.reason === 'closed') return new DhtnetError('ABORTED', `${this.what}: the connection manager was closed`)
    return new DhtnetError('ABORTED', `${this.what}: aborted (while ${this.step})`)
  }

  throwIfAborted(): void {
    if (this.reason) throw this.error()
  }

  /** `p`, or the deadline's error if it expires (or is aborted) first. */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.reason) {
      p.catch(() => {})
      return Promise.reject(this.error())
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(this.error())
      this.signal.addEventListener('abort', onAbort, { once: true })
      p.then(
        (v) => {
          this.signal.removeEventListener('abort', onAbort)
          resolve(v)
        },
        (e: Error) => {
          this.signal.removeEventListener('abort', onAbort)
          reject(e)
        },
      )
    })
  }

  dispose(): void {
    clearTimeout(this.timer)
    for (const c of this.cleanups) c()
    this.cleanups.length = 0
  }

  private abort(why: 'timeout' | 'aborted' | 'closed'): void {
    if (this.reason) return
    this.reason = why
    clearTimeout(this.timer)
    this.controller.abort(this.error())
  }
}
