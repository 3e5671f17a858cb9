/**
 * Errors of openTun and of a closed device. In this process (nothing is created in the host's namespace: every case
 * fails before TUNSETIFF, or on a path that is not the TUN device): a missing device path gives TUN_UNAVAILABLE with
 * the modprobe hint, /dev/null (not the clone device) TUN_UNAVAILABLE, bad names/MTUs/batch sizes INVALID_ARGUMENT.
 * In a namespace the test makes: a process without CAP_NET_ADMIN gets TUN_PERMISSION with the setcap hint, both as
 * an unprivileged user (setpriv --reuid=65534) and as root with CAP_NET_ADMIN dropped from its capability sets.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { isDhtnetError } from '@dhtnet/core'
import { openTun } from '../src/index.js'
import { Netns, PKG_DIR, TunChild, tunLabUnavailableReason } from './helpers/netns.js'

const addonBuilt = existsSync(`${PKG_DIR}/build/Release/dhtnet_tun.node`)

describe('openTun errors in this process', { skip: addonBuilt ? undefined : 'the addon is not built (pnpm install)' }, () => {
  test('a missing device path gives TUN_UNAVAILABLE with the modprobe hint', () => {
    assert.throws(
      () => openTun({ path: '/nonexistent/dhtnet-test/tun' }),
      (err: unknown) => {
        assert.ok(isDhtnetError(err, 'TUN_UNAVAILABLE'), String(err))
        assert.match(err.message, /\/nonexistent\/dhtnet-test\/tun does not exist \(ENOENT\)/)
        assert.match(String(err.hint), /modprobe tun/)
        return true
      },
    )
  })

  test('a path that is not the TUN clone device gives TUN_UNAVAILABLE', () => {
    assert.throws(
      () => openTun({ path: '/dev/null' }),
      (err: unknown) => isDhtnetError(err, 'TUN_UNAVAILABLE') && /not the TUN clone device/.test(err.message) && /\/dev\/net\/tun/.test(String(err.hint)),
    )
  })

  test('invalid names, MTUs and batch sizes are refused before anything is opened', () => {
    for (const name of ['a'.repeat(16), 'a/b', 'a b', 'a:1', '..', 'x%d%d', 'x%s']) {
      assert.throws(
        () => openTun({ name, path: '/nonexistent' }),
        (err: unknown) => isDhtnetError(err, 'INVALID_ARGUMENT'),
        name,
      )
    }
    for (const mtu of [0, 67, 65536, 1500.5, Number.NaN]) {
      assert.throws(
        () => openTun({ mtu, path: '/nonexistent' }),
        (err: unknown) => isDhtnetError(err, 'INVALID_ARGUMENT'),
        String(mtu),
      )
    }
    assert.throws(
      () => openTun({ name: 7 as unknown as string }),
      (err: unknown) => isDhtnetError(err, 'INVALID_ARGUMENT'),
    )
    assert.throws(
      () => openTun({ path: '' }),
      (err: unknown) => isDhtnetError(err, 'INVALID_ARGUMENT'),
    )
    for (const batchSize of [0, 1025, 2.5]) {
      assert.throws(
        () => openTun({ batchSize, path: '/nonexistent' }),
        (err: unknown) => isDhtnetError(err, 'INVALID_ARGUMENT'),
        String(batchSize),
      )
    }
  })
})

describe('TUN_PERMISSION without CAP_NET_ADMIN', { skip: tunLabUnavailableReason(), timeout: 120_000 }, () => {
  let ns: Netns | undefined

  before(() => {
    ns = new Netns('perm')
  })
  after(() => ns?.delete())

  async function openAs(wrap: string[]): Promise<Record<string, unknown>> {
    const child = new TunChild(ns!, wrap)
    try {
      await child.waitFor((e) => e.ev === 'ready', 'the child to start', 60_000)
      return await child.request({ op: 'open', id: 'p', options: { name: 'perm0' } }, (e) => e.id === 'p', 'open')
    } finally {
      await child.stop()
    }
  }

  test('an unprivileged user (uid 65534) gets TUN_PERMISSION', async () => {
    const e = await openAs(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'])
    assert.equal(e.ev, 'open-error', JSON.stringify(e))
    assert.equal(e.code, 'TUN_PERMISSION', JSON.stringify(e))
    assert.match(String(e.hint), /CAP_NET_ADMIN|cap_net_admin/)
    assert.equal(ns!.linkExists('perm0'), false)
  })

  test('root without CAP_NET_ADMIN gets TUN_PERMISSION with the setcap hint', async () => {
    const e = await openAs(['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin', '--'])
    assert.equal(e.ev, 'open-error', JSON.stringify(e))
    assert.equal(e.code, 'TUN_PERMISSION', JSON.stringify(e))
    assert.match(String(e.message), /no permission to create TUN interface "perm0" \(EPERM\)/)
    assert.match(String(e.hint), /setcap cap_net_admin\+ep/)
    assert.equal(ns!.linkExists('perm0'), false)
  })
})
