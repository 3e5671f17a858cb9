import { homedir } from 'node:os'
import { join, resolve } from 'node:path'

/** `~` or `~/x` → the home folder (of `home`, default the user's). Other paths are returned unchanged. */
export function expandHome(path: string, home: string = homedir()): string {
  if (path === '~') return home
  if (path.startsWith('~/')) return join(home, path.slice(2))
  return path
}

/** Where DHTNet keeps its files: $DHTNET_HOME when set, else ~/.dhtnet. Always absolute. */
export function defaultDhtnetDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.DHTNET_HOME?.trim()
  return resolve(fromEnv ? expandHome(fromEnv) : join(homedir(), '.dhtnet'))
}

/** Layout of a DHTNet folder: `ca/ca.{pem,crt}` (the CA) and `id/device.{pem,crt}` (this device, signed by the CA). */
export function dhtnetLayout(dir: string): { caDir: string; caName: string; idDir: string; deviceName: string } {
  return { caDir: join(dir, 'ca'), caName: 'ca', idDir: join(dir, 'id'), deviceName: 'device' }
}
