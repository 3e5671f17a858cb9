#!/usr/bin/env node
// Helper process of scripts/bench/dnc (not a user tool). Modes (argv[2]):
//   sink <host> <port>                              TCP sink; JSON lines on stdout: {"event":"ready","port"},
//                                                   then per connection {"event":"first","at"} on its first byte and
//                                                   {"event":"end","bytes","firstAt","endAt"} (wall-clock ms) at its
//                                                   end, or once it brought the count that a line "expect <n>" on
//                                                   stdin announced (C++ `dnc -l` keeps its TCP connection open after
//                                                   the channel ended); the connection is then closed
//   relay <port> <sinkHost> <sinkPort> [<crt> <key>]   the baseline "dnc server": accepts TCP (TLS 1.3 with a
//                                                   certificate) on 127.0.0.1:<port> (0: any) and pipes each
//                                                   connection to the sink; prints {"event":"ready","port"}
//   pipe <host> <port> [tls]                         the baseline "dnc client": stdin → TCP (or TLS 1.3) → stdout;
//                                                   stdin EOF half-closes, exits when the peer has ended
// Loopback only. Every connection is closed on every path.
import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const wallMs = () => performance.timeOrigin + performance.now()
const [mode, ...args] = process.argv.slice(2)
process.on('SIGTERM', () => process.exit(0))

if (mode === 'sink') {
  const [host, port] = args
  let expected = Infinity
  let input = ''
  process.stdin.on('data', (d) => {
    input += d
    for (let nl = input.indexOf('\n'); nl >= 0; nl = input.indexOf('\n')) {
      const m = input.slice(0, nl).match(/^expect (\d+)$/)
      input = input.slice(nl + 1)
      if (m) expected = Number(m[1]) || Infinity
    }
  })
  process.stdin.on('end', () => process.exit(0))
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let bytes = 0
    let firstAt
    let done = false
    const finish = () => {
      if (done) return
      done = true
      const endAt = wallMs()
      out({ event: 'end', bytes, firstAt: firstAt ?? endAt, endAt })
    }
    s.on('data', (b) => {
      if (firstAt === undefined) {
        firstAt = wallMs()
        out({ event: 'first', at: firstAt })
      }
      bytes += b.length
      if (bytes >= expected) {
        finish()
        s.destroy()
      }
    })
    s.on('end', () => {
      finish()
      s.end()
    })
    s.on('error', () => s.destroy())
  })
  server.listen(Number(port), host, () => out({ event: 'ready', port: server.address().port }))
} else if (mode === 'relay') {
  const [port, sinkHost, sinkPort, crt, key] = args
  const handler = (client) => {
    const upstream = net.connect({ host: sinkHost, port: Number(sinkPort), allowHalfOpen: true })
    const done = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', done)
    upstream.on('error', done)
    client.pipe(upstream)
    upstream.pipe(client)
  }
  const server = crt
    ? tls.createServer({ cert: readFileSync(crt), key: readFileSync(key), minVersion: 'TLSv1.3', allowHalfOpen: true }, handler)
    : net.createServer({ allowHalfOpen: true }, handler)
  server.listen(Number(port), '127.0.0.1', () => out({ event: 'ready', port: server.address().port }))
} else if (mode === 'pipe') {
  const [host, port, secure] = args
  const sock =
    secure === 'tls'
      ? tls.connect({ host, port: Number(port), rejectUnauthorized: false, minVersion: 'TLSv1.3', allowHalfOpen: true })
      : net.connect({ host, port: Number(port), allowHalfOpen: true })
  sock.on('error', (err) => {
    process.stderr.write(`pipe: ${err.message}\n`)
    process.exit(1)
  })
  sock.once(secure === 'tls' ? 'secureConnect' : 'connect', () => process.stdin.pipe(sock))
  sock.pipe(process.stdout)
  sock.on('close', () => process.exit(0))
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
