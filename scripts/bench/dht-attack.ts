/**
 * The attacks of issue 12 (items 1, 2, 3 and the storage eviction of 10), each bounded, against a real victim
 * process (packages/core/test/helpers/dht-victim.ts: DhtNode + SecureDht with an RSA-4096 identity listening at its
 * connection-request keys) from an attacker socket on 127.0.0.2, with a legitimate prober on 127.0.0.3 pinging the
 * victim every 20 ms throughout. Reports, per attack: the victim's CPU seconds, its longest event-loop stall, the
 * prober's worst ping round trip and lost pings, the victim's counters and its memory after a full gc.
 *
 *   node --import tsx scripts/bench/dht-attack.ts        (loopback only; ~1 minute; ends with one JSON line)
 */
import { randomBytes } from 'node:crypto'
import { Attacker, hugeExponentKey, junkEncryptedValue, junkSignedValue } from '../../packages/core/test/helpers/dht-attack.js'
import { Victim, Prober, type VictimStats } from '../../packages/core/test/helpers/dht-victim-process.js'
import { randomHash } from '../../packages/core/src/dht/infohash.js'
import { Storage } from '../../packages/core/src/dht/storage.js'
import { packValue } from '../../packages/core/src/dht/value.js'

const log = (m: string) => process.stderr.write(`[bench dht-attack] ${m}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface AttackRow {
  attack: string
  sent: string
  cpuS: number
  lagMaxMs: number
  pingMaxMs: number
  pingLost: number
  rssAfterMb: number
  counters: string
}

async function attackPhase(victim: Victim, prober: Prober, name: string, sent: string, run: () => Promise<void>, counters: (s: VictimStats) => string): Promise<AttackRow> {
  await victim.request({ op: 'reset' })
  const s0 = await victim.stats()
  prober.start()
  const t0 = performance.now()
  await run()
  // let the victim finish what it queued (bounded)
  for (let i = 0; i < 600; i++) {
    const a = await victim.stats()
    await sleep(100)
    const b = await victim.stats()
    if (b.cpuS - a.cpuS < 0.02 && !b.secure.decryptQueue) break
  }
  const ping = await prober.stop()
  const s1 = await victim.stats()
  const mem = await victim.stats(true)
  const row: AttackRow = {
    attack: name,
    sent,
    cpuS: s1.cpuS - s0.cpuS,
    lagMaxMs: s1.lagMaxMs,
    pingMaxMs: ping.max,
    pingLost: ping.lost,
    rssAfterMb: mem.rssMb,
    counters: counters(s1),
  }
  log(
    `${name}: ${((performance.now() - t0) / 1000).toFixed(1)} s, victim CPU ${row.cpuS.toFixed(2)} s, longest stall ${row.lagMaxMs.toFixed(0)} ms, ` +
      `ping max ${ping.max.toFixed(1)} ms (${ping.lost} lost of ${ping.n + ping.lost}), RSS ${mem.rssMb.toFixed(0)} MB, heap ${mem.heapMb.toFixed(0)} MB; ${row.counters}`,
  )
  return row
}

/** Microbenchmark of a put at the full storage quota (every put evicts): µs per put, with `n` values stored. */
export function evictionCost(n: number): { perPutUs: number; stored: number } {
  const size = packValue({ id: 1n, type: 0, data: Buffer.alloc(100) }).length
  const st = new Storage({ maxTotalBytes: n * size, maxBytesPerIp: n * size, maxValuesPerKey: 1 << 20, maxKeys: 1 << 22 })
  const now = Date.now()
  let id = 1n
  for (let i = 0; i < n; i++) st.store(randomHash(), { id: id++, type: 0, data: randomBytes(100) }, now - n + i, now, `10.0.${i % 64}.1`)
  const puts = 2000
  const t0 = performance.now()
  for (let i = 0; i < puts; i++) st.store(randomHash(), { id: id++, type: 0, data: randomBytes(100) }, now, now, '10.9.9.9')
  return { perPutUs: ((performance.now() - t0) * 1000) / puts, stored: st.valueCount }
}

async function main(): Promise<void> {
  const victim = await Victim.start()
  log(`victim on 127.0.0.1:${victim.port}, id ${victim.id}`)
  const attacker = await Attacker.open({ targetPort: victim.port, readCount: async () => (await victim.stats()).node.datagramsIn! })
  const prober = await Prober.open(victim.port)
  const rows: AttackRow[] = []
  try {
    await attacker.getToken()
    let id = 1n

    // 1. costly signatures: 6 datagrams of 50 junk-signed values, owner keys with a 3071-bit public exponent
    rows.push(
      await attackPhase(
        victim,
        prober,
        'costly signatures',
        '6 puts × 50 values (huge e)',
        async () => {
          const msgs = Array.from({ length: 6 }, () =>
            attacker.putMessage(
              randomHash(),
              Array.from({ length: 50 }, () => junkSignedValue(id++, hugeExponentKey())),
            ),
          )
          log(`  put datagrams of ${msgs.map((m) => (m.length / 1024).toFixed(0)).join(', ')} KB`)
          await attacker.send(msgs, { batch: 1, slack: 0 })
        },
        (s) => `rejected keys ${s.node.rejectedKeys ?? '-'}, verify drops ${s.node.verifyDrops ?? '-'}, values ${s.node.values}`,
      ),
    )

    // 2. decryption flood: 4 datagrams of 100 junk 512-byte cyphers at the victim's connection-request key
    rows.push(
      await attackPhase(
        victim,
        prober,
        'decryption flood',
        '4 puts × 100 junk cyphers',
        async () => {
          const msgs = Array.from({ length: 4 }, () =>
            attacker.putMessage(
              victim.peerKeys[0]!,
              Array.from({ length: 100 }, () => junkEncryptedValue(id++, 512)),
            ),
          )
          await attacker.send(msgs, { batch: 1, slack: 0 })
        },
        (s) => `undecryptable ${s.secure.droppedUndecryptable}, dropped decryptions ${s.secure.droppedDecryptions ?? '-'}`,
      ),
    )

    // 3. spoofed listen pushes: 1,400 values of 60 KB pushed to the victim's listen socket ids (given to the attacker)
    const sids = (await victim.stats()).sids
    log(`  listen socket ids: ${sids.join(', ')}; the victim's own request tids seen by the attacker: ${attacker.seenTids.slice(0, 4).join(', ')}`)
    rows.push(
      await attackPhase(
        victim,
        prober,
        'spoofed listen pushes',
        '1,400 × 60 KB values',
        async () => {
          function* pushes() {
            for (let i = 0; i < 1400; i++) yield* attacker.pushMessages(sids[i % sids.length]!, [junkEncryptedValue(id++, 60_000)])
          }
          await attacker.send(pushes(), { batch: 48, slack: 96 })
        },
        (s) =>
          `ignored pushes ${s.node.ignoredPushes ?? '-'}, rate-limited ${s.node.rateLimitedDrops}, undecryptable ${s.secure.droppedUndecryptable}, dropped decryptions ${s.secure.droppedDecryptions ?? '-'}`,
      ),
    )
  } finally {
    prober.close()
    await attacker.close()
    await victim.stop()
  }

  // 10. eviction at the full quota
  const ev = evictionCost(Number(process.env.EVICT_VALUES ?? 100_000))
  log(`eviction: ${ev.perPutUs.toFixed(1)} µs per put at the full quota with ${ev.stored} values stored`)

  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-')
  console.log('\nattack                  sent                          victim CPU s  longest stall ms  ping max ms  pings lost  RSS after MB  counters')
  for (const r of rows) {
    console.log(
      `${r.attack.padEnd(23)} ${r.sent.padEnd(29)} ${f(r.cpuS, 2).padStart(12)}  ${f(r.lagMaxMs).padStart(16)}  ${f(r.pingMaxMs, 1).padStart(11)}  ${String(r.pingLost).padStart(10)}  ${f(r.rssAfterMb).padStart(12)}  ${r.counters}`,
    )
  }
  console.log(`storage put at the full quota: ${f(ev.perPutUs, 1)} µs per put with ${ev.stored} values stored`)
  const json: Record<string, unknown> = { bench: 'dht-attack' }
  for (const r of rows) {
    const k = r.attack.replace(/ /g, '_')
    json[`${k}_victim_cpu_s`] = Number(r.cpuS.toFixed(2))
    json[`${k}_stall_ms`] = Math.round(r.lagMaxMs)
    json[`${k}_ping_max_ms`] = Number(r.pingMaxMs.toFixed(1))
    json[`${k}_pings_lost`] = r.pingLost
    json[`${k}_rss_after_MB`] = Math.round(r.rssAfterMb)
  }
  json.evict_put_us = Number(ev.perPutUs.toFixed(1))
  json.evict_values = ev.stored
  console.log(JSON.stringify(json))
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(`[bench dht-attack] failed: ${(err as Error).stack ?? err}`)
      process.exit(1)
    },
  )
}
