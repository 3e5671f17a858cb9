/**
 * Two in-memory MessageTransports joined back to back, with a bounded buffer and 'drain', so real Multiplexer and
 * ChannelSocket objects can be exercised in one process (unit tests of the forwarding code, not of the network).
 */
import { EventEmitter } from 'node:events'
import type { MessageTransport } from '@dhtnet/core'

class MemoryTransport extends EventEmitter implements MessageTransport {
  readonly reliable = true
  readonly maxMessageSize = 256 * 1024
  bufferedAmount = 0
  closed = false
  peer!: MemoryTransport
  private readonly queue: Buffer[] = []
  private scheduled = false

  send(message: Uint8Array): boolean {
    if (this.closed) throw Object.assign(new Error('transport closed'), { code: 'TRANSPORT_CLOSED' })
    const copy = Buffer.from(message)
    this.queue.push(copy)
    this.bufferedAmount += copy.length
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.flush())
    }
    return this.bufferedAmount < 1024 * 1024
  }

  private flush(): void {
    this.scheduled = false
    const wasHigh = this.bufferedAmount >= 1024 * 1024
    for (const m of this.queue.splice(0)) {
      this.bufferedAmount -= m.length
      if (!this.peer.closed) this.peer.emit('message', m)
    }
    if (wasHigh && !this.closed) this.emit('drain')
  }

  close(err?: Error): void {
    if (this.closed) return
    this.closed = true
    this.emit('close', err)
    this.peer.close(err)
  }
}

export function memoryTransportPair(): [MessageTransport, MessageTransport] {
  const a = new MemoryTransport()
  const b = new MemoryTransport()
  a.peer = b
  b.peer = a
  return [a, b]
}
