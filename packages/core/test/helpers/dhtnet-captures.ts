/** Loads the C++ DHTNet capture fixtures (test/fixtures/dhtnet-captures/, copied from /work/shared/dhtnet-captures). */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const DIR = fileURLToPath(new URL('../fixtures/dhtnet-captures/', import.meta.url))

export const SCENARIOS = ['dnc', 'dsh', 'dvpn'] as const
export type Scenario = (typeof SCENARIOS)[number]

export interface CapturedAttr {
  type: string
  name: string
  len: number
  hex: string
}

export interface CapturedFrame {
  t: number
  dir: '>' | '<'
  sender: 'client' | 'server'
  length_prefix: number
  kind: string
  hex: string
  stun?: { type: string; tid: string; length: number; attrs: CapturedAttr[] }
}

export interface CapturedPeer {
  ufrag: string
  pwd: string
  cands: string[]
  controlling: boolean
}

export interface CapturedConnection {
  index: number
  initiator: string
  responder: string
  active_side: 'client' | 'server'
  passive_side: 'client' | 'server'
  frames: CapturedFrame[]
}

export interface CapturedIceTcp {
  peers: { client: CapturedPeer; server: CapturedPeer }
  connections: CapturedConnection[]
}

export function loadIceTcp(scenario: Scenario): CapturedIceTcp {
  return JSON.parse(readFileSync(`${DIR}${scenario}/ice-tcp.json`, 'utf8')) as CapturedIceTcp
}

/** The ice_msg texts of the DHT request (client) and answer (server), verbatim. */
export function loadIceMessages(): Record<`${Scenario}-${'request' | 'answer'}`, { isAnswer: boolean; ice_msg: string }> {
  return JSON.parse(readFileSync(`${DIR}ice-msgs.json`, 'utf8')) as ReturnType<typeof loadIceMessages>
}

export function identityPem(name: 'client-id' | 'server-id' | 'client-ca' | 'server-ca'): { key: string; chain: string } {
  return { key: readFileSync(`${DIR}identities/${name}.pem`, 'utf8'), chain: readFileSync(`${DIR}identities/${name}.crt`, 'utf8') }
}

/** Every STUN frame of a scenario with the connection it belongs to. */
export function stunFrames(scenario: Scenario): Array<{ connection: CapturedConnection; frame: CapturedFrame }> {
  const cap = loadIceTcp(scenario)
  const out: Array<{ connection: CapturedConnection; frame: CapturedFrame }> = []
  for (const connection of cap.connections) for (const frame of connection.frames) if (frame.kind === 'STUN') out.push({ connection, frame })
  return out
}
