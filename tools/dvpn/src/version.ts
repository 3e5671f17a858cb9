import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
/** The package version (tools/dvpn/package.json). */
export const DVPN_VERSION: string = (require('../package.json') as { version: string }).version
