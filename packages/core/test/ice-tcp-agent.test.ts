import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import type { NominatedPath } from '../src/transport/ice-tcp/agent.js'
import { isDhtnetError } from '../src/errors.js'
import { PassiveListener } from '../src/transport/ice-tcp/listener.js'
import { buildCheckSuccess } from '../src/transport/ice-tcp/check-messages.js'
import { FrameDecoder, encodeFrame } from '../src/transport/ice-tcp/framing.js'
import { parseIceMessage } from '../src/transport/ice-tcp/candidates.js'
import { StunMessage, StunAttr, verifyIntegrity, verifyFingerprint, shortTermKey } from '../src/transport/stun/index.js'
import { loadIceTcp, loadIceMessages, SCENARIOS } from './helpers/dhtnet-captures.js'
import { agentSide, testLogger, type AgentSide } from './helpers/ice-agents.js'

async function withSides(fn: (controlling: AgentSide, controlled: AgentSide) => Promise<void>, opts: Parameters<typeof agentSide>[1] = {}) {
  const controlling = await agentSide('controlling', opts)
  const controlled = await agentSide('controlled', opts)
  try {
    await fn(controlling, controlled)
  } finally {
    await controlling.close()
    await controlled.close()
  }
}

function readN(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let got = 0
    const onData = (d: Buffer) => {
      parts.push(d)
      got += d.length
      if (got >= n) {
        socket.off('data', onData)
        socket.pause()
        resolve(Buffer.concat(parts))
      }
    }
    socket.on('data', onData)
    socket.once('error', reject)
    socket.resume()
  })
}

test('two agents on loopback nominate the same TCP connection; raw bytes pass both ways after the switch point', async () => {
  await withSides(async (a, b) => {
    const [pa, pb] = await Promise.all([a.agent.start(b.description), b.agent.start(a.description)])
    assert.equal(pa.role, 'controlling')
    assert.equal(pb.role, 'controlled')
    // the same connection seen from both ends
    assert.equal(pa.localPort, pb.remotePort)
    assert.equal(pa.remotePort, pb.localPort)
    assert.equal(pa.direction === 'outbound', pb.direction === 'inbound')
    assert.match(pa.candidatePair, /^host\/(host|prflx)$/)
    assert.equal(pa.remaining.length, 0)
    assert.equal(pb.remaining.length, 0)
    // every other connection is gone
    assert.equal(a.agent.connectionCount, 0)
    assert.equal(b.agent.connectionCount, 0)
    const send = (p: NominatedPath, data: string) => p.socket.write(data)
    const gotB = readN(pb.socket, 5)
    send(pa, 'hello')
    assert.equal((await gotB).toString(), 'hello')
    const gotA = readN(pa.socket, 5)
    send(pb, 'world')
    assert.equal((await gotA).toString(), 'world')
    pa.socket.destroy()
    pb.socket.destroy()
  })
})

test('controlled side started late: the early nomination is kept and ICE ends at start', async () => {
  await withSides(async (a, b) => {
    const pa = a.agent.start(b.description)
    // b has not started (its answer is "still in the DHT"): it answers a's checks, including USE-CANDIDATE
    const path = await pa
    const pb = await b.agent.start(a.description)
    assert.equal(path.localPort, pb.remotePort)
    path.socket.destroy()
    pb.socket.destroy()
  })
})

test('no path: ICE_FAILED names the pairs tried', async () => {
  await withSides(
    async (a, b) => {
      const dead = { ...b.description, candidates: b.description.candidates.map((c) => (c.tcpType === 'passive' ? { ...c, port: 1 } : c)) }
      await b.close()
      await assert.rejects(
        a.agent.start(dead),
        (e: unknown) => isDhtnetError(e, 'ICE_FAILED') && /1 of 1 candidate pair failed \(127\.0\.0\.1 -> 127\.0\.0\.1:1: connection refused\)/.test((e as Error).message),
      )
    },
    { timeouts: { inboundWaitMs: 200 } },
  )
})

test('role conflict: two controlling agents settle on one controlling side by tie-breaker and still connect', async () => {
  const a = await agentSide('controlling', { tieBreaker: 10n })
  const b = await agentSide('controlling', { tieBreaker: 20n })
  try {
    const [pa, pb] = await Promise.all([a.agent.start(b.description), b.agent.start(a.description)])
    assert.equal(pb.role, 'controlling')
    assert.equal(pa.role, 'controlled')
    assert.equal(pa.localPort, pb.remotePort)
    pa.socket.destroy()
    pb.socket.destroy()
  } finally {
    await a.close()
    await b.close()
  }
})

