export { defaultDhtnetDir, expandHome, dhtnetLayout } from './paths.js'
export { ensureIdentity } from './ensure-identity.js'
export type { EnsureIdentityOptions, EnsuredIdentity } from './ensure-identity.js'
