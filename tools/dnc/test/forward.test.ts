/**
 * The channel <-> TCP plumbing with real ChannelSockets (a real Multiplexer pair over an in-memory transport) and
 * real TCP services on loopback: half-close both ways, errors passed on as resets with readable reasons.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { Multiplexer, type ChannelSocket } from '@dhtnet/core'
import { forwardChannelToTcp } from '../src/forward.js'
import { connectService } from '../src/server.js'
import { memoryTransportPair } from '../../../packages/cli-kit/test/helpers/memory-transport.js'
import { echoService, closedPort, hashUntilEnd, sendPattern, sinkService } from '../../../packages/cli-kit/test/helpers/tcp.js'

const muxes: Multiplexer[] = []
after(() => {
  for (const m of muxes) m.close()
})

/** A channel pair: `local` on the client's multiplexer, `remote` on the server's. */
async function channelPair(name = 'nc://127.0.0.1:1'): Promise<{ local: ChannelSocket; remote: ChannelSocket }> {
  const [ta, tb] = memoryTransportPair()
  const client = new Multiplexer({ reliable: ta, initiator: true })
  const server = new Multiplexer({ reliable: tb, initiator: false, onChannelRequest: () => true })
  muxes.push(client, server)
  const incoming = new Promise<ChannelSocket>((resolve) => server.once('channel', resolve))
  const local = await client.openChannel(name)
  return { local, remote: await incoming }
}

test('echo through the forward: bytes exact, client half-close ends the service, the service end reaches the client', async () => {
  const echo = await echoService()
  after(() => echo.close())
  const { local, remote } = await channelPair()
  const tcp = await connectService('127.0.0.1', echo.port, `127.0.0.1:${echo.port}`)
  const forwarding = forwardChannelToTcp(remote, tcp, `127.0.0.1:${echo.port}`)
  const received = hashUntilEnd(local)
  const sent = await sendPattern(local, 8 * 1024 * 1024 + 123, 1)
  local.end()
  const got = await received
  assert.deepEqual(got, sent)
  const r = await forwarding
  assert.equal(r.bytesFromChannel, sent.bytes)
  assert.equal(r.bytesToChannel, sent.bytes)
})

test('service ends first: the client still sends afterwards and everything arrives (half-close the other way)', async () => {
  // the service sends 1 MiB and ends its side at once, then keeps reading until the client ends
  const sink = await sinkService({ replyBytes: 1024 * 1024 })
  after(() => sink.close())
  const { local, remote } = await channelPair()
  const tcp = await connectService('127.0.0.1', sink.port, 'sink')
  const forwarding = forwardChannelToTcp(remote, tcp, 'sink')
  const fromService = await hashUntilEnd(local) // EOF arrives while our side is still open
  assert.equal(fromService.bytes, 1024 * 1024)
  assert.equal(local.writable, true)
  const sent = await sendPattern(local, 3 * 1024 * 1024, 2)
  const done = new Promise<void>((resolve) => sink.onResult(resolve))
  local.end()
  await done
  assert.deepEqual(sink.results[0], sent)
  assert.deepEqual(sink.replies[0], fromService)
  await forwarding
})

test('a refused destination is an error that names it', async () => {
  const port = await closedPort()
  await assert.rejects(connectService('127.0.0.1', port, `127.0.0.1:${port}`), new RegExp(`^Error: connection refused by 127\\.0\\.0\\.1:${port}$`))
})

test('the service resets the connection: the client channel errors with the reason', async () => {
  const server = createServer((s) => s.once('data', () => s.resetAndDestroy()))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  after(() => server.close())
  const port = (server.address() as AddressInfo).port
  const { local, remote } = await channelPair()
  const tcp = await connectService('127.0.0.1', port, `127.0.0.1:${port}`)
  const forwarding = forwardChannelToTcp(remote, tcp, `127.0.0.1:${port}`)
  const outcome = forwarding.then(
    () => 'resolved',
    (e: Error) => e.message,
  )
  local.write('hello')
  const err = await new Promise<Error>((resolve) => local.once('error', resolve))
  assert.equal((err as { code?: string }).code, 'CHANNEL_RESET')
  assert.match(err.message, new RegExp(`connection reset by 127\\.0\\.0\\.1:${port}`))
  assert.match(await outcome, /connection reset by/)
})

test('the client resets the channel: the service sees a TCP reset, not a clean end', async () => {
  let serviceSide: Socket | undefined
  const seen = new Promise<string>((resolve) => {
    const server = createServer((s) => {
      serviceSide = s
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
      s.on('end', () => resolve('clean end'))
    })
    server.listen(0, '127.0.0.1', () => after(() => server.close()))
    setImmediate(() => {
      void (async () => {
        const port = (server.address() as AddressInfo).port
        const { local, remote } = await channelPair()
        const tcp = await connectService('127.0.0.1', port, 'svc')
        const forwarding = forwardChannelToTcp(remote, tcp, 'svc')
        forwarding.catch(() => {})
        local.on('error', () => {})
        local.write('some bytes')
        setTimeout(() => local.destroy(new Error('client gave up')), 50)
      })()
    })
  })
  assert.equal(await seen, 'ECONNRESET')
  serviceSide?.destroy()
})
