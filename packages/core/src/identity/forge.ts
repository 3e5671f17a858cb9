import { createRequire } from 'node:module'
import type forgeModule from 'node-forge'

// node-forge costs ~50 ms to load, and only certificate creation and CSR parsing need it: every tool start-up
// (which only loads identities) would pay for it. Load it on first use instead.
const require = createRequire(import.meta.url)
let loaded: typeof forgeModule | undefined

export function forge(): typeof forgeModule {
  loaded ??= require('node-forge') as typeof forgeModule
  return loaded
}
