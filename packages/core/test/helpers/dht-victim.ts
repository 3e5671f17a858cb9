/**
 * The victim of the hardening tests (dht-attacks.test.ts), of scripts/bench/dht-attack.ts and of the "under
 * attack" row of scripts/bench/dht — a child process (started by VictimProcess in dht-victim-process.ts): a DhtNode on
 * 127.0.0.1 with a SecureDht over an RSA-4096 identity, listening at its two connection-request keys
 * (SHA1("peer:" + long id) and SHA1("peer:" + id)) exactly as a ConnectionManager does. Started with
 * `node --import tsx --expose-gc` through child_process.fork; answers IPC requests:
 *   {op: 'stats', gc?} → node and SecureDht stats, RSS, heap and buffers (after a full gc when asked), CPU seconds, event-loop stalls,
 *                    legitimate requests heard at the peer key, the listen socket ids (to give the attacker the worst case)
 *   {op: 'reset'}  → forget the event-loop stall figures
 *   {op: 'put', key, text} → a plain local put (for the legitimate gets)
 * Stops on {op: 'stop'} or when the parent goes away.
 */
import { DhtNode } from '../../src/dht/node.js'
import { SecureDht } from '../../src/dht/secure-dht.js'
import { makeTestIdentity } from '../dht-value-fixtures.js'

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {})
const keyBits = Number(process.env.VICTIM_KEY_BITS ?? 4096)
const identity = makeTestIdentity('victim', keyBits)
const node = new DhtNode({ port: 0, bindIpv4: '127.0.0.1', bindIpv6: false, discovery: false, identityId: identity.id })
await node.start()
const secure = new SecureDht(node, identity)
await secure.start() // our certificate, so that legitimate peers can encrypt to us
let heard = 0
const keys = [SecureDht.peerKey(identity.longId), SecureDht.peerKey(identity.id)]
const listens = keys.map((k) =>
  secure.listen(
    k,
    (values, expired) => {
      if (!expired) heard += values.length
    },
    { filter: (v) => v.userType === 'peer_request' },
  ),
)

// event-loop stalls: a 5 ms timer; any lateness beyond 20 ms is a stall
let lagMax = 0
let lagSum = 0
let last = performance.now()
const lagTimer = setInterval(() => {
  const now = performance.now()
  const late = now - last - 5
  if (late > lagMax) lagMax = late
  if (late > 20) lagSum += late
  last = now
}, 5)

function sids(): number[] {
  // the worst case for the defence: the attacker knows the socket ids (a private field, read for the benchmark only)
  const m = node as unknown as { sockets?: Map<number, unknown>; listenSockets?: Map<number, unknown> }
  return [...(m.listenSockets ?? m.sockets ?? new Map<number, unknown>()).keys()]
}

process.on('message', (m: { op: string; key?: string; text?: string; gc?: boolean }) => {
  if (m.op === 'stats') {
    if (m.gc) gc() // only when asked: a full gc per poll would be most of the victim's CPU
    const mem = process.memoryUsage()
    const cpu = process.cpuUsage()
    process.send!({
      op: 'stats',
      node: node.stats(),
      secure: secure.stats(),
      rssMb: mem.rss / 1048576,
      heapMb: mem.heapUsed / 1048576,
      externalMb: mem.external / 1048576,
      cpuS: (cpu.user + cpu.system) / 1e6,
      lagMaxMs: lagMax,
      lagSumMs: lagSum,
      heard,
      sids: sids(),
    })
  } else if (m.op === 'reset') {
    lagMax = 0
    lagSum = 0
    process.send!({ op: 'reset' })
  } else if (m.op === 'put') {
    void node.put(m.key!, { type: 0, data: Buffer.from(m.text!), userType: 'text/plain' }).then(() => process.send!({ op: 'put' }))
  } else if (m.op === 'stop') {
    stop()
  }
})
process.on('disconnect', stop)

let stopping = false
function stop(): void {
  if (stopping) return
  stopping = true
  clearInterval(lagTimer)
  for (const l of listens) l.cancel()
  secure.close()
  void node.stop().finally(() => process.exit(0))
}

process.send!({ op: 'ready', port: node.port, nodeId: node.nodeId, id: identity.id, longId: identity.longId, peerKeys: keys.map((k) => k.toString('hex')) })