test('listener: garbage, plain text and unknown ufrags are closed; a concurrent good connection still gets through', async () => {
  await withSides(async (a, b) => {
    const port = b.listener.portFor(4)!
    const closedSoon = async (payload: Buffer | undefined) => {
      const s = connect({ host: '127.0.0.1', port })
      await once(s, 'connect')
      if (payload) s.write(payload)
      const t0 = performance.now()
      await once(s, 'close')
      return performance.now() - t0
    }
    const plain = closedSoon(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
    const garbage = closedSoon(Buffer.from([0, 40, ...new Array<number>(40).fill(7)]))
    const unknown = closedSoon(Buffer.from('0074' + '00'.repeat(116), 'hex'))
    // meanwhile the real ICE exchange works
    const [pa, pb] = await Promise.all([a.agent.start(b.description), b.agent.start(a.description)])
    await Promise.all([plain, garbage, unknown])
    assert.ok(b.listener.refused >= 3)
    pa.socket.destroy()
    pb.socket.destroy()
  })
})

test('listener: silent connections are closed after the pre-auth timeout; per-address and total bounds', async () => {
  const listener = await PassiveListener.open({ bindAddress: '127.0.0.1', logger: testLogger, preAuthTimeoutMs: 300, maxUnauthenticatedPerAddress: 2, maxUnauthenticated: 3 })
  try {
    const port = listener.portFor(4)!
    const open = async () => {
      const s = connect({ host: '127.0.0.1', port })
      s.on('error', () => {})
      await once(s, 'connect')
      return { s, closed: once(s, 'close').then(() => performance.now()) }
    }
    const t0 = performance.now()
    const first = await open()
    const second = await open()
    const third = await open() // over the per-address bound: closed at once
    const t3 = await third.closed
    assert.ok(t3 - t0 < 250, `third closed after ${t3 - t0} ms`)
    const [t1, t2] = await Promise.all([first.closed, second.closed])
    assert.ok(t1 - t0 >= 250 && t2 - t0 >= 250, 'silent connections wait for the timeout')
    assert.equal(listener.unauthenticated, 0)
    assert.equal(listener.refused, 3)
  } finally {
    await listener.close()
  }
})

test('a declared first frame above the pre-auth bound closes the connection before the payload arrives', async () => {
  const listener = await PassiveListener.open({ bindAddress: '127.0.0.1', logger: testLogger })
  try {
    const s = connect({ host: '127.0.0.1', port: listener.portFor(4)! })
    s.on('error', () => {})
    await once(s, 'connect')
    s.write(Buffer.from([0xff, 0xff, 1, 2, 3]))
    await once(s, 'close')
    assert.equal(listener.refused, 1)
  } finally {
    await listener.close()
  }
})

for (const scenario of SCENARIOS) {
  test(`captured ${scenario}: fed the peer's first check, our agent answers as pjnath did and checks back`, async () => {
    const cap = loadIceTcp(scenario)
    const msgs = loadIceMessages()
    for (const connection of cap.connections) {
      const passive = cap.peers[connection.passive_side]
      const active = cap.peers[connection.active_side]
      const activeDescription = parseIceMessage(msgs[`${scenario}-${connection.active_side === 'client' ? 'request' : 'answer'}`].ice_msg)
      const first = connection.frames[0]!
      const firstMsg = StunMessage.decode(Buffer.from(first.hex, 'hex'))
      const capturedResponse = connection.frames[1]!
      const software = StunMessage.decode(Buffer.from(capturedResponse.hex, 'hex')).get(StunAttr.SOFTWARE)!.value

      // 1. byte for byte: the success response to the captured request, for the captured source address
      const [ip, port] = connection.initiator.split(':')
      assert.equal(buildCheckSuccess(firstMsg, { address: ip!, port: Number(port) }, passive.pwd, software).toString('hex'), capturedResponse.hex)

      // 2. live: our agent with the accepting peer's credentials and role, the captured request over a real socket
      const side = await agentSide(passive.controlling ? 'controlling' : 'controlled', { ufrag: passive.ufrag, pwd: passive.pwd, software })
      try {
        // started with the opener's description, minus its candidates (so it only answers on this socket)
        void side.agent.start({ ...activeDescription, candidates: [] })
        const s = connect({ host: '127.0.0.1', port: side.listener.portFor(4)! })
        await once(s, 'connect')
        const decoder = new FrameDecoder()
        const frames: Buffer[] = []
        const two = new Promise<void>((resolve) =>
          s.on('data', (d) => {
            decoder.push(d)
            for (let f = decoder.next(); f; f = decoder.next()) frames.push(f)
            if (frames.length >= 2) resolve()
          }),
        )
        s.write(encodeFrame(Buffer.from(first.hex, 'hex')))
        await two
        const response = StunMessage.decode(frames[0]!)
        assert.equal(response.class, 'success')
        assert.ok(response.transactionId.equals(firstMsg.transactionId))
        assert.deepEqual(
          response.attributes.map((a) => a.type),
          [StunAttr.XOR_MAPPED_ADDRESS, StunAttr.SOFTWARE, StunAttr.MESSAGE_INTEGRITY, StunAttr.FINGERPRINT],
        )
        assert.deepEqual(response.xorMappedAddress, { family: 4, address: '127.0.0.1', port: s.localPort })
        assert.ok(verifyIntegrity(response, shortTermKey(passive.pwd)) && verifyFingerprint(response))
        // then its own check back on the same socket, like pjnath's frame 2
        const check = StunMessage.decode(frames[1]!)
        const capturedCheck = StunMessage.decode(Buffer.from(connection.frames[2]!.hex, 'hex'))
        assert.equal(check.class, 'request')
        assert.deepEqual(
          check.attributes.map((a) => a.type),
          capturedCheck.attributes.map((a) => a.type),
        )
        assert.equal(check.priority, capturedCheck.priority) // 0x6EFFFFFF
        assert.equal(check.username, capturedCheck.username) // <opener ufrag>:<our ufrag>
        assert.ok(verifyIntegrity(check, shortTermKey(active.pwd)) && verifyFingerprint(check))
        assert.equal(check.software, capturedCheck.software)
        s.destroy()
      } finally {
        await side.close()
      }
    }
  })
}

/** A hand-driven peer on one TCP connection: frames in, frames out. */
function framedPeer(socket: Socket) {
  const decoder = new FrameDecoder()
  const queue: Buffer[] = []
  let wake: (() => void) | undefined
  socket.on('data', (d) => {
    decoder.push(d)
    for (let f = decoder.next(); f; f = decoder.next()) queue.push(f)
    wake?.()
  })
  return {
    async next(): Promise<StunMessage> {
      while (queue.length === 0) await new Promise<void>((r) => (wake = r))
      return StunMessage.decode(queue.shift()!)
    },
  }
}

test('switch point, controlled side: bytes sent right after USE-CANDIDATE (same write) are handed over undecoded', async () => {
  const { buildCheckRequest } = await import('../src/transport/ice-tcp/check-messages.js')
  const side = await agentSide('controlled')
  try {
    const peer = { ufrag: 'peer0001', pwd: 'peerpassword0123456789ab' }
    void side.agent.start({ ...peer, candidates: [] })
    const s = connect({ host: '127.0.0.1', port: side.listener.portFor(4)! })
    await once(s, 'connect')
    const p = framedPeer(s)
    const check = (useCandidate: boolean) =>
      buildCheckRequest({
        localUfrag: peer.ufrag,
        remoteUfrag: side.description.ufrag,
        remotePwd: side.description.pwd,
        priority: 0x6efffeff,
        role: 'controlling',
        tieBreaker: 7n,
        useCandidate,
      })
    s.write(encodeFrame(check(false)))
    assert.equal((await p.next()).class, 'success')
    const theirCheck = await p.next() // the agent checks back; we answer nothing (a lazy peer)
    assert.equal(theirCheck.class, 'request')
    const tail = Buffer.from('\x16\x03\x01 not framed, the first TLS bytes')
    s.write(Buffer.concat([encodeFrame(check(true)), tail]))
    assert.equal((await p.next()).class, 'success')
    const path = await side.agent.result
    assert.deepEqual(path.remaining, tail)
    assert.equal(path.role, 'controlled')
    path.socket.destroy()
    s.destroy()
  } finally {
    await side.close()
  }
})

for (const native of [false, true])
  test(`switch point, controlling side (${native ? 'native' : 'framed'}): bytes right after the success response to USE-CANDIDATE are handed over undecoded; a late peer check is ${native ? 'left unanswered' : 'answered'}`, async () => {
    const { buildCheckSuccess, buildCheckRequest } = await import('../src/transport/ice-tcp/check-messages.js')
    const { localCandidates } = await import('../src/transport/ice-tcp/candidates.js')
    const { createServer } = await import('node:net')
    const side = await agentSide('controlling')
    const peer = { ufrag: 'peer0002', pwd: 'peerpassword0123456789cd' }
    const server = createServer()
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    try {
      const port = (server.address() as import('node:net').AddressInfo).port
      const accepted = once(server, 'connection')
      void side.agent.start({ ...peer, candidates: localCandidates({ hosts: [{ address: '127.0.0.1', passivePort: port }] }) }, { native })
      const [s] = (await accepted) as [Socket]
      const p = framedPeer(s)
      const first = await p.next()
      assert.equal(first.iceControlling !== undefined, true)
      assert.equal(first.priority, 0x6efffeff)
      s.write(encodeFrame(buildCheckSuccess(first, { address: s.remoteAddress!, port: s.remotePort! }, peer.pwd, undefined)))
      // our own check, so that the agent holds a pair checked both ways
      s.write(
        encodeFrame(
          buildCheckRequest({
            localUfrag: peer.ufrag,
            remoteUfrag: side.description.ufrag,
            remotePwd: side.description.pwd,
            priority: 0x6effffff,
            role: 'controlled',
            tieBreaker: 1n,
          }),
        ),
      )
      assert.equal((await p.next()).class, 'success')
      const nomination = await p.next()
      assert.ok(nomination.useCandidate)
      // a check of ours crossed the nomination on the wire
      s.write(
        encodeFrame(
          buildCheckRequest({
            localUfrag: peer.ufrag,
            remoteUfrag: side.description.ufrag,
            remotePwd: side.description.pwd,
            priority: 0x6effffff,
            role: 'controlled',
            tieBreaker: 1n,
          }),
        ),
      )
      if (native) {
        const answered = await Promise.race([p.next().then(() => true), new Promise((r) => setTimeout(() => r(false), 200))])
        assert.equal(answered, false, 'no STUN after the USE-CANDIDATE request in native mode')
      } else assert.equal((await p.next()).class, 'success')
      const tail = Buffer.from('raw bytes after the switch point')
      s.write(Buffer.concat([encodeFrame(buildCheckSuccess(nomination, { address: s.remoteAddress!, port: s.remotePort! }, peer.pwd, undefined)), tail]))
      const path = await side.agent.result
      assert.deepEqual(path.remaining, tail)
      assert.equal(path.role, 'controlling')
      path.socket.destroy()
      s.destroy()
    } finally {
      await side.close()
      await new Promise<void>((r) => server.close(() => r()))
    }
  })

test('a check connection handed over (detach) keeps its socket from crashing the process when a late write fails', async () => {
  const { createServer } = await import('node:net')
  const { CheckConnection } = await import('../src/transport/ice-tcp/check-connection.js')
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as { port: number }).port
  const accepted = once(server, 'connection') as Promise<[Socket]>
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  const [peer] = await accepted
  const conn = new CheckConnection(1, socket, 'outbound', { onRequest: () => {}, onClose: () => {} })
  conn.start()
  const { socket: handedOver } = conn.detach()
  // the peer resets the connection: the socket fails on its own (read ECONNRESET) or on a write made now (an answer
  // queued before the hand-over); either way asynchronously, with the check connection's listeners gone
  const closed = new Promise((resolve) => handedOver.once('close', resolve)) // not once(): it would listen to 'error'
  peer.resetAndDestroy()
  await new Promise((r) => setTimeout(r, 100))
  if (!handedOver.destroyed) {
    handedOver.write(Buffer.alloc(64))
    handedOver.write(Buffer.alloc(64))
  }
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the socket did not close within 5 s')), 5000)))
  await Promise.race([closed, deadline]) // with no 'error' listener, the failure would have been an uncaught exception
  clearTimeout(timer)
  assert.ok(handedOver.destroyed)
  server.close()
})
