import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { isDhtnetError } from '../src/errors.js'
import { ChannelSocket, DatagramChannel, Multiplexer, MAX_CHANNEL_NAME_BYTES } from '../src/mux/index.js'
import { activeTimerHandles, createMemoryTransportPair, readAll, waitFor, type MuxPair, withPair } from './helpers/memory-transport.js'
import { sendStamped } from './helpers/byte-streams.js'

/** b accepts every channel; errors on them are expected by the tests that use this */
function acceptAll(pair: MuxPair): void {
  pair.b.on('channel', (c: ChannelSocket) => c.on('error', () => {}))
}

test('open and accept: both ends see the channel with its name, ids from disjoint spaces', () =>
  withPair({}, async ({ a, b }) => {
    const incoming: ChannelSocket[] = []
    b.on('channel', (ch: ChannelSocket) => incoming.push(ch))
    a.on('channel', (ch: ChannelSocket) => incoming.push(ch))
    const c1 = await a.openChannel('git://project')
    const c2 = await b.openChannel('reverse')
    assert.equal(incoming.length, 2)
    assert.equal(c1.name, 'git://project')
    assert.equal(c1.initiator, true)
    assert.equal(incoming[0]!.name, 'git://project')
    assert.equal(incoming[0]!.initiator, false)
    assert.equal(incoming[0]!.channelId, c1.channelId)
    assert.equal(c1.channelId % 2, 1, 'initiator side allocates odd ids')
    assert.equal(c2.channelId % 2, 0, 'responder side allocates even ids')
    const infos = a.channels()
    assert.deepEqual(infos.map((i) => [i.name, i.kind, i.initiator]).sort(), [
      ['git://project', 'stream', true],
      ['reverse', 'stream', false],
    ])
    assert.ok(a.peerProtocolVersion === 1 && b.peerProtocolVersion === 1)
  }))

test('decline with a reason: CHANNEL_DECLINED carries it; sync and async handlers', () =>
  withPair(
    {
      b: {
        onChannelRequest: (name) => {
          if (name === 'nope') return { accept: false, reason: 'service "nope" is not authorized' }
          if (name === 'later') return new Promise((r) => setTimeout(() => r(false), 5))
          if (name === 'boom') throw new Error('handler bug')
          return true
        },
      },
    },
    async ({ a, b }) => {
      b.on('channel', () => {})
      await assert.rejects(a.openChannel('nope'), (err) => {
        assert.ok(isDhtnetError(err, 'CHANNEL_DECLINED'))
        assert.match(err.message, /service "nope" is not authorized/)
        return true
      })
      await assert.rejects(a.openChannel('later'), (err) => isDhtnetError(err, 'CHANNEL_DECLINED'))
      await assert.rejects(a.openChannel('boom'), (err) => isDhtnetError(err, 'CHANNEL_DECLINED') && /handler failed/.test(err.message))
      const ok = await a.openChannel('fine')
      assert.equal(ok.name, 'fine')
      assert.equal(b.channels().length, 1)
    },
  ))

test('no handler and no listener: channels are declined', () =>
  withPair({}, async ({ a }) => {
    await assert.rejects(a.openChannel('x'), (err) => isDhtnetError(err, 'CHANNEL_DECLINED'))
  }))

test('channel names: 4 KiB accepted (multi-byte UTF-8 too), 4 KiB + 1 rejected locally', () =>
  withPair({}, async (pair) => {
    acceptAll(pair)
    const names: string[] = []
    pair.b.on('channel', (ch: ChannelSocket) => names.push(ch.name))
    const max = 'n'.repeat(MAX_CHANNEL_NAME_BYTES)
    const ch = await pair.a.openChannel(max)
    assert.equal(ch.name, max)
    const utf8 = 'é'.repeat(MAX_CHANNEL_NAME_BYTES / 2) // 2 bytes each
    await pair.a.openChannel(utf8)
    assert.deepEqual(names, [max, utf8])
    await assert.rejects(pair.a.openChannel(max + 'x'), (err) => isDhtnetError(err, 'BAD_CHANNEL_NAME'))
    await assert.rejects(pair.a.openChannel(utf8 + 'x'), (err) => isDhtnetError(err, 'BAD_CHANNEL_NAME'))
    assert.equal(pair.a.stats().pendingOpens, 0)
  }))

