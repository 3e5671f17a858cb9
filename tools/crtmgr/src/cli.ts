#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Command, CommanderError, Option } from 'commander'
import type { RsaKeySize } from '@dhtnet/core'
import { interactive } from './interactive.js'
import { generate, printIdentifier, setup, sign, type CommonOptions } from './modes.js'
import { processIo, reportError, TOOL, UsageError, type Io } from './output.js'

export const VERSION = '1.0'

interface ParsedOptions {
  output?: string
  certificate?: string
  privatekey?: string
  privateKey?: string
  name?: string
  identifier?: boolean
  setup?: boolean
  interactive?: boolean
  generate?: boolean
  sign?: string
  keySize: string
  force?: boolean
}

function program(io: Io): Command {
  return new Command(TOOL)
    .description('Create and inspect DHTNet identities: RSA keys and X.509 certificates compatible with DHTNet and OpenDHT.')
    .option('-o, --output <dir>', 'folder where the new files are written')
    .option('-c, --certificate <file>', 'certificate (.crt): input of -a, or the CA that signs with -o/--generate/--sign/-s')
    .option('-p, --privatekey <file>', 'private key (.pem) of that certificate')
    .addOption(new Option('--privateKey <file>', 'same as --privatekey').hideHelp())
    .option('-n, --name <name>', 'base name of the files: NAME.pem and NAME.crt (default: ca, or certificate when signed by a CA)')
    .option('-a, --identifier', 'print the public key id (40 hex) and long id (64 hex) of -c')
    .option('-s, --setup', 'make a CA (DIR/CA/ca-server) and a server identity signed by it (DIR/id/id-server)')
    .option('-i, --interactive', 'guided set-up of a server or client identity, dnc config and ssh entry')
    .option('--generate', 'generate a new CA, or a device identity when -c/-p name a CA (the default with -o)')
    .option('--sign <file>', 'sign the key in FILE (PEM certificate request, public or private key) with the CA of -c/-p; writes DIR/NAME.crt')
    .addOption(new Option('--key-size <bits>', 'RSA key size').choices(['2048', '3072', '4096']).default('4096'))
    .option('--force', 'replace existing files')
    .version(`${TOOL} v${VERSION}`, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'show this help')
    .addHelpText(
      'after',
      `
Examples:
  ${TOOL} -s -o ./dhtnet        CA + server identity in ./dhtnet/CA and ./dhtnet/id
  ${TOOL} -o ./ca               a new CA: ./ca/ca.pem and ./ca/ca.crt
  ${TOOL} -o ./me -n laptop -c ./ca/ca.crt -p ./ca/ca.pem
        a device identity signed by that CA: ./me/laptop.{pem,crt}
  ${TOOL} --sign req.csr -o ./out -c ./ca/ca.crt -p ./ca/ca.pem
        a certificate for the key of a request: ./out/req.crt
  ${TOOL} -a -c ./me/laptop.crt print its ids (share the 40-hex id)
  ${TOOL} -i                    guided set-up for dnc`,
    )
    .configureOutput({
      writeOut: (s) => io.out(s),
      writeErr: (s) => io.err(s),
      outputError: () => {}, // reported by reportError, in the tool's format
    })
    .exitOverride()
}

/** Runs the tool; returns the exit code (0 ok, 1 error, 2 usage). */
export async function main(argv: string[], io: Io = processIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const cmd = program(io)
  try {
    cmd.parse(argv, { from: 'user' })
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return 0 // --help, --version
      return reportError(new UsageError(err.message.replace(/^error: /, '')), io)
    }
    return reportError(err, io)
  }
  try {
    await run(cmd.opts<ParsedOptions>(), io, env)
    return 0
  } catch (err) {
    return reportError(err, io)
  }
}

async function run(o: ParsedOptions, io: Io, env: NodeJS.ProcessEnv): Promise<void> {
  if (o.privatekey && o.privateKey && o.privatekey !== o.privateKey) throw new UsageError('--privatekey and --privateKey name different files')
  const common: CommonOptions = {
    ...(o.output !== undefined ? { output: nonEmpty(o.output, '-o/--output') } : {}),
    ...(o.certificate !== undefined ? { certificate: nonEmpty(o.certificate, '-c/--certificate') } : {}),
    ...((o.privatekey ?? o.privateKey) !== undefined ? { privatekey: nonEmpty((o.privatekey ?? o.privateKey)!, '-p/--privatekey') } : {}),
    ...(o.name !== undefined ? { name: checkName(o.name) } : {}),
    keySize: Number(o.keySize) as RsaKeySize,
    force: o.force === true,
  }

  // DHTNet's precedence: identifier > interactive > setup > generate (help and version were handled by the parser)
  if (o.identifier) {
    if (!common.certificate) {
      throw new UsageError('-a needs the certificate to identify', 'give it with -c FILE.crt (and -p FILE.pem to check the key matches)')
    }
    return printIdentifier(io, common.certificate, common.privatekey)
  }
  if (o.interactive) return interactive(io, { keySize: common.keySize, force: common.force, env })

  const signing = common.certificate !== undefined || common.privatekey !== undefined
  if (signing && !(common.certificate && common.privatekey)) {
    throw new UsageError('signing with a CA needs both its certificate and its private key', 'give -c CA.crt and -p CA.pem')
  }
  const exclusive = [o.setup && '-s', o.sign !== undefined && '--sign', o.generate && '--generate'].filter(Boolean)
  if (exclusive.length > 1) throw new UsageError(`${exclusive.join(' and ')} cannot be used together`)
  if (!common.output) {
    throw new UsageError('the path to save the generated certificate is not provided', 'specify the folder with the -o option (e.g. -o ./dhtnet)')
  }
  const withOutput = { ...common, output: common.output }
  if (o.setup) {
    await setup(io, withOutput)
    return
  }
  if (o.sign !== undefined) {
    if (!withOutput.certificate || !withOutput.privatekey) throw new UsageError('--sign needs the signing CA', 'give -c CA.crt and -p CA.pem')
    return sign(io, nonEmpty(o.sign, '--sign'), { ...withOutput, certificate: withOutput.certificate, privatekey: withOutput.privatekey })
  }
  return generate(io, withOutput)
}

function nonEmpty(value: string, flag: string): string {
  if (value.trim() === '') throw new UsageError(`${flag} needs a non-empty value`)
  return value
}

function checkName(name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new UsageError(`-n/--name "${name}" is not a file base name`, 'give a plain name such as -n laptop (it makes laptop.pem and laptop.crt)')
  }
  return name
}

function isEntryPoint(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (err: unknown) => {
      process.exitCode = reportError(err, processIo)
    },
  )
}
