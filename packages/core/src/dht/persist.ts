/**
 * The node's persisted state: its id and the nodes it knew, so a restart keeps its identity in the network and
 * rejoins with one round trip. JSON, written atomically (temporary file + rename, mode 0600).
 */
import { readFile, writeFile, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { DhtnetError } from '../errors.js'
import { makeDirectory } from '../identity/files.js'

export interface PersistedNode {
  id: string
  host: string
  port: number
}

export interface PersistedState {
  version: 1
  nodeId: string
  savedAt: number
  nodes: PersistedNode[]
}

export async function loadState(path: string): Promise<PersistedState | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new DhtnetError('PERSIST_READ', `cannot read the DHT state file ${path}: ${(err as Error).message}`, {
      cause: err,
      hint: 'check the file permissions, or remove the file to start afresh',
    })
  }
  try {
    const o = JSON.parse(text) as Partial<PersistedState>
    if (o.version !== 1 || typeof o.nodeId !== 'string' || !/^[0-9a-f]{40}$/.test(o.nodeId) || !Array.isArray(o.nodes)) {
      throw new Error('unexpected layout')
    }
    // whatever the file holds: each entry is checked
    const nodes = (o.nodes as Array<Partial<PersistedNode> | null>)
      .filter(
        (n): n is PersistedNode =>
          typeof n === 'object' &&
          n !== null &&
          typeof n.id === 'string' &&
          /^[0-9a-f]{40}$/.test(n.id) &&
          typeof n.host === 'string' &&
          typeof n.port === 'number' &&
          Number.isInteger(n.port) &&
          n.port > 0 &&
          n.port < 65536,
      )
      .slice(0, 1024)
    return { version: 1, nodeId: o.nodeId, savedAt: Number(o.savedAt) || 0, nodes }
  } catch {
    // a corrupt cache is not fatal: the node starts with a fresh id and no known nodes
    return undefined
  }
}

export async function saveState(path: string, state: PersistedState): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`
  try {
    await makeDirectory(dirname(path), 0o700) // the cache folder (e.g. ~/.cache/dhtnet): ours only
    await writeFile(tmp, JSON.stringify(state), { mode: 0o600 })
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw new DhtnetError('PERSIST_WRITE', `cannot write the DHT state file ${path}: ${(err as Error).message}`, {
      cause: err,
      hint: 'check that the directory exists and is writable',
    })
  }
}
