/**
 * The flooder of the "under attack" row of scripts/bench/dht: a separate process on 127.0.0.2 that sends, at the
 * recommended per-IP request rate (the default per-IP rate limit, 1,024 requests/s), put requests alternating
 * between 4 junk-signed values (an acceptable RSA-4096 owner key, random signatures: each costs a verification if
 * let through) and 1 junk "encrypted" value of 512 bytes at the victim's connection-request key (an RSA-4096
 * private-key operation if let through). Paced on time in 10 ms slices. Stops after `durationMs` or on SIGTERM;
 * prints one JSON line with what it sent.
 *
 *   node --import tsx scripts/bench/dht-flood.ts <port> <peer-key-hex> <rate/s> <durationMs>
 */
import { Attacker, junkEncryptedValue, junkSignedValue, ordinaryKey } from '../../packages/core/test/helpers/dht-attack.js'
import { randomHash } from '../../packages/core/src/dht/infohash.js'

const [port, peerKeyHex, rateArg, durationArg] = process.argv.slice(2)
const rate = Number(rateArg ?? 1024)
const durationMs = Number(durationArg ?? 10_000)
const peerKey = Buffer.from(peerKeyHex!, 'hex')
const attacker = await Attacker.open({ targetPort: Number(port), address: '127.0.0.2' })
await attacker.getToken()
const owner = ordinaryKey(4096)
let id = BigInt(Date.now()) * 1000n
let sent = 0,
  values = 0,
  bytes = 0
let stop = false as boolean // set by SIGTERM
process.on('SIGTERM', () => {
  stop = true
})
process.stdout.write('ready\n')
const t0 = performance.now()
while (!stop && performance.now() - t0 < durationMs) {
  const due = Math.floor(((performance.now() - t0) / 1000) * rate)
  const sends: Promise<void>[] = []
  while (sent < due) {
    const msg =
      sent % 2 === 0
        ? attacker.putMessage(
            randomHash(),
            Array.from({ length: 4 }, () => junkSignedValue(id++, owner, 512)),
          )
        : attacker.putMessage(peerKey, [junkEncryptedValue(id++, 512)])
    values += sent % 2 === 0 ? 4 : 1
    bytes += msg.length
    sends.push(attacker.raw(msg))
    sent++
  }
  await Promise.all(sends)
  await new Promise((r) => setTimeout(r, 10))
}
const elapsed = (performance.now() - t0) / 1000
process.stdout.write(JSON.stringify({ requests: sent, values, bytes, seconds: Number(elapsed.toFixed(2)), requestsPerSecond: Math.round(sent / elapsed) }) + '\n')
await attacker.close()
process.exit(0)