test('open: TIMEOUT when the peer never answers, ABORTED on signal, CONNECTION_CLOSED when closed', () =>
  withPair(
    { b: { onChannelRequest: () => new Promise(() => {}) } }, // never decides
    async ({ a, b }) => {
      await assert.rejects(a.openChannel('slow', { timeoutMs: 50 }), (err) => isDhtnetError(err, 'TIMEOUT'))
      const ac = new AbortController()
      const p = a.openChannel('aborted', { signal: ac.signal })
      ac.abort()
      await assert.rejects(p, (err) => isDhtnetError(err, 'ABORTED'))
      const pre = new AbortController()
      pre.abort()
      await assert.rejects(a.openChannel('pre-aborted', { signal: pre.signal }), (err) => isDhtnetError(err, 'ABORTED'))
      // the RESETs of the abandoned opens clean the peer's pending requests
      await new Promise((r) => setTimeout(r, 20))
      assert.equal(b.stats().pendingRequests, 0)
      assert.equal(a.stats().pendingOpens, 0)
      const pending = a.openChannel('dies-with-mux')
      a.close()
      await assert.rejects(pending, (err) => isDhtnetError(err, 'CONNECTION_CLOSED'))
      await assert.rejects(a.openChannel('after-close'), (err) => isDhtnetError(err, 'CONNECTION_CLOSED'))
    },
  ))

test('byte-exact transfer in both directions at once (64 MiB each way, SHA-256)', () =>
  withPair({}, async (pair) => {
    const accepted = waitFor<ChannelSocket>(pair.b, 'channel')
    const left = await pair.a.openChannel('bulk')
    const right = await accepted
    const bothClosed = Promise.all([once(left, 'close'), once(right, 'close')])
    const blocks = 64
    const block = randomBytes(1024 * 1024)
    async function send(sock: ChannelSocket, tag: number): Promise<string> {
      const sent = await sendStamped(sock, blocks, block, tag)
      sock.end()
      return sent
    }
    function receive(sock: ChannelSocket): Promise<{ hash: string; bytes: number }> {
      return new Promise((resolve, reject) => {
        const h = createHash('sha256')
        let bytes = 0
        sock.on('data', (c: Buffer) => {
          h.update(c)
          bytes += c.length
        })
        sock.once('end', () => resolve({ hash: h.digest('hex'), bytes }))
        sock.once('error', reject)
      })
    }
    const [sentAB, sentBA, gotB, gotA] = await Promise.all([send(left, 1), send(right, 2), receive(right), receive(left)])
    assert.equal(gotB.bytes, blocks * 1024 * 1024)
    assert.equal(gotB.hash, sentAB)
    assert.equal(gotA.hash, sentBA)
    assert.equal(left.bytesWritten, blocks * 1024 * 1024)
    assert.equal(right.bytesRead, blocks * 1024 * 1024)
    await bothClosed
    // both directions ended: both tables are empty again
    assert.equal(pair.a.stats().channels, 0)
    assert.equal(pair.b.stats().channels, 0)
  }))

