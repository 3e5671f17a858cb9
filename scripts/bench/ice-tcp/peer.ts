// The receiving process of the ICE-TCP benchmark: a TCP / TLS server, or the requester side of an ICE-TCP session.
import { createServer, type Socket } from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import { IceTcpTransport } from '../../../packages/core/src/transport/ice-tcp/index.js'
import { tlsContext } from '../../../packages/core/src/transport/ice-tcp/tls-link.js'
import { benchIdentity, type ChildMessage, type ParentMessage } from './common.js'

const client = benchIdentity('client-id')
const server = benchIdentity('server-id')
const send = (m: ChildMessage): void => void process.send!(m)
let pendingAnswer: ((description: string) => void) | undefined

function receive(stream: Duplex, total: number): void {
  let got = 0
  let first = 0
  stream.on('data', (d: Buffer) => {
    if (got === 0) first = performance.now()
    got += d.length
    if (got >= total) {
      send({ done: true, ms: performance.now() - first, bytes: got })
      stream.removeAllListeners('data')
      stream.destroy()
    }
  })
}

async function start(mode: string, total: number): Promise<void> {
  if (mode === 'tcp' || mode === 'tls') {
    const context = tlsContext(client)
    const srv = createServer({ noDelay: true }, (socket: Socket) => {
      srv.close()
      if (mode === 'tcp') return receive(socket, total)
      const t = new tls.TLSSocket(socket, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: false })
      receive(t, total)
    })
    srv.listen(0, '127.0.0.1', () => send({ ready: 'port', port: (srv.address() as { port: number }).port }))
    return
  }
  const transport = new IceTcpTransport({ identity: client, bindAddress: '127.0.0.1', includeLoopback: true })
  const signal = AbortSignal.timeout(60_000)
  const session = await transport.createSession({ role: 'requester', connectionId: 1n, peerChain: server.chain, signal })
  const answer = new Promise<string>((r) => (pendingAnswer = r))
  send({ ready: 'description', description: session.localDescription })
  const link = await session.connect({ remoteDescription: await answer, peerIsNative: mode === 'ice-native', signal })
  receive(link.stream!, total)
  link.once('close', () => void transport.close())
}

process.on('message', (m: ParentMessage) => {
  if (m.cmd === 'start') start(m.mode, m.total).catch((err: Error) => send({ error: err.message }))
  else if (m.cmd === 'answer') pendingAnswer?.(m.description)
  else process.exit(0)
})
