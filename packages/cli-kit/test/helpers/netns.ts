/**
 * Network namespaces made by a test: unique short names per run, loopback up, optionally linked by a veth pair.
 * Addresses live only inside these namespaces; `remove()` deletes them (call it from `after`).
 */
import { run } from './processes.js'

let counter = 0

export interface Netns {
  readonly name: string
  /** Address of this namespace on the link (when linked). */
  address?: string
}

/** True when this process may create network namespaces (root with iproute2). */
export async function canUseNetns(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false
  const name = uniqueName('chk')
  const r = await run('ip', ['netns', 'add', name], { allowFailure: true, timeoutMs: 5000 }).catch(() => ({ code: 1 }))
  if (r.code !== 0) return false
  await run('ip', ['netns', 'del', name], { allowFailure: true })
  return true
}

function uniqueName(tag: string): string {
  return `dnc${tag}${process.pid % 100000}${counter++}`
}

export class NetnsSet {
  private readonly made: string[] = []

  /** A new namespace with only `lo`, up. */
  async create(tag: string): Promise<Netns> {
    const name = uniqueName(tag)
    await run('ip', ['netns', 'add', name])
    this.made.push(name)
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
    return { name }
  }

  /**
   * Links two namespaces with a veth pair, addresses 10.250.<n>.1/24 (a) and .2 (b), inside the namespaces only.
   * Sets `address` of each (the last link's) and returns both.
   */
  async link(a: Netns, b: Netns): Promise<{ a: string; b: string }> {
    const id = `${process.pid % 100000}${counter++}`
    const va = `vd${id}a`.slice(0, 15)
    const vb = `vd${id}b`.slice(0, 15)
    const subnet = `10.250.${(process.pid + counter) % 250}`
    await run('ip', ['link', 'add', va, 'netns', a.name, 'type', 'veth', 'peer', 'name', vb, 'netns', b.name])
    a.address = `${subnet}.1`
    b.address = `${subnet}.2`
    await run('ip', ['-n', a.name, 'addr', 'add', `${a.address}/24`, 'dev', va])
    await run('ip', ['-n', b.name, 'addr', 'add', `${b.address}/24`, 'dev', vb])
    await run('ip', ['-n', a.name, 'link', 'set', va, 'up'])
    await run('ip', ['-n', b.name, 'link', 'set', vb, 'up'])
    return { a: a.address, b: b.address }
  }

  /** Default route of a namespace through a gateway on one of its links. */
  async defaultRoute(ns: Netns, via: string): Promise<void> {
    await run('ip', ['-n', ns.name, 'route', 'add', 'default', 'via', via])
  }

  /** Deletes every namespace this set made (their veth ends go with them). */
  async remove(): Promise<void> {
    for (const name of this.made.splice(0)) {
      await run('ip', ['netns', 'del', name], { allowFailure: true })
    }
  }
}
