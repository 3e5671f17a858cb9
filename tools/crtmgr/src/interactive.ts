import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { DhtnetError, expandHome, loadIdentity, makeDirectory, writeFileAtomic, type Identity, type RsaKeySize } from '@dhtnet/core'
import { exists, generateWithProgress, loadCa, save } from './identities.js'
import { setup } from './modes.js'
import type { Io } from './output.js'
import { Prompter } from './prompt.js'
import { addDncSshEntry } from './ssh-config.js'
import { clientConfigYaml, serverConfigYaml } from './yaml-config.js'

export interface InteractiveOptions {
  readonly keySize: RsaKeySize
  readonly force: boolean
  readonly env: NodeJS.ProcessEnv
}

/** DHTNet's guided set-up (dhtnet-crtmgr -i): a server or a client identity, a dnc YAML config, an ssh entry. */
export async function interactive(io: Io, options: InteractiveOptions): Promise<void> {
  if (!process.stdin.isTTY) {
    throw new DhtnetError('NOT_A_TTY', '--interactive needs a terminal, but stdin is not a TTY', {
      hint: 'in scripts use: dhtnet-crtmgr -s -o DIR (server) or dhtnet-crtmgr --generate -o DIR -c CA.crt -p CA.pem (client)',
    })
  }
  const prompt = new Prompter(process.stdin, process.stdout)
  try {
    const role = await prompt.choose(
      'Generate identity for server or client? [(C)lient/(s)erver] (default: client): ',
      { c: 'client', client: 'client', s: 'server', server: 'server' },
      'client',
    )
    if (role === 'server') await server(io, prompt, options)
    else await client(io, prompt, options)
  } finally {
    prompt.close()
  }
}

function home(env: NodeJS.ProcessEnv): string | undefined {
  return env.HOME || undefined
}

async function askFolder(prompt: Prompter, fallback: string, env: NodeJS.ProcessEnv): Promise<string> {
  const answer = await prompt.ask(`Enter the path to save identities and config [${fallback}]: `)
  const folder = resolve(expandHome(answer || fallback, home(env) ?? homedir()))
  try {
    await makeDirectory(folder)
  } catch (cause) {
    throw new DhtnetError('WRITE_FAILED', `unable to create folder ${folder}: ${(cause as Error).message}`, { cause, hint: 'choose a folder you can write to' })
  }
  return folder
}

/** Keeps an existing identity unless the user (or --force) says to replace it. */
async function keepExisting(prompt: Prompter, io: Io, dir: string, name: string, force: boolean): Promise<Identity | undefined> {
  const keyPath = join(dir, `${name}.pem`)
  const certPath = join(dir, `${name}.crt`)
  if (force || !((await exists(keyPath)) || (await exists(certPath)))) return undefined
  const replace = await prompt.yesNo(`An identity already exists in ${join(dir, name)}.{pem,crt}. Replace it (the old key is lost)? [y/N] (default: no): `, false)
  if (replace) return undefined
  const identity = await loadIdentity({ key: keyPath, certificate: certPath })
  io.out(`Keeping existing identity in ${dir}: ${name} ${identity.id}\n`)
  return identity
}

async function writeConfig(prompt: Prompter, io: Io, file: string, content: string, force: boolean): Promise<void> {
  if (!force && (await exists(file))) {
    const overwrite = await prompt.yesNo(`Configuration file already exists in ${file}. Overwrite it? [y/N] (default: no): `, false)
    if (!overwrite) {
      io.out(`Configuration file ${file} left untouched\n`)
      return
    }
  }
  try {
    await writeFileAtomic(file, content, { mode: 0o644, overwrite: true })
  } catch (cause) {
    throw new DhtnetError('WRITE_FAILED', `unable to create configuration file ${file}`, { cause, hint: 'check that the folder is writable' })
  }
  io.out(`Configuration file created in ${file}\n`)
}

