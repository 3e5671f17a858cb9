/** dvpn's errors are the tools' (cli-kit); dvpn exits 1 on a failure and 2 on a usage error, as dnc. */
import type { ExitCodes } from '@dhtnet/cli-kit'

export { UsageError, RunError, describeError } from '@dhtnet/cli-kit'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
export const DVPN_EXIT_CODES: ExitCodes = { failure: EXIT_FAILURE, usage: EXIT_USAGE }