test('half-close: the side that ended still receives; the other side writes after seeing end', () =>
  withPair({}, async (pair) => {
    const accepted = waitFor<ChannelSocket>(pair.b, 'channel')
    const client = await pair.a.openChannel('echo')
    const server = await accepted
    const bothClosed = Promise.all([once(client, 'close'), once(server, 'close')])
    // a → b, then a ends
    client.end('request')
    const request = await readAll(server)
    assert.equal(request.toString(), 'request')
    assert.equal(server.writable, true, 'the server can still write after the peer ended')
    // b answers after the end, in several writes, then ends
    const response = readAll(client)
    server.write('resp')
    await new Promise((r) => setTimeout(r, 10))
    server.end('onse')
    assert.equal((await response).toString(), 'response')
    await bothClosed
    assert.equal(pair.a.stats().channels + pair.b.stats().channels, 0)

    // the other direction: the acceptor ends first
    const accepted2 = waitFor<ChannelSocket>(pair.b, 'channel')
    const c2 = await pair.a.openChannel('reverse')
    const s2 = await accepted2
    s2.end('banner')
    assert.equal((await readAll(c2)).toString(), 'banner')
    const got = readAll(s2)
    c2.end('late bytes')
    assert.equal((await got).toString(), 'late bytes')
  }))

test('destroy(err) resets the channel: the peer gets CHANNEL_RESET with the reason, then close', () =>
  withPair({}, async (pair) => {
    const accepted = waitFor<ChannelSocket>(pair.b, 'channel')
    const client = await pair.a.openChannel('x')
    const server = await accepted
    const errored = new Promise<Error>((resolve) => server.once('error', resolve))
    const closed = new Promise((resolve) => server.once('close', resolve))
    client.on('error', () => {})
    client.destroy(new Error('disk full'))
    const err = await errored
    assert.ok(isDhtnetError(err, 'CHANNEL_RESET'))
    assert.match(err.message, /disk full/)
    await closed
    // writes on the reset socket fail, never silently vanish
    await new Promise<void>((resolve) => {
      server.write('more', (e) => {
        assert.ok(e)
        resolve()
      })
    })
    assert.equal(pair.a.stats().channels + pair.b.stats().channels, 0)

    // destroy() without an error also resets the peer (it cannot tell a clean end from an abort otherwise)
    const accepted2 = waitFor<ChannelSocket>(pair.b, 'channel')
    const c2 = await pair.a.openChannel('y')
    const s2 = await accepted2
    const e2 = new Promise<Error>((resolve) => s2.once('error', resolve))
    c2.destroy()
    assert.ok(isDhtnetError(await e2, 'CHANNEL_RESET'))
  }))

test('mux close(err): every channel emits that error then close; writes afterwards fail', () =>
  withPair({}, async (pair) => {
    acceptAll(pair)
    const remote: ChannelSocket[] = []
    pair.b.on('channel', (c: ChannelSocket) => remote.push(c))
    const chans = await Promise.all([pair.a.openChannel('1'), pair.a.openChannel('2'), pair.a.openChannel('3')])
    const events: string[] = []
    for (const c of chans) {
      c.on('error', (e) => events.push(`error:${(e as { code?: string }).code}`))
      c.on('close', () => events.push('close'))
    }
    const remoteErrors = remote.map((c) => new Promise<Error>((resolve) => c.once('error', resolve)))
    const muxClosed = waitFor<Error>(pair.a, 'close')
    const { DhtnetError } = await import('../src/errors.js')
    pair.a.close(new DhtnetError('SHUTTING_DOWN', 'app is stopping'))
    assert.equal(((await muxClosed) as { code?: string }).code, 'SHUTTING_DOWN')
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(events, ['error:SHUTTING_DOWN', 'close', 'error:SHUTTING_DOWN', 'close', 'error:SHUTTING_DOWN', 'close'])
    // the peer learns from GOAWAY: its channels error with CONNECTION_CLOSED and the reason
    for (const e of await Promise.all(remoteErrors)) {
      assert.ok(isDhtnetError(e, 'CONNECTION_CLOSED'))
      assert.match(e.message, /app is stopping/)
    }
    assert.equal(pair.b.closed, true)
    const writeErr = await new Promise<Error | null | undefined>((resolve) => chans[0].write('x', resolve))
    assert.ok(writeErr)
  }))