async function server(io: Io, prompt: Prompter, options: InteractiveOptions): Promise<void> {
  const folder = await askFolder(prompt, '/etc/dhtnet', options.env)
  const certPath = join(folder, 'id', 'id-server.crt')
  const keyPath = join(folder, 'id', 'id-server.pem')
  await writeConfig(prompt, io, join(folder, 'dnc.yaml'), serverConfigYaml({ certificate: certPath, privateKey: keyPath }), options.force)

  const existingCa = await keepExisting(prompt, io, join(folder, 'CA'), 'ca-server', options.force)
  let device: Identity
  if (existingCa) {
    const existingId = await keepExisting(prompt, io, join(folder, 'id'), 'id-server', options.force)
    device = existingId ?? (await newDevice(io, folder, existingCa, options))
  } else {
    const idFiles = join(folder, 'id', 'id-server')
    if (!options.force && ((await exists(`${idFiles}.pem`)) || (await exists(`${idFiles}.crt`)))) {
      const replace = await prompt.yesNo(`A new CA needs a new server identity, but ${idFiles}.{pem,crt} exists. Replace it (the old key is lost)? [y/N] (default: no): `, false)
      if (!replace) {
        throw new DhtnetError('FILE_EXISTS', `${idFiles}.pem exists; nothing was generated`, { hint: 'move the old identity away, or run again with --force' })
      }
    }
    ;({ device } = await setup(io, { output: folder, keySize: options.keySize, force: true }))
  }
  io.out(`Server id: ${device.id}\nServer long id: ${device.longId}\n`)
  io.out(`Clients sign their identity with ${join(folder, 'CA', 'ca-server.crt')} and connect with: dnc ${device.id}\n`)
}

async function newDevice(io: Io, folder: string, ca: Identity, options: InteractiveOptions): Promise<Identity> {
  const dir = join(folder, 'id')
  const device = await generateWithProgress(io, { name: 'id-server', keySize: options.keySize, issuer: ca })
  const paths = await save(device, dir, 'id-server', true)
  io.out(`Generated certificate in ${dir}: id-server ${device.id}\n  certificate: ${paths.certPath}\n`)
  return device
}

async function client(io: Io, prompt: Prompter, options: InteractiveOptions): Promise<void> {
  const useServerCa = await prompt.yesNo('Sign client certificate using server CA? [Y/n] (default: yes): ', true)
  const h = home(options.env)
  let ca: Identity | undefined
  if (useServerCa) {
    const answer = await prompt.ask('Folder of the server set-up holding CA/ca-server.{pem,crt} [/etc/dhtnet]: ')
    const serverCa = join(resolve(expandHome(answer || '/etc/dhtnet', h ?? homedir())), 'CA')
    try {
      ca = await loadCa(join(serverCa, 'ca-server.crt'), join(serverCa, 'ca-server.pem'))
    } catch (cause) {
      throw new DhtnetError('SERVER_CA_MISSING', `unable to load the server CA from ${serverCa}: ${(cause as Error).message}`, {
        cause,
        hint: 'generate the server CA first (dhtnet-crtmgr -i, answer "server"; or dhtnet-crtmgr -s -o DIR), or answer "n" to make a CA of your own',
      })
    }
  }
  const folder = await askFolder(prompt, h ? join(h, '.dnc') : '/tmp/.dnc', options.env)
  if (!ca) {
    ca = await keepExisting(prompt, io, folder, 'ca', options.force)
    if (!ca) {
      ca = await generateWithProgress(io, { name: 'ca', keySize: options.keySize })
      const paths = await save(ca, folder, 'ca', true)
      io.out(`Generated CA in ${folder}: ca ${ca.id}\n  certificate: ${paths.certPath}\n`)
    }
  }

  let device = await keepExisting(prompt, io, folder, 'certificate', options.force)
  if (!device) {
    device = await generateWithProgress(io, { name: 'certificate', keySize: options.keySize, issuer: ca })
    const paths = await save(device, folder, 'certificate', true)
    io.out(`Generated certificate in ${folder}: certificate ${device.id}\n  certificate: ${paths.certPath}\n`)
  }
  const configFile = join(folder, 'config.yml')
  await writeConfig(prompt, io, configFile, clientConfigYaml({ certificate: join(folder, 'certificate.crt'), privateKey: join(folder, 'certificate.pem') }), options.force)

  if (await prompt.yesNo('Configure SSH to support dnc protocol? [Y/n] (default: yes): ', true)) {
    if (!h) throw new DhtnetError('NO_HOME', 'HOME is not set, so there is no ssh configuration to update', { hint: 'set HOME, or answer "n"' })
    const { result, file } = await addDncSshEntry(h, configFile)
    io.out(result === 'added' ? `SSH configuration added to ${file}\n` : `Info: dnc configuration already exists in SSH config. File is left untouched\n`)
  }
  io.out(`Client id: ${device.id}\nClient long id: ${device.longId}\n`)
}
