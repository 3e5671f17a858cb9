/** System errors of the addon (errno names) turned into DhtnetErrors that say what failed and what to do. */
import { DhtnetError } from '@dhtnet/core'
import { isNativeError } from './native.js'

export const DEFAULT_TUN_PATH = '/dev/net/tun'

const PERMISSION_HINT_OPEN = 'opening it needs read/write access and CAP_NET_ADMIN: run as root, or give this user access to the device and `setcap cap_net_admin+ep $(which node)`'

/** An error of `new TunHandle(path, name)`: open() of the clone device or ioctl(TUNSETIFF). */
export function openError(err: unknown, path: string, name: string): DhtnetError {
  if (!isNativeError(err)) return new DhtnetError('TUN_ERROR', `cannot open a TUN device: ${String(err)}`, { cause: err })
  const what = name === '' ? 'a TUN interface' : `TUN interface "${name}"`
  if (err.syscall === 'open') {
    switch (err.code) {
      case 'ENOENT':
      case 'ENXIO':
      case 'ENODEV':
        return new DhtnetError('TUN_UNAVAILABLE', `${path} does not exist (${err.code}): the TUN driver is not available`, {
          cause: err,
          ...(path === DEFAULT_TUN_PATH
            ? {}
            : {
                hint: `check the path (the usual one is ${DEFAULT_TUN_PATH}); if ${DEFAULT_TUN_PATH} is missing too: load the module with \`modprobe tun\`, or give the container the device`,
              }),
        })
      case 'EACCES':
      case 'EPERM':
        return new DhtnetError('TUN_PERMISSION', `no permission to open ${path} (${err.code})`, { cause: err, hint: PERMISSION_HINT_OPEN })
      default:
        return new DhtnetError('TUN_ERROR', `cannot open ${path}: ${err.message}`, { cause: err })
    }
  }
  switch (err.code) {
    case 'EPERM':
    case 'EACCES':
      return new DhtnetError('TUN_PERMISSION', `no permission to create ${what} (${err.code})`, { cause: err })
    case 'ENOTTY':
    case 'EBADFD':
      return new DhtnetError('TUN_UNAVAILABLE', `${path} is not the TUN clone device (TUNSETIFF: ${err.code})`, {
        cause: err,
        hint: `give the path of the TUN clone device (${DEFAULT_TUN_PATH}); if it is missing: \`modprobe tun\``,
      })
    case 'EBUSY':
      return new DhtnetError('TUN_ERROR', `${what} is in use by another process (EBUSY)`, {
        cause: err,
        hint: 'choose another name, or a pattern such as "dvpn%d" to let the kernel pick a free one',
      })
    case 'EINVAL':
      return new DhtnetError('TUN_ERROR', `cannot create ${what}: the name is invalid, or an interface of another type has it (EINVAL)`, {
        cause: err,
        hint: 'choose another name (see `ip link`), or a pattern such as "dvpn%d"',
      })
    default:
      return new DhtnetError('TUN_ERROR', `cannot create ${what}: ${err.message}`, { cause: err })
  }
}

/** An error of an interface ioctl (MTU, flags) on an open device. */
export function interfaceError(err: unknown, name: string, action: string): DhtnetError {
  if (!isNativeError(err)) return new DhtnetError('TUN_ERROR', `${name}: cannot ${action}: ${String(err)}`, { cause: err })
  if (err.code === 'EPERM' || err.code === 'EACCES') {
    return new DhtnetError('TUN_PERMISSION', `${name}: no permission to ${action} (${err.code})`, { cause: err })
  }
  return new DhtnetError('TUN_ERROR', `${name}: cannot ${action}: ${err.message}`, {
    cause: err,
    ...(err.code === 'ENODEV' || err.code === 'EBADFD' ? { hint: 'the interface was deleted (ip link del?)' } : {}),
  })
}