test('the transport closing closes the mux: channels error with CONNECTION_CLOSED', () =>
  withPair({}, async (pair) => {
    acceptAll(pair)
    const remote = waitFor<ChannelSocket>(pair.b, 'channel')
    const ch = await pair.a.openChannel('x')
    const remoteErr = new Promise<Error>((resolve) => {
      void remote.then((r) => r.once('error', resolve))
    })
    await remote
    const err = new Promise<Error>((resolve) => ch.once('error', resolve))
    pair.tb.close() // b's transport dies under it (no GOAWAY)
    assert.ok(isDhtnetError(await err, 'CONNECTION_CLOSED'))
    assert.ok(isDhtnetError(await remoteErr, 'CONNECTION_CLOSED'))
    assert.equal(pair.a.closed, true)
  }))

test('write callbacks fire only once the data was handed to the transport', () =>
  withPair({}, async (pair) => {
    acceptAll(pair)
    const ch = await pair.a.openChannel('cb')
    const before = pair.ta.messagesSent
    await new Promise<void>((resolve, reject) => ch.write(Buffer.alloc(200_000, 7), (e) => (e ? reject(e) : resolve())))
    // 200 000 bytes in ≤ 64 KiB frames: 4 DATA frames were sent before the callback ran
    assert.ok(pair.ta.messagesSent - before >= 4)
    assert.equal(ch.bytesWritten, 200_000)
  }))

test('datagram channels: send/receive over the unreliable transport, close reaches the peer', () =>
  withPair({ datagram: {} }, async (pair) => {
    const accepted = waitFor<DatagramChannel>(pair.b, 'datagram-channel')
    const dc = await pair.a.openDatagramChannel('vpn')
    const peer = await accepted
    assert.equal(peer.name, 'vpn')
    assert.deepEqual(
      pair.a.channels().map((c) => c.kind),
      ['datagram'],
    )
    const got: string[] = []
    peer.on('message', (m: Buffer) => got.push(m.toString()))
    const reliableBefore = pair.ta.messagesSent
    for (let i = 0; i < 10; i++) assert.equal(dc.send(Buffer.from(`packet ${i}`)), true)
    await new Promise((r) => setTimeout(r, 10))
    assert.equal(got.length, 10)
    assert.equal(got[3], 'packet 3')
    assert.equal(pair.ta.messagesSent, reliableBefore, 'datagrams do not ride the reliable transport')
    assert.equal(pair.da!.messagesSent, 10)
    // peer → us too
    const back = waitFor<Buffer>(dc, 'message')
    peer.send(Buffer.from('pong'))
    assert.equal((await back).toString(), 'pong')
    assert.throws(
      () => dc.send(Buffer.alloc(dc.maxMessageSize + 1)),
      (e) => isDhtnetError(e, 'MESSAGE_TOO_LARGE'),
    )
    const peerClosed = waitFor(peer, 'close')
    dc.close()
    await peerClosed
    assert.throws(
      () => dc.send(Buffer.from('x')),
      (e) => isDhtnetError(e, 'CHANNEL_CLOSED'),
    )
    assert.equal(pair.a.stats().channels + pair.b.stats().channels, 0)
  }))

test('datagram channels never block: a congested transport drops and counts', () =>
  withPair({ datagram: {}, a: { datagramHighWaterBytes: 64 * 1024 } }, async (pair) => {
    pair.b.on('datagram-channel', () => {})
    const dc = await pair.a.openDatagramChannel('vpn')
    pair.da!.pause() // the link stops moving: bufferedAmount grows
    let sent = 0
    let dropped = 0
    for (let i = 0; i < 200; i++) {
      if (dc.send(Buffer.alloc(1200))) sent++
      else dropped++
    }
    assert.ok(sent > 0 && dropped > 0, `sent ${sent} dropped ${dropped}`)
    assert.equal(dc.drops, dropped)
    assert.ok(pair.da!.bufferedAmount < 64 * 1024 + 1300, 'the transport buffer stays at the high-water mark')
    pair.da!.resume()
  }))

test('datagram channels without a datagram transport ride the reliable one', () =>
  withPair({}, async (pair) => {
    const accepted = waitFor<DatagramChannel>(pair.b, 'datagram-channel')
    const dc = await pair.a.openDatagramChannel('fallback')
    const peer = await accepted
    const got = waitFor<Buffer>(peer, 'message')
    assert.equal(dc.send(Buffer.from('hi')), true)
    assert.equal((await got).toString(), 'hi')
  }))

