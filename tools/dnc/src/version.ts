import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
/** The package version (tools/dnc/package.json). */
export const DNC_VERSION: string = (require('../package.json') as { version: string }).version
