/**
 * What the miniupnpd lab tests share (natlab-upnp, natlab-ice-tcp-upnp, natlab-upnp-tcp): the lab with coturn on two
 * public addresses, a CA for the devices, and every process tracked so that `close()` stops whatever a failed case
 * left running. `symEimCase` builds one case — router A symmetric with miniupnpd, router B port-restricted (eim) —
 * runs the test's body in it, then stops the case's processes (by pid, newest first) and removes its namespaces.
 */
import { generateIdentity } from '../../../src/identity/generate.js'
import { chainToPem, privateKeyToPem } from '../../../src/identity/pem.js'
import type { Identity } from '../../../src/identity/types.js'
import { type CaseNet, NatLab } from './topology.js'
import { type LabProcess, tempDir } from './procs.js'
import { makeUpnpRouter, startCoturnTwoIps, startMiniupnpd } from './upnp.js'

export interface IdentityFiles {
  key: string
  cert: string
  id: string
}

export interface UpnpCase {
  readonly net: CaseNet
  /** router A's miniupnpd (running until the case ends) */
  readonly miniupnpd: LabProcess
  /** Track a process of this case: stopped when the case ends. */
  readonly start: (p: LabProcess) => LabProcess
}

export class UpnpLab {
  private readonly live = new Set<LabProcess>()

  private constructor(
    readonly lab: NatLab,
    readonly dir: ReturnType<typeof tempDir>,
    private readonly coturn: LabProcess,
    private readonly ca: Identity,
  ) {}

  static async start(caName: string): Promise<UpnpLab> {
    const dir = tempDir()
    const lab = NatLab.create()
    try {
      const coturn = await startCoturnTwoIps(lab.pub, dir.path)
      const ca = await generateIdentity({ name: caName, keySize: 2048 })
      return new UpnpLab(lab, dir, coturn, ca)
    } catch (err) {
      lab.destroy()
      dir.remove()
      throw err
    }
  }

  /** A device identity of the lab's CA, written as key and chain files. */
  async identityFiles(name: string): Promise<IdentityFiles> {
    const identity = await generateIdentity({ name, issuer: this.ca, keySize: 2048 })
    return {
      key: this.dir.write(`${name}.pem`, privateKeyToPem(identity.privateKey), 0o600),
      cert: this.dir.write(`${name}.crt`, chainToPem(identity.chain)),
      id: identity.id,
    }
  }

  /** Run `body` in a new sym (+ miniupnpd) ↔ eim case; its processes are stopped and the case removed after. */
  async symEimCase<T>(body: (c: UpnpCase) => Promise<T>): Promise<T> {
    const net = this.lab.addCase('sym', 'eim')
    const procs: LabProcess[] = []
    const start = (p: LabProcess): LabProcess => {
      this.live.add(p)
      procs.push(p)
      return p
    }
    try {
      makeUpnpRouter(net.routerA, 'sym')
      const miniupnpd = start(await startMiniupnpd(net.routerA, this.dir))
      return await body({ net, miniupnpd, start })
    } finally {
      for (const p of procs.reverse()) {
        await p.stop()
        this.live.delete(p)
      }
      this.lab.removeCase(net)
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.coturn.stop(), ...[...this.live].map((p) => p.stop())])
    this.lab.destroy()
    this.dir.remove()
  }
}

/** The end of miniupnpd's log, without its per-rule table dumps. */
export function miniupnpdTail(miniupnpd: LabProcess, lines = 15): string {
  return miniupnpd.output
    .filter((l) => !l.includes('table_cb'))
    .slice(-lines)
    .join('\n')
}