test('lost datagrams are just lost: unreliable transport dropping every 3rd message', () =>
  withPair({ datagram: { dropEvery: 3 } }, async (pair) => {
    const accepted = waitFor<DatagramChannel>(pair.b, 'datagram-channel')
    const dc = await pair.a.openDatagramChannel('lossy')
    const peer = await accepted
    let n = 0
    peer.on('message', () => n++)
    for (let i = 0; i < 30; i++) dc.send(Buffer.from([i]))
    await new Promise((r) => setTimeout(r, 10))
    assert.equal(n, 20)
    assert.equal(peer.messagesIn, 20)
  }))

test('probe() measures a round trip', () =>
  withPair({}, async ({ a }) => {
    const rtt = await a.probe(1000)
    assert.ok(rtt >= 0 && rtt < 1000)
  }))

test('malformed frames never crash: truncated frames close with PROTOCOL_ERROR, unknown ones are ignored', async () => {
  const handlesBefore = activeTimerHandles()
  // unknown frame type, frames for unknown channels, bad UTF-8 reasons: ignored, the mux keeps working
  await withPair({}, async (pair) => {
    acceptAll(pair)
    const junk = [
      Buffer.from([0x7f, 0, 0, 0, 1, 1, 2, 3]), // unknown type
      Buffer.from([0x04, 0, 0, 0x30, 0x39, 9, 9]), // DATA, unknown channel
      Buffer.from([0x05, 0, 0, 0x30, 0x39, 0, 0, 0, 9]), // WINDOW, unknown channel
      Buffer.from([0x06, 0xff, 0xff, 0xff, 0xff]), // EOF, unknown channel
      Buffer.from([0x07, 0, 0, 0, 8, 0xc3, 0x28]), // RESET, unknown channel, invalid UTF-8
      Buffer.from([0x02, 0, 0, 0, 99, 0, 0, 0, 1]), // ACCEPT nobody asked for
      Buffer.from([0x03, 0, 0, 0, 99]), // DECLINE nobody asked for
      Buffer.from([0x09, 0, 0, 0, 0, 1, 2, 3, 4]), // unsolicited PONG
      Buffer.from([0x0b, 0, 0, 0, 5, 1]), // DGRAM, unknown channel
    ]
    for (const j of junk) pair.ta.inject(j)
    await new Promise((r) => setTimeout(r, 10))
    assert.equal(pair.b.closed, false)
    assert.equal(pair.b.stats().ignoredFrames, junk.length - 1, 'all but the PONG (a late keepalive answer is normal) are counted')
    const ch = await pair.a.openChannel('still works')
    assert.equal(ch.name, 'still works')
  })
  // each of these is fatal for the connection, reported as PROTOCOL_ERROR, never thrown
  const fatal: [string, Buffer][] = [
    ['empty message', Buffer.alloc(0)],
    ['short header', Buffer.from([0x04, 0, 0])],
    ['truncated WINDOW', Buffer.from([0x05, 0, 0, 0, 1, 0])],
    ['truncated OPEN', Buffer.from([0x01, 0, 0, 0, 1, 0])],
    ['OPEN in our id space', Buffer.from([0x01, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0x41])],
    ['OPEN with id 0', Buffer.from([0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x41])],
    ['wrong version HELLO', Buffer.from([0x00, 0, 0, 0, 0, 9, 0])],
  ]
  for (const [what, frame] of fatal) {
    await withPair({}, async (pair) => {
      const closed = waitFor<Error | undefined>(pair.b, 'close')
      pair.ta.inject(frame)
      const err = await closed
      assert.ok(isDhtnetError(err, 'PROTOCOL_ERROR'), `${what}: ${err?.message}`)
    })
  }
  // data beyond the window is a protocol violation too
  await withPair({ b: { channelWindowBytes: 1000 } }, async (pair) => {
    acceptAll(pair)
    const ch = await pair.a.openChannel('w')
    const closed = waitFor<Error>(pair.b, 'close')
    const frame = Buffer.alloc(5 + 2000)
    frame[0] = 0x04
    frame.writeUInt32BE(ch.channelId, 1)
    ch.on('error', () => {})
    pair.ta.inject(frame)
    assert.ok(isDhtnetError(await closed, 'PROTOCOL_ERROR'))
  })
  // random garbage: no crash, whatever it decides
  for (let round = 0; round < 50; round++) {
    await withPair({}, async (pair) => {
      acceptAll(pair)
      for (let i = 0; i < 20; i++) pair.ta.inject(randomBytes(Math.floor(Math.random() * 40)))
      await new Promise((r) => setImmediate(r))
      await new Promise((r) => setImmediate(r))
    })
  }
  assert.ok(activeTimerHandles() <= handlesBefore)
})

