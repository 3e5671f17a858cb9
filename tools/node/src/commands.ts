/**
 * The interactive commands (dhtnode-like): g, p, pp, s, e, l, cl, ll, lr, st, b, h, q. Each command prints its
 * outcome; a failing command prints an error and the prompt stays.
 */
import { DhtnetError, DhtNode, SecureDht, formatValue, type DhtValue, type ListenHandle } from '@dhtnet/core'

export interface CommandContext {
  node: DhtNode
  secure?: SecureDht
  print: (line: string) => void
  listens: Map<number, { key: string; handle: ListenHandle }>
  nextListenToken: number
}

export const HELP = `Commands:
  g <key>                 get the values at <key>
  p <key> <text>          put a text value at <key>
  pp <key> <text>         put a text value at <key>, permanently (re-announced)
  s <key> <text>          put a signed text value (needs an identity)
  e <key> <id> <text>     put a text value encrypted to the peer <id> (40- or 64-hex; needs an identity)
  l <key>                 listen to <key>; updates are printed as they come
  cl [token]              cancel one listen, or all of them
  ll                      node information and routing table summary
  lr                      full routing tables
  st                      statistics
  b <host[:port]>         ping a node (and use it as a bootstrap)
  h                       this help
  q                       quit
<key> is 40 hex characters or any text, which is hashed (SHA-1) as OpenDHT does.`

/** 40-hex key as is, any other text hashed. */
export function keyFromText(text: string): { key: Buffer; shown: string } {
  if (/^[0-9a-fA-F]{40}$/.test(text)) return { key: Buffer.from(text, 'hex'), shown: text.toLowerCase() }
  const key = DhtNode.infoHash(text)
  return { key, shown: `h(${text}) = ${key.toString('hex')}` }
}

function ms(start: number): string {
  return `${(performance.now() - start).toFixed(1)} ms`
}

function textValue(text: string): { type: number; data: Buffer; userType: string } {
  return { type: 0, data: Buffer.from(text, 'utf8'), userType: 'text/plain' }
}

function needIdentity(ctx: CommandContext): SecureDht {
  if (!ctx.secure) {
    throw new DhtnetError('NO_IDENTITY', 'an identity is required for this command', { hint: 'restart with -i DIR or --generate-identity' })
  }
  return ctx.secure
}

function usage(text: string): never {
  throw new DhtnetError('USAGE', `usage: ${text}`)
}

