/**
 * @dhtnet/tun: Linux TUN devices for Node. `openTun({ name: 'dvpn%d', mtu: 1400 })` gives a TunDevice that emits
 * 'packets' (Buffer[] per event-loop wake-up) and takes IP packets with write()/writeMany(). See README.md.
 */
export { openTun, TunDevice, type TunOptions, type TunStats, type TunEvents } from './tun-device.js'
export { DEFAULT_TUN_PATH } from './errors.js'
