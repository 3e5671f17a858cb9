#!/usr/bin/env node
/**
 * dvpn command line: commander parses, nothing else happens here. Flags are DHTNet's (tools/dvpn/main.cpp: -h -v -l
 * -a -b -t -u -w -r -p -c -C -d) plus --full-tunnel, --mtu, --tun and the shared --verbose/-q, --timeout, --no-upnp,
 * --bind. Usage errors exit 2 with a message and a hint, never a stack trace.
 */
import { Command, Option } from 'commander'
import {
  addOptions,
  anonymousOption,
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
import { DVPN_EXIT_CODES, EXIT_USAGE } from './errors.js'
import { DVPN_VERSION } from './version.js'

export interface ParsedArgs extends CommonArgs {
  readonly peer?: string
  readonly extraArgs: string[]
  readonly listen: boolean
  readonly vpnConfiguration?: string
  readonly fullTunnel: boolean
  readonly mtu?: string
  readonly tun?: string
}

export type { ParseOutcome }

const EXAMPLES = `
Examples:
  dvpn -l                                  serve a VPN (prints its id, its networks and the addresses it gives)
  dvpn -l -d /etc/dhtnet/dvpn.yaml -C /etc/dhtnet/vpn.yaml   with DHTNet's configuration files
  dvpn 2f4975e7b11a0908bd400b27130fe9a496d0f415     join it: the VPN's networks go through the tunnel
  dvpn --full-tunnel <peer-id>             everything goes through the tunnel (the server needs masquerade: true)

Needs CAP_NET_ADMIN (root) on both sides: dvpn creates a TUN interface and sets its addresses and routes, and
removes everything it added when it exits (SIGINT/SIGTERM included).
Without -d, dvpn reads ~/.dvpn/config.yml, else /etc/dhtnet/dvpn.yaml, when one exists.
Exit codes: 0 stopped, 1 failure (unreachable, refused, ...), 2 usage error.`

export function buildProgram(): Command {
  const program = new Command('dvpn')
  program
    .usage('[options] [PEER_ID]')
    .description("Distributed VPN: a virtual network over TUN, joined with nothing but the server's public key.")
    .argument('[peer_id]', 'the VPN server to join: 40-hex id or 64-hex long id')
    .helpOption('-h, --help', 'print this help and exit')
    .addOption(versionOption())
    .option('-l, --listen', 'server mode: serve the VPN', false)
  addOptions(program, networkOptions())
  program
    .addOption(new Option('-C, --vpn_configuration <file>', "VPN configuration (DHTNet's: script_path, ip_address, ip_peer_address, ip_address_ipv6, ip_peer_address_ipv6)"))
    .addOption(anonymousOption('server: accept devices whose certificate comes from any CA'))
    .addOption(new Option('--full-tunnel', 'client: send everything through the VPN, not only its networks').default(false))
    .addOption(new Option('--mtu <bytes>', 'MTU of the TUN interface (default: what the path carries in one datagram)'))
    .addOption(new Option('--tun <name>', 'name of the TUN interface (a %d is replaced by a free number; default dvpn%d)'))
  addOptions(program, runOptions())
  program.addHelpText('after', EXAMPLES).allowExcessArguments(true)
  return configureProgramOutput(program, 'dvpn')
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
      ...pickDefined('vpnConfiguration', str('vpn_configuration')),
      fullTunnel: o.fullTunnel === true,
      ...pickDefined('mtu', str('mtu')),
      ...pickDefined('tun', str('tun')),
    }
  })
}

if (isMainModule(import.meta.url)) {
  void runCli<ParsedArgs>({
    tool: 'dvpn',
    version: DVPN_VERSION,
    exitCodes: DVPN_EXIT_CODES,
    parse: parseArgs,
    main: async (args) => (await import('./main.js')).main(args),
  })
}