/** Run one command line. Resolves false when the user asked to quit. */
export async function runCommand(ctx: CommandContext, line: string): Promise<boolean> {
  const trimmed = line.trim()
  if (!trimmed) return true
  const [op, ...args] = trimmed.split(/\s+/)
  const restAfter = (n: number) =>
    trimmed
      .split(/\s+/)
      .slice(n + 1)
      .join(' ')
  const { node, print } = ctx
  switch (op) {
    case 'q':
    case 'x':
    case 'quit':
    case 'exit':
      return false
    case 'h':
    case 'help':
      print(HELP)
      return true
    case 'g': {
      if (!args[0]) usage('g <key>')
      const { key, shown } = keyFromText(args[0])
      print(`Using ${shown}`)
      const start = performance.now()
      const values: DhtValue[] = ctx.secure ? await ctx.secure.get(key) : await node.get(key)
      for (const v of values) print(`\t${formatValue(v)}`)
      print(`Get: found ${values.length} value(s), took ${ms(start)}`)
      return true
    }
    case 'p':
    case 'pp': {
      if (!args[0] || args.length < 2) usage(`${op} <key> <text>`)
      const { key, shown } = keyFromText(args[0])
      print(`Using ${shown}`)
      const start = performance.now()
      const value = textValue(restAfter(1))
      const ok = ctx.secure ? await ctx.secure.put(key, value, { permanent: op === 'pp' }) : await node.put(key, value, { permanent: op === 'pp' })
      print(`Put: ${ok ? 'success' : 'failure'}, took ${ms(start)}`)
      return true
    }
    case 's': {
      if (!args[0] || args.length < 2) usage('s <key> <text>')
      const secure = needIdentity(ctx)
      const { key, shown } = keyFromText(args[0])
      print(`Using ${shown}`)
      const start = performance.now()
      const r = await secure.putSigned(key, textValue(restAfter(1)))
      print(`Put signed: ${r.ok ? 'success' : 'failure'}, took ${ms(start)}. Value ID: ${r.value.id.toString(16)}`)
      return true
    }
    case 'e': {
      if (!args[0] || !args[1] || args.length < 3) usage('e <key> <peer id> <text>')
      const secure = needIdentity(ctx)
      const { key, shown } = keyFromText(args[0])
      print(`Using ${shown}`)
      const start = performance.now()
      const r = await secure.putEncrypted(key, args[1], textValue(restAfter(2)))
      print(`Put encrypted: ${r.ok ? 'success' : 'failure'}, took ${ms(start)}. Value ID: ${r.value.id.toString(16)}`)
      return true
    }
    case 'l': {
      if (!args[0]) usage('l <key>')
      const { key, shown } = keyFromText(args[0])
      print(`Using ${shown}`)
      const token = ctx.nextListenToken++
      const cb = (values: DhtValue[], expired: boolean) => {
        print(`Listen ${token}: ${values.length} value(s)${expired ? ' expired' : ''}`)
        for (const v of values) print(`\t${formatValue(v)}`)
      }
      const handle = ctx.secure ? ctx.secure.listen(key, cb) : node.listen(key, cb)
      ctx.listens.set(token, { key: key.toString('hex'), handle })
      print(`Listening, token: ${token}`)
      return true
    }
    case 'cl': {
      if (args[0] !== undefined) {
        const token = Number(args[0])
        const l = ctx.listens.get(token)
        if (!l) throw new DhtnetError('USAGE', `no listen with token ${args[0]} (active: ${[...ctx.listens.keys()].join(', ') || 'none'})`)
        l.handle.cancel()
        ctx.listens.delete(token)
        print(`Cancelled listen ${token}`)
      } else {
        for (const l of ctx.listens.values()) l.handle.cancel()
        print(`Cancelled ${ctx.listens.size} listen(s)`)
        ctx.listens.clear()
      }
      return true
    }
    case 'll': {
      printNodeInfo(ctx)
      const st = node.stats()
      print(`IPv4: ${st.nodes4} nodes (${st.good4} good) in ${st.buckets.length} buckets [${st.buckets.join(' ')}]`)
      print(`IPv6: ${st.nodes6} nodes (${st.good6} good) in ${st.buckets6.length} buckets [${st.buckets6.join(' ')}]`)
      print(`Storage: ${st.values} values at ${st.keys} keys, ${Math.round(st.storedBytes / 1024)} KB; ${st.searches} searches, ${st.listens} listens`)
      return true
    }
    case 'lr': {
      for (const t of node.routingTable()) {
        print(`IPv${t.family} routing table:`)
        for (const b of t.buckets) {
          print(`  bucket /${b.depth} ${b.prefix.slice(0, Math.max(1, Math.ceil(b.depth / 4)))}: ${b.nodes.length} node(s)`)
          for (const n of b.nodes) print(`    ${n.id} ${t.family === 6 ? `[${n.host}]` : n.host}:${n.port}${n.good ? '' : ' (dubious)'}`)
        }
      }
      return true
    }
    case 'st': {
      const st = node.stats()
      for (const [k, v] of Object.entries(st)) print(`  ${k}: ${Array.isArray(v) ? `[${v.join(' ')}]` : v}`)
      if (ctx.secure) for (const [k, v] of Object.entries(ctx.secure.stats())) print(`  secure.${k}: ${v}`)
      return true
    }
    case 'b': {
      if (!args[0]) usage('b <host[:port]>')
      const r = await node.ping(args[0])
      print(`Ping ${args[0]}: node ${r.id}, ${r.rttMs.toFixed(1)} ms`)
      await node.bootstrap(args[0])
      return true
    }
    default:
      print(`Unknown command: ${op} (type 'h' for the list of commands)`)
      return true
  }
}

export function printNodeInfo(ctx: CommandContext): void {
  const { node } = ctx
  ctx.print(`DHT node ${node.nodeId} running on port ${node.port}${node.port6 && node.port6 !== node.port ? `, IPv6 port ${node.port6}` : ''}`)
  if (ctx.secure) ctx.print(`Public key ID ${ctx.secure.identity.id} (long id ${ctx.secure.identity.longId})`)
}
