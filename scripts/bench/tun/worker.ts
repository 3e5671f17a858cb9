// The Node side of the TUN benchmark (run by bench.ts inside its namespace): the same work as tun-baseline.c, through
// @dhtnet/tun. Prints {"ready":true} once the devices exist, waits for a line on stdin, runs, prints one JSON line.
//   worker.ts forward <count> <size> <window> <batch>   UDP 10.1.0.2 → 10.2.0.2 written into tbA, read from tbB
//   worker.ts echo <seconds>                            answers ICMP echo requests read from tbC (for ping -f) until a
//                                                       second line on stdin (or <seconds>)
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { openTun } from '../../../packages/tun/src/index.js'
import { echoReply, udpPacket } from '../../../packages/tun/test/helpers/ip.js'

const [mode, ...rest] = process.argv.slice(2)
const args = rest.map(Number)
const lines = createInterface({ input: process.stdin })
const go = async (): Promise<void> => {
  process.stdout.write('{"ready":true}\n')
  await once(lines, 'line')
}

async function forward(count: number, size: number, window: number, batch: number): Promise<void> {
  const a = openTun({ name: 'tbA' })
  const b = openTun({ name: 'tbB', batchSize: batch })
  await go()
  const chunk: Buffer[] = new Array<Buffer>(64).fill(udpPacket('10.1.0.2', '10.2.0.2', 12345, 12346, size))
  let sent = 0
  let got = 0
  let lost = 0
  let lastProgress = performance.now()
  const refill = (): void => {
    while (sent < count && sent - got - lost < window) {
      const n = Math.min(chunk.length, window - (sent - got - lost), count - sent)
      const written = a.writeMany(n === chunk.length ? chunk : chunk.slice(0, n))
      sent += written
      if (written < n) break
    }
  }
  const start = performance.now()
  await new Promise<void>((resolve) => {
    // packets the kernel dropped on the way: no progress for 1 s, given up on (the C baseline does the same)
    const stall = setInterval(() => {
      if (performance.now() - lastProgress > 1000) {
        lost += sent - got - lost
        lastProgress = performance.now()
        if (got + lost >= count) finish()
        else refill()
      }
    }, 200)
    const finish = (): void => {
      clearInterval(stall)
      b.removeAllListeners('packets')
      resolve()
    }
    b.on('packets', (packets) => {
      got += packets.length
      lastProgress = performance.now()
      if (got + lost >= count) finish()
      else refill()
    })
    refill()
  })
  const seconds = (performance.now() - start) / 1000
  const sa = a.stats
  const sb = b.stats
  process.stdout.write(
    JSON.stringify({
      pps: Math.round(got / seconds),
      seconds: Number(seconds.toFixed(3)),
      received: got,
      lost,
      writeDrops: sa.drops,
      avgBatch: Number((sb.packetsIn / Math.max(1, sb.readBatches)).toFixed(1)),
    }) + '\n',
  )
  a.close()
  b.close()
}

async function echo(seconds: number): Promise<void> {
  const c = openTun({ name: 'tbC' })
  await go()
  let replies = 0
  c.on('packets', (packets) => {
    const out: Buffer[] = []
    for (const p of packets) {
      if (p.length >= 28 && p[0]! >> 4 === 4 && p[9] === 1 && p[(p[0]! & 15) * 4] === 8) out.push(echoReply(p))
    }
    if (out.length > 0) replies += c.writeMany(out)
  })
  // until bench.ts says stop (a line on stdin), at most `seconds`
  const timer = setTimeout(() => lines.emit('line', 'stop'), seconds * 1000)
  await once(lines, 'line')
  clearTimeout(timer)
  process.stdout.write(JSON.stringify({ replies, readBatches: c.stats.readBatches, packetsIn: c.stats.packetsIn }) + '\n')
  c.close()
}

if (mode === 'forward') await forward(args[0]!, args[1]!, args[2]!, args[3]!)
else if (mode === 'echo') await echo(args[0]!)
else throw new Error('usage: worker.ts forward <count> <size> <window> <batch> | echo <seconds>')
lines.close()
