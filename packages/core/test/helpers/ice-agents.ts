/** Two ICE-TCP agents wired to their own listeners on loopback (the layer below TLS), for agent tests. */
import { randomBytes } from 'node:crypto'
import { IceTcpAgent, DEFAULT_AGENT_LIMITS, DEFAULT_AGENT_TIMEOUTS, type AgentTimeouts } from '../../src/transport/ice-tcp/agent.js'
import { PassiveListener } from '../../src/transport/ice-tcp/listener.js'
import { localCandidates, type IceDescription } from '../../src/transport/ice-tcp/candidates.js'
import type { IceRole } from '../../src/transport/ice-tcp/check-messages.js'
import type { Logger } from '../../src/util/log.js'

export interface AgentSide {
  agent: IceTcpAgent
  listener: PassiveListener
  description: IceDescription
  close(): Promise<void>
}

export const testLogger: Logger = process.env.DHTNET_TEST_LOG ? (level, msg) => process.stderr.write(`[${level}] ${msg}\n`) : () => {}

export async function agentSide(
  role: IceRole,
  opts: { ufrag?: string; pwd?: string; software?: Uint8Array; timeouts?: Partial<AgentTimeouts>; tieBreaker?: bigint } = {},
): Promise<AgentSide> {
  const listener = await PassiveListener.open({ bindAddress: '127.0.0.1', logger: testLogger })
  const ufrag = opts.ufrag ?? randomBytes(4).toString('hex')
  const pwd = opts.pwd ?? randomBytes(12).toString('hex')
  const hosts = [{ family: 4 as const, address: '127.0.0.1', interface: 'lo' }]
  const candidates = localCandidates({ hosts: [{ address: '127.0.0.1', passivePort: listener.portFor(4)! }] })
  const agent = new IceTcpAgent({
    role,
    ufrag,
    pwd,
    candidates,
    hosts,
    includeLoopback: true,
    software: opts.software,
    tieBreaker: opts.tieBreaker,
    timeouts: { ...DEFAULT_AGENT_TIMEOUTS, ...opts.timeouts },
    limits: DEFAULT_AGENT_LIMITS,
    logger: testLogger,
  })
  listener.register(ufrag, (s, r, d) => agent.acceptInbound(s, r, d))
  return {
    agent,
    listener,
    description: { ufrag, pwd, candidates },
    async close() {
      agent.close('test over')
      await listener.close()
    },
  }
}
