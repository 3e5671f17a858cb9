/**
 * A scripted TURN server on loopback for hostile-input tests: every connection's STUN stream is decoded and handed
 * to `onMessage`, which answers (or not) with raw bytes. Counts connections (in all, open now, most open at once).
 */
import { createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { StunMessage } from '../../src/transport/stun/message.js'
import { StunMessageBuilder } from '../../src/transport/stun/builder.js'
import { StunAttr } from '../../src/transport/stun/constants.js'
import { StunStreamDecoder } from '../../src/transport/turn/stream-decoder.js'

export interface FakeConnection {
  readonly socket: Socket
  /** 0 for the first connection of the server, then 1, 2, … */
  readonly index: number
  /** Set it to receive the following bytes raw instead of as STUN (a bound data connection). */
  raw?: ((chunk: Buffer) => void) | undefined
}

export interface FakeTurnServer {
  readonly port: number
  readonly connections: FakeConnection[]
  readonly open: Set<Socket>
  maxOpen: number
  close(): Promise<void>
}

export async function startFakeTurn(onMessage: (msg: StunMessage, conn: FakeConnection) => void, onConnection?: (conn: FakeConnection) => void): Promise<FakeTurnServer> {
  const connections: FakeConnection[] = []
  const open = new Set<Socket>()
  const state = { maxOpen: 0 }
  const server: Server = createServer((socket) => {
    socket.on('error', () => {})
    const conn: FakeConnection = { socket, index: connections.length }
    connections.push(conn)
    open.add(socket)
    state.maxOpen = Math.max(state.maxOpen, open.size)
    socket.on('close', () => open.delete(socket))
    const decoder = new StunStreamDecoder(65_536)
    socket.on('data', (chunk: Buffer) => {
      if (conn.raw) return conn.raw(chunk)
      decoder.push(chunk)
      for (;;) {
        // onMessage may have switched the connection to raw bytes (the rest of this chunk is raw too)
        const raw = conn.raw as ((chunk: Buffer) => void) | undefined
        if (raw) return raw(decoder.takeRemaining())
        let item
        try {
          item = decoder.next()
        } catch {
          socket.destroy()
          return
        }
        if (!item) return
        if (item.kind !== 'stun') continue
        try {
          onMessage(StunMessage.decode(item.message, { maxBytes: 65_536 }), conn)
        } catch {
          socket.destroy()
          return
        }
      }
    })
    onConnection?.(conn)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as { port: number }).port
  return {
    port,
    connections,
    open,
    get maxOpen() {
      return state.maxOpen
    },
    set maxOpen(v: number) {
      state.maxOpen = v
    },
    close: async () => {
      for (const s of open) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/** A plain success answer (no MESSAGE-INTEGRITY: the client was never challenged, so it holds no key). */
export function successTo(msg: StunMessage, add?: (b: StunMessageBuilder) => void): Buffer {
  const b = StunMessageBuilder.responseTo(msg, 'success')
  add?.(b)
  return b.build({ fingerprint: false })
}

/** The Allocate success a fake server gives: relayed 127.0.0.1:<relayPort>, mapped 127.0.0.1:1, lifetime 600. */
export function allocateSuccess(msg: StunMessage, relayPort = 50_000): Buffer {
  return successTo(msg, (b) =>
    b
      .addXorAddress(StunAttr.XOR_RELAYED_ADDRESS, { address: '127.0.0.1', port: relayPort })
      .addXorAddress(StunAttr.XOR_MAPPED_ADDRESS, { address: '127.0.0.1', port: 1 })
      .addUint32(StunAttr.LIFETIME, 600),
  )
}
