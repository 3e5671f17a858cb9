import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
/** The package version (tools/dsh/package.json). */
export const DSH_VERSION: string = (require('../package.json') as { version: string }).version
