/** The YAML config files dhtnet-crtmgr -i writes for dnc, with DHTNet's keys and shipped defaults. */

export interface ConfigPaths {
  readonly certificate: string
  readonly privateKey: string
}

/** YAML double-quoted scalar (JSON strings are valid YAML). */
const q = (s: string) => JSON.stringify(s)

function common(paths: ConfigPaths): string {
  return `# Bootstrap node of the DHT: "host" or "host:port" (port 4222 by default).
# bootstrap.sfl.io is the public OpenDHT network; use your own node for a private network.
bootstrap: "bootstrap.sfl.io"

# TURN server, a relay used when no direct connection can be made
turn_host: "turn.sfl.io"
turn_user: "sfl"
turn_pass: "sfl"
turn_realm: "sfl"

# Log details to stderr
verbose: false

# Ask the router to open a port with UPnP
enable_upnp: true

# Identity of this device (written by dhtnet-crtmgr)
certificate: ${q(paths.certificate)}
privateKey: ${q(paths.privateKey)}
`
}

export function clientConfigYaml(paths: ConfigPaths): string {
  return `${common(paths)}
# Service to reach on the remote device (dnc -i / -P)
ip: "127.0.0.1"
port: 22
`
}

export function serverConfigYaml(paths: ConfigPaths): string {
  return `${common(paths)}
# Accept peers whatever CA signed their certificate (false: only peers signed by this server's CA)
anonymous: true

# Services clients may reach through this server
authorized_services:
  - ip: "127.0.0.1"
    port: 22
  # - ip: "127.0.0.1"
  #   port: 80
  # - ip: "127.0.0.1"
  #   port: 443
`
}
