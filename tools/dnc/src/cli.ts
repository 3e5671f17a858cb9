#!/usr/bin/env node
/**
 * dnc command line: commander parses, nothing else happens here. Flags are DHTNet's (tools/dnc/main.cpp) plus
 * --verbose/-q, --timeout, -L and --allow; the shared ones come from @dhtnet/cli-kit. Usage errors exit 2 with a
 * message and a hint, never a stack trace.
 */
import { Command, Option } from 'commander'
import {
  addOptions,
  anonymousOption,
  collectList,
  configureProgramOutput,
  isMainModule,
  networkOptions,
  parseWith,
  pickDefined,
  readCommonArgs,
  runCli,
  runOptions,
  versionOption,
  type CommonArgs,
  type ParseOutcome,
} from '@dhtnet/cli-kit'
import { DNC_EXIT_CODES, EXIT_USAGE } from './errors.js'
import { DNC_VERSION } from './version.js'

export interface ParsedArgs extends CommonArgs {
  /** Positional PEER_ID as typed (may be `dnc/<id>`, as ssh's %h gives it). */
  readonly peer?: string
  readonly extraArgs: string[]
  readonly listen: boolean
  readonly localForward?: string
  readonly port?: string
  readonly ip?: string
  readonly allow: string[]
}

export type { ParseOutcome }

const EXAMPLES = `
Examples:
  dnc -l -d /etc/dhtnet/dnc.yaml          run the server (prints its id)
  dnc 2f4975e7b11a0908bd400b27130fe9a496d0f415          stdin/stdout to port 22 of that device
  dnc -i 127.0.0.1 -P 80 <peer-id>         to port 80 on the peer's loopback
  dnc -L 8080 -P 80 <peer-id>              local port 8080 forwarded to the peer's port 80 (like ssh -L)
  ssh -o ProxyCommand='dnc %h' user@dnc/<peer-id>

stdout carries only the remote bytes; every message goes to stderr.
Without -d, dnc reads ~/.dnc/config.yml, else /etc/dhtnet/dnc.yaml, when one exists.
Without -c/-p, dnc uses ~/.dhtnet/id/device.{crt,pem} ($DHTNET_HOME), creating it on first use.
Exit codes: 0 done, 1 failure (unreachable, refused, ...), 2 usage error.`

export function buildProgram(): Command {
  const program = new Command('dnc')
  program
    .usage('[options] [PEER_ID]')
    .description('Distributed netcat: stdin/stdout to a TCP port on a device known only by its public key.')
    .argument('[peer_id]', 'the device to reach: 40-hex id or 64-hex long id (dnc/<id> accepted, as ssh %h gives it)')
    .helpOption('-h, --help', 'print this help and exit')
    .addOption(versionOption())
    .option('-l, --listen', 'server mode: accept channels and connect them to local TCP services', false)
    .option('-P, --port <port>', 'remote TCP port the server should connect to (default 22)')
    .option('-i, --ip <address>', 'remote host the server should connect to: IPv4, IPv6 or name (default 127.0.0.1)')
    .option('-L, --local-forward <[bind:]port>', 'listen on a local TCP port and carry each connection to the service (like ssh -L)')
  addOptions(program, networkOptions())
  program
    .addOption(anonymousOption())
    .addOption(new Option('--allow <[host:]port>', 'server: authorize a service (repeatable; host defaults to 127.0.0.1)').argParser(collectList).default([]))
  addOptions(program, runOptions())
  program.addHelpText('after', EXAMPLES).allowExcessArguments(true)
  return configureProgramOutput(program, 'dnc')
}

/** Parses argv (without node and script). Never throws: usage problems become an exit outcome. */
export function parseArgs(argv: string[]): ParseOutcome<ParsedArgs> {
  return parseWith(buildProgram(), argv, EXIT_USAGE, (program) => {
    const o = program.opts<Record<string, unknown>>()
    const str = (k: string): string | undefined => (typeof o[k] === 'string' ? o[k] : undefined)
    const [peer, ...extraArgs] = program.args
    return {
      ...readCommonArgs(program),
      ...pickDefined('peer', peer),
      extraArgs,
      listen: o.listen === true,
      ...pickDefined('localForward', str('localForward')),
      ...pickDefined('port', str('port')),
      ...pickDefined('ip', str('ip')),
      allow: (o.allow as string[] | undefined) ?? [],
    }
  })
}

// run only as the program, not when imported by tests
if (isMainModule(import.meta.url)) {
  void runCli<ParsedArgs>({
    tool: 'dnc',
    version: DNC_VERSION,
    exitCodes: DNC_EXIT_CODES,
    parse: parseArgs,
    main: async (args) => (await import('./main.js')).main(args),
  })
}
