/** dsh's exit codes, as ssh's: the remote program's status, or 255 when dsh itself failed (connection, refusal, usage). */
import type { ExitCodes } from '@dhtnet/cli-kit'

export const EXIT_DSH_FAILURE = 255
export const DSH_EXIT_CODES: ExitCodes = { failure: EXIT_DSH_FAILURE, usage: EXIT_DSH_FAILURE }
