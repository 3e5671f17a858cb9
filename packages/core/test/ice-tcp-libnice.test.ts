import { test } from 'node:test'
import assert from 'node:assert/strict'
import { agentSide } from './helpers/ice-agents.js'
import { LibnicePeer, libniceMissing } from './helpers/libnice.js'
import { formatCandidate, parseIceMessage } from '../src/transport/ice-tcp/candidates.js'
import { FrameDecoder, encodeFrame } from '../src/transport/ice-tcp/framing.js'
import type { NominatedPath } from '../src/transport/ice-tcp/agent.js'

const skip = libniceMissing()

/** Read one RFC 4571 frame from the nominated connection (its remaining bytes first). */
function readFrame(path: NominatedPath, decoder: FrameDecoder): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const f = decoder.next()
      if (f) {
        path.socket.off('data', onData)
        path.socket.pause()
        resolve(Buffer.from(f))
        return true
      }
      return false
    }
    const onData = (d: Buffer) => {
      decoder.push(d)
      check()
    }
    if (check()) return
    path.socket.on('data', onData)
    path.socket.once('error', reject)
    path.socket.resume()
  })
}

for (const ourRole of ['controlling', 'controlled'] as const) {
  test(
    `libnice interop: our agent ${ourRole}, libnice ${ourRole === 'controlling' ? 'controlled' : 'controlling'}; both select the same TCP connection; framed messages both ways`,
    { skip, timeout: 60_000 },
    async () => {
      const nice = new LibnicePeer(ourRole === 'controlling' ? 'controlled' : 'controlling')
      const ours = await agentSide(ourRole)
      try {
        const local = (await nice.next('local')).local as { ufrag: string; pwd: string; candidates: string[] }
        const text = [local.ufrag, local.pwd, ...local.candidates.map((l) => l.replace(/^a=candidate:/, ''))].join('\n') + '\n'
        const theirs = parseIceMessage(text)
        assert.ok(
          theirs.candidates.some((c) => c.tcpType === 'passive'),
          text,
        )
        nice.send({ ufrag: ours.description.ufrag, pwd: ours.description.pwd, candidates: ours.description.candidates.map(formatCandidate) })
        const path = await ours.agent.start(theirs)
        await nice.state('ready')
        const selected = (await nice.next('selected')).selected as { local: string; remote: string }
        // the same TCP connection on both sides: libnice names its passive port or ours
        const niceLocal = selected.local.split(' ')
        const niceRemote = selected.remote.split(' ')
        if (path.direction === 'outbound') {
          assert.equal(niceLocal[1], 'passive', JSON.stringify(selected))
          assert.equal(niceLocal[0], `127.0.0.1:${path.remotePort}`)
        } else {
          assert.equal(niceRemote[1], 'passive', JSON.stringify(selected))
          assert.equal(niceRemote[0], `127.0.0.1:${path.localPort}`)
        }
        // bytes over the pair, one framed message each way (libnice is not reliable here: one frame per send)
        const decoder = new FrameDecoder()
        decoder.push(path.remaining)
        nice.send({ send: 'hello from libnice' })
        // libnice may still send STUN (its keepalives/checks) on the pair: skip those frames
        let frame: Buffer
        do frame = await readFrame(path, decoder)
        while (frame[0]! < 4)
        assert.equal(frame.toString(), 'hello from libnice')
        path.socket.write(encodeFrame(Buffer.from('hello from dhtnet-ts')))
        assert.equal((await nice.next('received')).received, 'hello from dhtnet-ts')
        path.socket.destroy()
      } finally {
        nice.send({ quit: true })
        await nice.stop()
        await ours.close()
      }
    },
  )
}
