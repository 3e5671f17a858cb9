/**
 * The TCP port mapping of the ICE-TCP listening port (UPnP IGD / NAT-PMP through a PortMapper, ../../nat/): one
 * mapping for the IPv4 listener, asked for once in the background (prepare(), or the first session, which waits at
 * most `waitMs` for it), renewed by the mapper, removed on close(). Offered as a srflx `passive` candidate (DHTNet
 * §8.4: the UPnP srflx candidate of TCP mode is passive). A failure is logged and retried no sooner than a minute
 * later; it never fails a session.
 */
import type { Logger } from '../../util/log.js'
import type { PortMapping } from '../../nat/port-mapper.js'
import { tcpMappedCandidate } from '../../nat/mapped-candidate.js'
import type { ListeningAddress } from './listener.js'
import type { MappedCandidate } from './transport.js'

/** What the transport needs of a PortMapper (nat/port-mapper.ts satisfies it). */
export interface TcpPortMapper {
  mapTcp(internalPort: number, options?: { signal?: AbortSignal }): Promise<PortMapping>
  unmapTcp(internalPort: number): Promise<void>
}

const RETRY_MS = 60_000

export class ListenerPortMapping {
  private mapping: PortMapping | undefined
  private pending: Promise<PortMapping | undefined> | undefined
  private retryAt = 0
  private port: number | undefined
  private closed = false
  private readonly closing = new AbortController()

  constructor(
    private readonly mapper: TcpPortMapper,
    private readonly log: Logger,
  ) {}

  /** Start mapping the IPv4 listening port in the background. */
  prepare(listening: readonly ListeningAddress[]): void {
    void this.candidates(listening, 0)
  }

  /** The srflx passive candidate of the mapping, waiting at most `waitMs` for it (never throws). */
  async candidates(listening: readonly ListeningAddress[], waitMs: number, signal?: AbortSignal): Promise<MappedCandidate[]> {
    if (this.closed) return []
    const port = listening.find((l) => l.family === 4)?.port
    if (port === undefined) return []
    if (this.mapping) return toCandidates(this.mapping)
    if (!this.pending) {
      if (Date.now() < this.retryAt) return []
      this.port = port
      this.pending = this.map(port)
    }
    if (waitMs <= 0) return []
    const mapping = await new Promise<PortMapping | undefined>((resolve) => {
      const done = (m: PortMapping | undefined): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        resolve(m)
      }
      const onAbort = (): void => done(undefined)
      const timer = setTimeout(() => done(undefined), waitMs)
      timer.unref()
      signal?.addEventListener('abort', onAbort, { once: true })
      void this.pending!.then(done, () => done(undefined))
    })
    return mapping ? toCandidates(mapping) : []
  }

  private async map(port: number): Promise<PortMapping | undefined> {
    try {
      const mapping = await this.mapper.mapTcp(port, { signal: this.closing.signal })
      if (this.closed) {
        await this.mapper.unmapTcp(port)
        return undefined
      }
      this.mapping = mapping
      this.log('info', `ice-tcp: TCP port ${port} mapped on the gateway as ${mapping.externalIp}:${mapping.externalPort} (${mapping.via})`)
      return mapping
    } catch (err) {
      if (!this.closed) {
        this.retryAt = Date.now() + RETRY_MS
        this.log('info', `ice-tcp: no TCP port mapping for ${port} (${(err as Error).message}); going on without it`)
      }
      return undefined
    } finally {
      this.pending = undefined
    }
  }

  /** Remove the mapping (waits for one being made). Never throws. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.closing.abort()
    await this.pending?.catch(() => undefined)
    if (this.mapping && this.port !== undefined) {
      this.mapping = undefined
      await this.mapper.unmapTcp(this.port).catch((err: unknown) => this.log('debug', `ice-tcp: removing the TCP mapping: ${(err as Error).message}`))
    }
  }
}

function toCandidates(mapping: PortMapping): MappedCandidate[] {
  const c = tcpMappedCandidate(mapping)
  return c ? [c] : []
}
