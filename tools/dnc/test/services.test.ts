import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ServicePolicy, canonicalAddress, parseServiceChannelName, serviceChannelName } from '../src/services.js'

test('channel names: IPv4, bracketed IPv6, host names; bad ones rejected', () => {
  assert.equal(serviceChannelName('127.0.0.1', 22), 'nc://127.0.0.1:22')
  assert.equal(serviceChannelName('::1', 22), 'nc://[::1]:22')
  assert.deepEqual(parseServiceChannelName('nc://127.0.0.1:22'), { host: '127.0.0.1', port: 22 })
  assert.deepEqual(parseServiceChannelName('nc://[::1]:2222'), { host: '::1', port: 2222 })
  assert.deepEqual(parseServiceChannelName('nc://::1:22'), { host: '::1', port: 22 })
  assert.deepEqual(parseServiceChannelName('nc://example.org:80'), { host: 'example.org', port: 80 })
  for (const bad of [
    'nc://127.0.0.1',
    'nc://:22',
    'nc://127.0.0.1:0',
    'nc://127.0.0.1:70000',
    'tcp://127.0.0.1:22',
    'nc://[example]:22',
    'nc://a b:22',
    '',
    'nc://127.0.0.1:22/x',
  ]) {
    assert.equal(parseServiceChannelName(bad), undefined, bad)
  }
})

test('canonical addresses: IPv6 forms and IPv4-mapped are equal', () => {
  assert.equal(canonicalAddress('::1'), canonicalAddress('0:0:0:0:0:0:0:1'))
  assert.equal(canonicalAddress('2001:DB8:0:0:0:0:0:1'), '2001:db8::1')
  assert.equal(canonicalAddress('::ffff:7f00:1'), '127.0.0.1')
  assert.equal(canonicalAddress('::ffff:127.0.0.1'), '127.0.0.1')
  assert.equal(canonicalAddress('127.0.0.1'), '127.0.0.1')
  assert.equal(canonicalAddress('localhost'), undefined)
})

/** Every name the policy asked the resolver for. */
const resolved: string[] = []
const fakeDns = (host: string): Promise<string[]> => {
  resolved.push(host)
  const table: Record<string, string[]> = { localhost: ['127.0.0.1', '::1'], 'svc.test': ['127.0.0.2'], 'other.test': ['127.0.0.3'] }
  const found = table[host.toLowerCase()]
  if (!found) return Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }))
  return Promise.resolve(found)
}

test('empty list allows nothing, with a reason; allow_all allows any', async () => {
  const none = new ServicePolicy({ services: [], allowAll: false, resolve: fakeDns })
  assert.equal(none.allowsNothing, true)
  const d = await none.decide('nc://127.0.0.1:22')
  assert.equal(d.ok, false)
  assert.match((d as { reason: string }).reason, /authorizes no service/)
  const all = new ServicePolicy({ services: [], allowAll: true, resolve: fakeDns })
  assert.deepEqual(await all.decide('nc://svc.test:9'), { ok: true, addresses: ['127.0.0.2'], port: 9, host: 'svc.test' })
})

test('matching by address, IPv6 canonical form, and names resolved on both sides', async () => {
  const p = new ServicePolicy({
    services: [
      { ip: '127.0.0.1', port: 22 },
      { ip: '0:0:0:0:0:0:0:1', port: 2222 },
      { ip: 'svc.test', port: 80 },
    ],
    allowAll: false,
    resolve: fakeDns,
  })
  assert.deepEqual(await p.decide('nc://127.0.0.1:22'), { ok: true, addresses: ['127.0.0.1'], port: 22, host: '127.0.0.1' })
  assert.deepEqual(await p.decide('nc://[::1]:2222'), { ok: true, addresses: ['::1'], port: 2222, host: '::1' })
  assert.deepEqual(await p.decide('nc://[0::1]:2222'), { ok: true, addresses: ['::1'], port: 2222, host: '0::1' })
  assert.deepEqual(await p.decide('nc://SVC.test:80'), { ok: true, addresses: ['127.0.0.2'], port: 80, host: 'SVC.test' })
  assert.deepEqual(await p.decide('nc://127.0.0.2:80'), { ok: true, addresses: ['127.0.0.2'], port: 80, host: '127.0.0.2' })
  // an entry by name allows every address the name has
  const byName = new ServicePolicy({ services: [{ ip: 'localhost', port: 8080 }], allowAll: false, resolve: fakeDns })
  assert.deepEqual(await byName.decide('nc://localhost:8080'), { ok: true, addresses: ['127.0.0.1', '::1'], port: 8080, host: 'localhost' })

  const refused = async (name: string, reason: RegExp): Promise<void> => {
    const d = await p.decide(name)
    assert.equal(d.ok, false, name)
    assert.match((d as { reason: string }).reason, reason, name)
  }
  await refused('nc://127.0.0.1:23', /127\.0\.0\.1:23 is not in this server's authorized_services/)
  await refused('nc://other.test:80', /other\.test:80 is not in/)
  await refused('nc://[::1]:22', /\[::1\]:22 is not in/)
  // a name the peer sent is not resolved when the entries of that port are addresses (issue 12 item 8)
  await refused('nc://localhost:22', /localhost:22 is not in this server's authorized_services/)
  await refused('nc://nowhere.test:22', /nowhere\.test:22 is not in this server's authorized_services/)
  await refused('ssh://127.0.0.1:22', /not a service name; dnc expects nc:\/\/<host>:<port>/)
})

test('a name the peer sent is resolved only when an entry with that port names that host (no DNS on its behalf)', async () => {
  const p = new ServicePolicy({
    services: [
      { ip: '127.0.0.1', port: 22 },
      { ip: 'svc.test', port: 80 },
      { ip: 'gone.test', port: 81 },
    ],
    allowAll: false,
    resolve: fakeDns,
  })
  resolved.length = 0
  for (const name of ['nc://attacker-chosen.example:22', 'nc://attacker-chosen.example:80', 'nc://attacker-chosen.example:9', 'nc://127.0.0.1:9']) {
    assert.equal((await p.decide(name)).ok, false, name)
  }
  assert.deepEqual(resolved, [], 'no peer-sent name was resolved')
  // an address asked on a port whose entry is a name: only the entry's name is resolved
  assert.deepEqual(await p.decide('nc://127.0.0.2:80'), { ok: true, addresses: ['127.0.0.2'], port: 80, host: '127.0.0.2' })
  assert.deepEqual(resolved, ['svc.test'])
  // the entry's own name that does not resolve: refused with the reason
  const d = await p.decide('nc://gone.test:81')
  assert.equal(d.ok, false)
  assert.match((d as { reason: string }).reason, /cannot resolve gone\.test: ENOTFOUND/)
})
