/**
 * TUN devices for real, in a network namespace this test makes (dhtnet-tun-main-<pid>, deleted at the end): a child
 * process (tun-child.ts) opens the devices inside it; the test configures them with `ip` and sends `ping` through.
 *
 *  - ping -c 3: the echo requests arrive at our reader (ICMP type 8, the addresses, valid checksums), our replies
 *    (checksums computed by the child) go back through write(), and ping reports 3 received (exit 0);
 *  - the MTU set through the API is the one `ip link show` reports; up()/down() are the IFF_UP `ip` sees;
 *  - a kernel-chosen name (tunN) and a "%d" pattern; two devices coexist; closing one leaves the other working;
 *    write() after close() throws CLOSED;
 *  - writeMany: the kernel takes the IP packets (its RX counter), refuses a non-IP one (stats.writeErrors);
 *  - pause(): packets wait in the kernel queue, resume() delivers them;
 *  - a name in use (by our other device: EBUSY; by the loopback: EINVAL) gives TUN_ERROR with a hint;
 *  - a worker thread terminated while its device reads: the interface goes away, the process lives on;
 *  - close() removes the interface; so does a device the JS side forgets (the finalizer, after a GC);
 *  - an MTU raised behind the addon's back: the oversized packet is dropped and counted, the next one arrives whole
 *    (IPv4, then IPv6);
 *  - an interface deleted under the reader: 'error' TUN_ERROR, then 'close'.
 * Skipped (with the reason) when not root, without /dev/net/tun, ip, ping or the built addon.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { udpPacket } from './helpers/ip.js'
import { Netns, TunChild, tunLabUnavailableReason, type ChildEvent } from './helpers/netns.js'

const skip = tunLabUnavailableReason()
const LOCAL = '10.77.0.1'
const PEER = '10.77.0.2'

describe('TUN devices in a network namespace', { skip, timeout: 180_000 }, () => {
  let ns: Netns | undefined
  let child: TunChild | undefined

  const opened = async (id: string, options: Record<string, unknown>): Promise<ChildEvent> => {
    const e = await child!.request({ op: 'open', id, options }, (e) => e.id === id && (e.ev === 'opened' || e.ev === 'open-error'), `open ${id}`)
    assert.equal(e.ev, 'opened', `open ${id} failed: ${JSON.stringify(e)}`)
    return e
  }
  const closed = (id: string): Promise<ChildEvent> => child!.request({ op: 'close', id }, (e) => e.ev === 'closed' && e.id === id, `close ${id}`)
  const stats = async (id: string): Promise<Record<string, number>> =>
    (await child!.request({ op: 'stats', id }, (e) => e.ev === 'stats' && e.id === id, `stats ${id}`)).stats as Record<string, number>
  const rxPackets = (ifname: string): number => {
    const m = ns!.ip('-s', 'link', 'show', 'dev', ifname).stdout.match(/RX:[^\n]*\n\s+\d+\s+(\d+)/)
    assert.ok(m, `no RX counters for ${ifname}`)
    return Number(m[1])
  }
  const packetsOf = (id: string, from = 0): ChildEvent[] => child!.events.slice(from).filter((e) => e.ev === 'packet' && e.id === id)

  before(() => {
    ns = new Netns('main')
    child = new TunChild(ns)
  })

  after(async () => {
    await child?.stop()
    ns?.delete()
  })

  test('ping through the TUN: echo requests reach our reader, our replies reach ping', async () => {
    await child!.waitFor((e) => e.ev === 'ready', 'the child to start', 60_000)
    const dev = await opened('a', { name: 'dvpnt%d', mtu: 1400 })
    assert.equal(dev.name, 'dvpnt0')
    assert.equal(dev.mtu, 1400)
    assert.equal(dev.isUp, false)
    child!.send({ op: 'echo', id: 'a' })

    ns!.ip('addr', 'add', LOCAL, 'peer', `${PEER}/32`, 'dev', 'dvpnt0')
    assert.equal(ns!.ip('link', 'set', 'dvpnt0', 'up').status, 0)
    const ping = await ns!.execAsync('ping', ['-c', '3', '-i', '0.2', '-W', '5', '-n', PEER], 60_000)
    assert.equal(ping.status, 0, `ping failed: ${ping.stdout}${ping.stderr}`)
    assert.match(ping.stdout, /3 packets transmitted, 3 received/)

    const requests = packetsOf('a').filter((e) => (e.icmp as { type: number } | undefined)?.type === 8)
    assert.equal(requests.length, 3, JSON.stringify(requests))
    for (const [i, r] of requests.entries()) {
      assert.equal(r.src, LOCAL)
      assert.equal(r.dst, PEER)
      assert.equal(r.protocol, 1)
      assert.equal(r.headerChecksumOk, true)
      const icmp = r.icmp as { code: number; seq: number; checksumOk: boolean }
      assert.equal(icmp.code, 0)
      assert.equal(icmp.checksumOk, true)
      assert.equal(icmp.seq, i + 1)
    }
    const replies = child!.events.filter((e) => e.ev === 'replied' && e.id === 'a')
    assert.deepEqual(
      replies.map((e) => e.ok),
      [true, true, true],
    )

    const s = await stats('a')
    assert.ok(s.packetsIn! >= 3 && s.bytesIn! >= 3 * 84, JSON.stringify(s))
    assert.equal(s.packetsOut, 3)
    assert.equal(s.bytesOut, 3 * 84) // 20 IP + 8 ICMP + 56 bytes of ping data
    assert.equal(s.drops, 0)
    assert.ok(s.readBatches! >= 1 && s.readBatches! <= s.packetsIn!)
    // the kernel's own counters agree: 3 packets received on the interface (our writes)
    const link = ns!.ip('-s', 'link', 'show', 'dev', 'dvpnt0').stdout
    assert.match(link, /RX:\s+bytes\s+packets[^\n]*\n\s+252\s+3\s/, link)
  })

  test('MTU and IFF_UP as `ip link show` sees them', async () => {
    assert.match(ns!.ip('link', 'show', 'dev', 'dvpnt0').stdout, /mtu 1400 /)
    await opened('m', { name: 'mtutest0', mtu: 9000, up: true })
    const shown = ns!.ip('link', 'show', 'dev', 'mtutest0').stdout
    assert.match(shown, /mtu 9000 /)
    assert.match(shown, /<[^>]*\bUP\b[^>]*>/)
    const down = await child!.request({ op: 'down', id: 'm' }, (e) => e.ev === 'done' && e.id === 'm', 'down')
    assert.equal(down.isUp, false)
    assert.doesNotMatch(ns!.ip('link', 'show', 'dev', 'mtutest0').stdout, /<[^>]*\bUP\b[^>]*>/)
    const up = await child!.request({ op: 'up', id: 'm' }, (e) => e.ev === 'done' && e.id === 'm', 'up')
    assert.equal(up.isUp, true)
    await closed('m')
  })

  test('kernel-chosen names; two devices coexist; closing one leaves the other working', async () => {
    const k1 = await opened('k1', {})
    const k2 = await opened('k2', {})
    assert.match(String(k1.name), /^tun\d+$/)
    assert.match(String(k2.name), /^tun\d+$/)
    assert.notEqual(k1.name, k2.name)
    assert.ok(ns!.linkExists(String(k1.name)) && ns!.linkExists(String(k2.name)))
    assert.equal(k1.mtu, 1500) // the kernel's default when none is asked

    await closed('k1')
    assert.equal(ns!.linkExists(String(k1.name)), false, 'close() removes the interface')
    const late = await child!.request({ op: 'write', id: 'k1', hex: '45' }, (e) => e.ev === 'command-error', 'write after close')
    assert.equal(late.code, 'CLOSED')
    assert.ok(ns!.linkExists(String(k2.name)), 'the other device is still there')
    assert.ok(ns!.linkExists('dvpnt0'))

    // the first device still works after the others came and went
    const from = child!.events.length
    const ping = await ns!.execAsync('ping', ['-c', '1', '-W', '5', '-n', PEER], 30_000)
    assert.equal(ping.status, 0, ping.stdout + ping.stderr)
    assert.equal(packetsOf('a', from).filter((e) => (e.icmp as { type: number } | undefined)?.type === 8).length, 1)
    await closed('k2')
    assert.equal(ns!.linkExists(String(k2.name)), false)
  })

  test('writeMany: IP packets go in, a non-IP one is refused and counted', async () => {
    const before = rxPackets('dvpnt0')
    const errorsBefore = (await stats('a')).writeErrors
    const udp = udpPacket(PEER, LOCAL, 40000, 9, 100).toString('hex')
    const r = await child!.request({ op: 'writeMany', id: 'a', hex: [udp, '010203', udp] }, (e) => e.ev === 'wroteMany', 'writeMany')
    assert.equal(r.count, 2)
    assert.equal((await stats('a')).writeErrors, errorsBefore! + 1)
    assert.equal(rxPackets('dvpnt0') - before, 2, 'the kernel received the two IP packets')
  })

  test('pause() leaves packets in the kernel queue, resume() delivers them', async () => {
    const paused = await child!.request({ op: 'pause', id: 'a' }, (e) => e.ev === 'done' && e.op === 'pause', 'pause')
    assert.equal(paused.isPaused, true)
    const from = child!.events.length
    const ping = await ns!.execAsync('ping', ['-c', '1', '-W', '1', '-n', PEER], 30_000)
    assert.equal(ping.status, 1, 'no reply while paused')
    const echoRequests = (since: number): ChildEvent[] => packetsOf('a', since).filter((e) => (e.icmp as { type: number } | undefined)?.type === 8)
    assert.equal(echoRequests(from).length, 0)
    await child!.request({ op: 'resume', id: 'a' }, (e) => e.ev === 'done' && e.op === 'resume', 'resume')
    const delivered = await child!.waitFor(
      (e) => child!.events.indexOf(e) >= from && e.ev === 'packet' && (e.icmp as { type: number } | undefined)?.type === 8,
      'the queued echo request',
    )
    assert.equal(delivered.dst, PEER)
  })

  test('a name in use gives TUN_ERROR with a hint', async () => {
    for (const name of ['dvpnt0', 'lo']) {
      const e = await child!.request({ op: 'open', id: `dup-${name}`, options: { name } }, (e) => e.id === `dup-${name}`, `open ${name}`)
      assert.equal(e.ev, 'open-error')
      assert.equal(e.code, 'TUN_ERROR', JSON.stringify(e))
      assert.match(String(e.message), name === 'lo' ? /another type/ : /in use by another process \(EBUSY\)/)
      assert.match(String(e.hint), /dvpn%d/)
    }
    assert.ok(ns!.linkExists('dvpnt0'), 'the device in use is untouched')
  })

  test('a worker thread ending while its device reads closes it', async () => {
    const opened = await child!.request({ op: 'worker', name: 'wrk0' }, (e) => e.ev === 'worker-opened', 'the worker device')
    assert.equal(opened.name, 'wrk0')
    await child!.waitFor((e) => e.ev === 'worker-exit', 'the worker to end')
    for (let i = 0; i < 50 && ns!.linkExists('wrk0'); i++) await new Promise((r) => setTimeout(r, 100))
    assert.equal(ns!.linkExists('wrk0'), false, 'the teardown hook closed the fd')
    assert.equal(typeof (await stats('a')).packetsIn, 'number', 'the process lives on')
  })

  test('a device the JS side forgets is closed by its finalizer', async () => {
    await opened('f', { name: 'forgot0' })
    assert.ok(ns!.linkExists('forgot0'))
    const done = await child!.request({ op: 'forget', id: 'f' }, (e) => e.ev === 'forgotten', 'forget')
    assert.equal(done.gc, true, 'the child runs with --expose-gc')
    // finalizers may run a little after the collection: poll `ip link` (bounded)
    for (let i = 0; i < 50 && ns!.linkExists('forgot0'); i++) await new Promise((r) => setTimeout(r, 100))
    assert.equal(ns!.linkExists('forgot0'), false, 'the finalizer closed the fd and the kernel removed the interface')
  })

  test('an MTU raised behind our back: the oversized packet is dropped and counted, the next arrives whole', async () => {
    assert.equal(ns!.ip('link', 'set', 'dvpnt0', 'mtu', '9000').status, 0)
    const from = child!.events.length
    // 8000 bytes of data: an 8028-byte packet, more than the 1400 + 256 the reads were sized for
    const ping = await ns!.execAsync('ping', ['-c', '2', '-i', '0.3', '-W', '3', '-s', '8000', '-n', PEER], 30_000)
    assert.match(ping.stdout, /2 packets transmitted, 1 received/, ping.stdout + ping.stderr)
    const big = packetsOf('a', from).filter((e) => e.length === 8028)
    assert.equal(big.length, 1, 'the second request arrived whole')
    const s = await stats('a')
    assert.equal(s.readTruncated, 1)
  })

  test('the same with IPv6 (the cut is seen from the IPv6 payload length)', async () => {
    assert.equal(ns!.ip('-6', 'addr', 'add', 'fd00:77::1', 'peer', 'fd00:77::2', 'dev', 'dvpnt0', 'nodad').status, 0)
    assert.equal(ns!.ip('link', 'set', 'dvpnt0', 'mtu', '16000').status, 0) // above the 9000 + 256 reads now take
    const from = child!.events.length
    // no replies here (the child answers IPv4 only): ping exits 1; what matters is what our reader got
    await ns!.execAsync('ping', ['-6', '-c', '2', '-i', '0.3', '-W', '1', '-s', '12000', '-n', 'fd00:77::2'], 30_000)
    const whole = child!.events.slice(from).filter((e) => e.ev === 'other' && e.id === 'a' && e.version === 6 && e.length === 12048)
    assert.equal(whole.length, 1, 'the second IPv6 echo request arrived whole (40 + 8 + 12000 bytes)')
    assert.equal((await stats('a')).readTruncated, 2)
    assert.equal(ns!.ip('link', 'set', 'dvpnt0', 'mtu', '1400').status, 0)
  })

  test('an interface deleted under the reader: error TUN_ERROR, then close', async () => {
    assert.equal(ns!.ip('link', 'del', 'dvpnt0').status, 0)
    const err = await child!.waitFor((e) => e.ev === 'device-error' && e.id === 'a', 'the read error')
    assert.equal(err.code, 'TUN_ERROR')
    assert.match(String(err.hint), /deleted/)
    await child!.waitFor((e) => e.ev === 'closed' && e.id === 'a', 'close after the error')
  })
})
