/**
 * The lab of the live interop tests with DHTNet's C++ tools (tools/{dnc,dsh,dvpn}/test/interop*.test.ts): two network
 * namespaces joined by a veth (pjnath offers no loopback candidates), the C++ `dhtnode` as the bootstrap in the
 * server's, and two identities from two CAs (the servers run anonymous, as DHTNet's sample configuration). Needs a C++
 * DHTNet build (DHTNET_CPP_BIN, default /work/cpp/install/bin); CI has none, so the tests skip with the reason.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { canUseNetns, type Netns, type NetnsSet } from './netns.js'
import type { Processes } from './processes.js'
import { newCa, writeIdentity, type LabIdentity } from './identities.js'

export const CPP_BIN = process.env.DHTNET_CPP_BIN ?? '/work/cpp/install/bin'

/** Why the lab cannot run here (no C++ `tool` and `dhtnode`, or no namespaces), or undefined when it can. */
export async function cppInteropSkipReason(tool: string): Promise<string | undefined> {
  if (!existsSync(join(CPP_BIN, tool)) || !existsSync(join(CPP_BIN, 'dhtnode'))) {
    return `no C++ DHTNet build at ${CPP_BIN} (set DHTNET_CPP_BIN to a folder with ${tool} and dhtnode)`
  }
  if (!(await canUseNetns())) return 'network namespaces need root and iproute2'
  return undefined
}

export interface CppInteropLab {
  readonly server: Netns
  readonly client: Netns
  /** The C++ dhtnode, host:port, on the server's side of the veth. */
  readonly bootstrap: string
  readonly serverId: LabIdentity
  readonly clientId: LabIdentity
}

/**
 * Makes the lab: namespaces `<tag>s` and `<tag>c` (removed with `namespaces`), identities in `<dir>/ids`, the C++
 * dhtnode started by `procs` (stopped with it) and given a second to come up.
 */
export async function startCppInteropLab(options: {
  tag: string
  dir: string
  procs: Processes
  namespaces: NetnsSet
  caPrefix?: string
  dhtnodeArgs?: readonly string[]
}): Promise<CppInteropLab> {
  const { tag, dir, procs, namespaces } = options
  const caPrefix = options.caPrefix ?? 'interop'
  const server = await namespaces.create(`${tag}s`)
  const client = await namespaces.create(`${tag}c`)
  const bootstrap = `${(await namespaces.link(server, client)).a}:4222`
  const serverId = await writeIdentity(join(dir, 'ids'), 'server', await newCa(`${caPrefix}-server-ca`))
  const clientId = await writeIdentity(join(dir, 'ids'), 'client', await newCa(`${caPrefix}-client-ca`))
  const dht = procs.start('dhtnode (C++)', join(CPP_BIN, 'dhtnode'), ['-p', '4222', '-s', ...(options.dhtnodeArgs ?? [])], { netns: server.name, stdin: 'ignore' })
  await new Promise((r) => setTimeout(r, 1000))
  assert.equal(dht.exitStatus, undefined, 'the C++ dhtnode runs')
  return { server, client, bootstrap, serverId, clientId }
}
