export { PUBLIC_BOOTSTRAP_NODES, startToolRuntime, loadToolIdentity, defaultCacheDir, turnIceServer } from './start.js'
export type { ToolRuntime, ToolRuntimeOptions, TurnServerOptions, LoadedToolIdentity } from './start.js'
