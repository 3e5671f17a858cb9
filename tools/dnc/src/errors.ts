/** dnc's errors are the tools' (cli-kit); dnc exits 1 on a failure and 2 on a usage error. */
import type { ExitCodes } from '@dhtnet/cli-kit'

export { UsageError, RunError, describeError } from '@dhtnet/cli-kit'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
export const DNC_EXIT_CODES: ExitCodes = { failure: EXIT_FAILURE, usage: EXIT_USAGE }
