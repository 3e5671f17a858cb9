#!/usr/bin/env node
/**
 * dsh command line: `dsh [options] PEER_ID [--] [COMMAND [ARGS...]]`. Options may come before or after the peer id
 * (GNU style, as DHTNet's dsh); the first word after the peer id starts the command, whose words are never read as
 * dsh options. Flags are DHTNet's (-s -b -t -u -w -r -c -p -d -a -l -h -v) plus -e, -T, --raw, --timeout,
 * --verbose, -q. `-t` is DHTNet's TURN host when a host name follows it; alone, doubled (`-tt`) or right before
 * the peer id it is ssh's "force a pty". Usage errors exit 255 (as ssh: 0..254 belong to the remote program).
 */
import { Command, Option } from 'commander'
import {
  isMainModule,
  networkOptions,
  parseWith,
  pickDefined,
  readCommonArgs,
  runCli,
  runOptions,
  versionOption,
  addOptions,
  anonymousOption,
  configureProgramOutput,
  type CommonArgs,
  type ParseOutcome,
} from '@dhtnet/cli-kit'
import { DSH_EXIT_CODES, EXIT_DSH_FAILURE } from './errors.js'
import type { PtyMode } from './options.js'
import { DSH_VERSION } from './version.js'

export interface ParsedArgs extends CommonArgs {
  readonly peer?: string
  /** Words after the peer id: the command and its arguments. */
  readonly command: string[]
  readonly listen: boolean
  readonly binary?: string
  readonly env: string[]
  readonly pty: PtyMode
  readonly raw: boolean
}

const EXAMPLES = `
Examples:
  dsh -l                                   serve (prints the id); runs the login shell for trusted peers
  dsh 2f4975e7b11a0908bd400b27130fe9a496d0f415      an interactive shell on that device
  dsh <peer-id> -- uname -a                one command; its exit status is dsh's
  tar c dir | dsh <peer-id> -- tar x       pipes: stdin, stdout and stderr apart, byte-exact
  dsh -s sh --raw <peer-id>                DHTNet's raw protocol (a C++ dsh -l server)

Without -d, dsh reads ~/.dsh/config.yml, else /etc/dhtnet/dsh.yaml, when one exists.
Without -c/-p, dsh uses ~/.dhtnet/id/device.{crt,pem} ($DHTNET_HOME), creating it on first use.
Exit status: the remote program's (128+N when a signal killed it); 255 when dsh failed (connection, refusal, usage).`

/** Options that take a value (the pre-scan must skip their values). */
const VALUE_SHORT = new Set(['b', 'u', 'w', 'r', 'c', 'p', 'd', 's', 'e'])
const VALUE_LONG = new Set([
  '--bootstrap',
  '--turn_host',
  '--turn_user',
  '--turn_pass',
  '--turn_realm',
  '--turn_transport',
  '--certificate',
  '--privateKey',
  '--configuration',
  '--binary',
  '--env',
  '--timeout',
  '--bind',
])