test('a multiplexer on an already-closed transport closes itself, without throwing', async () => {
  const [ta, tb] = createMemoryTransportPair()
  ta.close()
  await new Promise((r) => setImmediate(r))
  const mux = new Multiplexer({ reliable: tb, initiator: false })
  const err = await waitFor<Error>(mux, 'close')
  assert.ok(isDhtnetError(err, 'CONNECTION_CLOSED'))
  assert.equal(mux.stats().timers, 0)
})

test('mux close() without an error: channels close quietly (no error event), the peer sees CONNECTION_CLOSED', () =>
  withPair({}, async (pair) => {
    const remote = waitFor<ChannelSocket>(pair.b, 'channel')
    const ch = await pair.a.openChannel('quiet')
    const peerSock = await remote
    let localError: Error | undefined
    ch.on('error', (e) => (localError = e))
    const localClosed = new Promise((r) => ch.once('close', r))
    const peerErr = new Promise<Error>((r) => peerSock.once('error', r))
    const muxClose = waitFor<Error | undefined>(pair.a, 'close')
    pair.a.close()
    assert.equal(await muxClose, undefined)
    await localClosed
    assert.equal(localError, undefined)
    assert.ok(isDhtnetError(await peerErr, 'CONNECTION_CLOSED'))
  }))

test('a channel that finished both ways survives the mux closing, with its unread data', () =>
  withPair({}, async (pair) => {
    const remote = waitFor<ChannelSocket>(pair.b, 'channel')
    const ch = await pair.a.openChannel('done')
    const peerSock = await remote
    peerSock.end('last words')
    ch.end()
    await new Promise((r) => setTimeout(r, 10))
    assert.equal(pair.a.stats().channels, 0, 'forgotten by the mux once both sides ended')
    pair.a.close()
    assert.equal((await readAll(ch)).toString(), 'last words')
  }))

test('the datagram transport closing closes the whole connection', () =>
  withPair({ datagram: {} }, async (pair) => {
    const accepted = waitFor<DatagramChannel>(pair.b, 'datagram-channel')
    const dc = await pair.a.openDatagramChannel('vpn')
    await accepted
    const closed = waitFor<Error | undefined>(dc, 'close')
    pair.db!.close()
    assert.ok(isDhtnetError(await closed, 'CONNECTION_CLOSED'))
    assert.equal(pair.a.closed, true)
  }))

test('a reset that arrives with the ACCEPT still reaches the opener as an error event, not a crash', () =>
  withPair({}, async (pair) => {
    pair.b.on('channel', (c: ChannelSocket) => {
      c.on('error', () => {}) // b's own socket reports the error it was destroyed with
      c.destroy(new Error('refused after accept'))
    })
    const ch = await pair.a.openChannel('short-lived')
    // the listener is attached after the await resumed: the error must not have been emitted before
    const err = await new Promise<Error>((resolve) => ch.once('error', resolve))
    assert.ok(isDhtnetError(err, 'CHANNEL_RESET'))
    assert.match(err.message, /refused after accept/)
  }))
