/**
 * Runs inside a NAT lab host namespace (natlab-upnp-tcp.test.ts): a TCP echo server on a random port, and a
 * PortMapper mapping that port over NAT-PMP or UPnP IGD (config JSON in $NATLAB_TCP_MAPPER: { via: 'natpmp' |
 * 'upnp' | 'none' }, none: no mapping, the control). JSON lines on stdout: {"event":"listening", port},
 * {"event":"mapped", mapping, candidate}, {"event":"accepted", remote},
 * {"event":"closed"}; logs on stderr. SIGTERM: close the mapper (removes the mapping), then exit 0.
 */
import { createServer } from 'node:net'
import { once } from 'node:events'
import { PortMapper } from '../../../src/nat/port-mapper.js'
import { tcpMappedCandidate } from '../../../src/nat/mapped-candidate.js'

const config = JSON.parse(process.env.NATLAB_TCP_MAPPER ?? '{}') as { via?: 'natpmp' | 'upnp' | 'none' }
const out = (msg: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(msg) + '\n')
}

const server = createServer((socket) => {
  socket.on('error', () => {})
  out({ event: 'accepted', remote: `${socket.remoteAddress}:${socket.remotePort}` })
  socket.pipe(socket)
})
server.listen(0, '0.0.0.0')
await once(server, 'listening')
const port = (server.address() as { port: number }).port
out({ event: 'listening', port })

const mapper = new PortMapper({
  natPmp: config.via !== 'upnp',
  upnp: config.via === 'upnp',
  upnpDiscoveryTimeoutMs: 5000,
  mapTimeoutMs: 8000,
  label: 'NATLAB',
  log: (level, message) => process.stderr.write(`${level} ${message}\n`),
})

let closing = false
async function stop(code: number): Promise<void> {
  if (closing) return
  closing = true
  const guard = setTimeout(() => process.exit(code === 0 ? 3 : code), 8000)
  guard.unref()
  await mapper.close()
  out({ event: 'closed' })
  server.close()
  process.exitCode = code
}
process.on('SIGTERM', () => void stop(0))
process.on('SIGINT', () => void stop(0))

if (config.via !== 'none')
  try {
    const t0 = performance.now()
    const mapping = await mapper.mapTcp(port)
    out({ event: 'mapped', port, mapping, candidate: tcpMappedCandidate(mapping), ms: Math.round(performance.now() - t0) })
  } catch (err) {
    out({ event: 'failed', code: (err as { code?: string }).code, message: (err as Error).message })
    await stop(1)
  }