function looksLikePeer(word: string | undefined): boolean {
  return word !== undefined && /^(?:[^/]*\/)?(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$/.test(word)
}

/**
 * Splits argv into dsh's words and the command (everything from the second positional word on, or after `--` once
 * the peer id was seen), and rewrites ssh's `-t`/`-tt` into `--tty`.
 */
export function splitArgv(argv: readonly string[]): { dsh: string[]; command: string[] } {
  const dsh: string[] = []
  let positionals = 0
  for (let i = 0; i < argv.length; i++) {
    const w = argv[i]!
    if (w === '--') {
      if (positionals >= 1) return { dsh, command: argv.slice(i + 1) }
      // `--` before the peer id: the next word is the peer id, the rest the command
      const rest = argv.slice(i + 1)
      if (rest.length > 0) dsh.push('--', rest[0]!)
      return { dsh, command: rest.slice(1) }
    }
    if (w.startsWith('--')) {
      dsh.push(w)
      if (VALUE_LONG.has(w) && i + 1 < argv.length) dsh.push(argv[++i]!)
      continue
    }
    if (w.startsWith('-') && w.length > 1) {
      if (w === '-t' || w === '-tt') {
        const next = argv[i + 1]
        if (w === '-t' && next !== undefined && !next.startsWith('-') && !looksLikePeer(next)) {
          dsh.push('--turn_host', next) // DHTNet's -t HOST
          i++
        } else dsh.push('--tty')
        continue
      }
      dsh.push(w)
      // -bHOST carries its value; -b HOST takes the next word (the last letter of a cluster decides)
      const letters = w.slice(1)
      for (let k = 0; k < letters.length; k++) {
        if (VALUE_SHORT.has(letters[k]!) || letters[k] === 't') {
          if (k === letters.length - 1 && i + 1 < argv.length) dsh.push(argv[++i]!)
          break
        }
      }
      continue
    }
    positionals++
    if (positionals >= 2) return { dsh, command: argv.slice(i) }
    dsh.push(w)
  }
  return { dsh, command: [] }
}

export function buildProgram(): Command {
  const program = new Command('dsh')
  program
    .usage('[options] [PEER_ID] [--] [COMMAND [ARGS...]]')
    .description('Distributed shell: a shell (or one command) on a device known only by its public key, like ssh.')
    .argument('[peer_id]', 'the device: 40-hex id or 64-hex long id (dsh/<id> accepted)')
    .helpOption('-h, --help', 'print this help and exit')
    .addOption(versionOption())
    .option('-l, --listen', 'server mode: run authorized programs for trusted peers', false)
    .option('-s, --binary <program>', "the program to run (default: the server's first authorized one, its login shell); a command's words become its arguments")
    .addOption(
      new Option('-e, --env <KEY=VALUE>', 'set a variable in the remote environment (repeatable; the server passes on the names its accept_env lists)')
        .argParser((v: string, prev: string[]) => [...prev, v])
        .default([]),
    )
    .option('-T, --no-tty', 'no pty: pipes for stdin, stdout and stderr (the default when stdin is not a terminal)')
    .addOption(new Option('--tty', 'force a pty (also -t alone, -tt, or -t right before the peer id, as ssh)').hideHelp())
    .option('--raw', "DHTNet's raw protocol: the channel is named after the program; bytes only (no pty, arguments, stderr or exit status)", false)
  addOptions(program, networkOptions())
  program.addOption(anonymousOption('server: accept devices whose certificate comes from any CA (warned about at start)'))
  addOptions(program, runOptions())
  program.addHelpText('after', EXAMPLES)
  return configureProgramOutput(program, 'dsh')
}

/** Parses argv (without node and script). Never throws: usage problems become an exit outcome. */
export function parseArgs(argv: string[]): ParseOutcome<ParsedArgs> {
  const { dsh, command } = splitArgv(argv)
  return parseWith(buildProgram(), dsh, EXIT_DSH_FAILURE, (program) => {
    const o = program.opts<Record<string, unknown>>()
    const [peer, ...extra] = program.args
    const ttySource = program.getOptionValueSource('tty')
    const pty: PtyMode = o.tty === false ? 'never' : ttySource === 'cli' && o.tty === true ? 'force' : 'auto'
    return {
      ...readCommonArgs(program),
      ...pickDefined('peer', peer),
      command: [...extra, ...command],
      listen: o.listen === true,
      ...pickDefined('binary', typeof o.binary === 'string' ? o.binary : undefined),
      env: (o.env as string[] | undefined) ?? [],
      pty,
      raw: o.raw === true,
    }
  })
}

if (isMainModule(import.meta.url)) {
  void runCli<ParsedArgs>({
    tool: 'dsh',
    version: DSH_VERSION,
    exitCodes: DSH_EXIT_CODES,
    parse: parseArgs,
    main: async (args) => (await import('./main.js')).main(args),
  })
}
