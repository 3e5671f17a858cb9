import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  parseIceMessage,
  encodeIceMessage,
  localCandidates,
  candidatePriority,
  candidateFoundation,
  parseCandidateLine,
  prflxPriority,
  MAX_REMOTE_CANDIDATES,
} from '../src/transport/ice-tcp/candidates.js'
import { isDhtnetError } from '../src/errors.js'
import { hostAddresses } from '../src/transport/ice-tcp/gather.js'
import { loadIceMessages } from './helpers/dhtnet-captures.js'

const captured = loadIceMessages()

test('every captured ice_msg parses: credentials, candidates, IPv6 link-local, srflx', () => {
  for (const [name, { ice_msg }] of Object.entries(captured)) {
    const d = parseIceMessage(ice_msg)
    assert.match(d.ufrag, /^[0-9a-f]{8}$/, name)
    assert.match(d.pwd, /^[0-9a-f]{24}$/, name)
    assert.equal(d.candidates.length, name.startsWith('dvpn') ? 5 : 4, name)
    for (const c of d.candidates) {
      assert.equal(c.transport, 'TCP')
      assert.equal(c.component, 1)
      assert.equal(c.port === 9, c.tcpType === 'active', name)
    }
  }
  const dnc = parseIceMessage(captured['dnc-request'].ice_msg)
  assert.deepEqual(dnc.candidates[0], {
    foundation: 'Hafe0001',
    component: 1,
    transport: 'TCP',
    priority: 2130706431,
    family: 4,
    address: '10.254.0.1',
    port: 56553,
    type: 'host',
    tcpType: 'passive',
  })
  assert.equal(dnc.candidates[2]!.address, 'fe80::e460:2cff:fea2:1191')
  assert.equal(dnc.candidates[2]!.family, 6)
  const dvpn = parseIceMessage(captured['dvpn-answer'].ice_msg)
  assert.deepEqual(dvpn.candidates[4], {
    foundation: 'Safe0001',
    component: 1,
    transport: 'TCP',
    priority: 1694498303,
    family: 4,
    address: '10.254.0.1',
    port: 9,
    type: 'srflx',
    tcpType: 'active',
  })
})

test('our encoder reproduces every captured ice_msg byte for byte from the same inputs', () => {
  for (const [name, { ice_msg }] of Object.entries(captured)) {
    const d = parseIceMessage(ice_msg)
    // the inputs: interface addresses with their listening ports, and the DHT-observed public address
    const hosts = d.candidates.filter((c) => c.type === 'host' && c.tcpType === 'passive').map((c) => ({ address: c.address, passivePort: c.port }))
    const srflx = d.candidates.find((c) => c.type === 'srflx')
    const cands = localCandidates({ hosts, reflexive: srflx ? { address: srflx.address, localAddress: srflx.address } : undefined })
    assert.equal(encodeIceMessage({ ufrag: d.ufrag, pwd: d.pwd, candidates: cands }), ice_msg, name)
  }
})

test('priorities and foundations as pjnath computes them', () => {
  assert.equal(candidatePriority('host', 65535), 2130706431)
  assert.equal(candidatePriority('host', 65534), 2130706175)
  assert.equal(candidatePriority('srflx', 65533), 1694498303)
  assert.equal(prflxPriority('active'), 0x6efffeff)
  assert.equal(prflxPriority('passive'), 0x6effffff)
  assert.equal(candidateFoundation('host', '10.254.0.1'), 'Hafe0001')
  assert.equal(candidateFoundation('host', '192.168.0.165'), 'Hc0a800a5') // DHTNet's tests/ice.cpp example
  assert.equal(candidateFoundation('srflx', '10.254.0.2'), 'Safe0002')
  assert.equal(candidateFoundation('host', '1.0.0.1'), 'H1000001')
  for (const [ip, f] of [
    ['fe80::e460:2cff:fea2:1191', 'H822236cf'],
    ['fe80::a4b0:8cff:feaa:d4bb', 'H5fcf7294'],
    ['fe80::f475:2dff:fe70:dd01', 'H991aee5f'],
    ['fe80::10a6:91ff:fe25:be4a', 'Hd3a1930f'],
  ]) {
    assert.equal(candidateFoundation('host', ip!), f)
  }
  // two IPv4 addresses count down; IPv6 has its own count; UPnP srflx before the DHT one
  const many = localCandidates({
    hosts: [
      { address: '192.168.1.2', passivePort: 4000 },
      { address: '2001:db8::2', passivePort: 4002 },
      { address: '10.0.0.2', passivePort: 4001 },
    ],
    mapped: [{ address: '203.0.113.7', port: 12000, localAddress: '192.168.1.2' }],
    reflexive: { address: '203.0.113.7', localAddress: '192.168.1.2' },
  })
  assert.equal(
    encodeIceMessage({ ufrag: 'u', pwd: 'p', candidates: many }),
    [
      'u',
      'p',
      'Hc0a80102 1 TCP 2130706431 192.168.1.2 4000 typ host tcptype passive',
      'Hc0a80102 1 TCP 2130706175 192.168.1.2 9 typ host tcptype active',
      'Ha000002 1 TCP 2130705919 10.0.0.2 4001 typ host tcptype passive',
      'Ha000002 1 TCP 2130705663 10.0.0.2 9 typ host tcptype active',
      `${candidateFoundation('host', '2001:db8::2')} 1 TCP 2130706431 2001:db8::2 4002 typ host tcptype passive`,
      `${candidateFoundation('host', '2001:db8::2')} 1 TCP 2130706175 2001:db8::2 9 typ host tcptype active`,
      'Sc0a80102 1 TCP 1694498303 203.0.113.7 12000 typ srflx tcptype passive',
      'Sc0a80102 1 TCP 1694498047 203.0.113.7 9 typ srflx tcptype active',
      '',
    ].join('\n'),
  )
})

test('lenient parsing as sscanf: 7 or 8 fields, bad lines skipped, component 1 only, CRLF, extensions tolerated', () => {
  const text = [
    'abcd1234',
    'pw0123456789abcdef012345',
    'Hafe0001 1 TCP 2130706431 10.254.0.1 56553 typ host tcptype passive',
    '',
    '   ',
    '1 1 UDP 2130706431 192.0.2.1 5000 typ host', // 7 fields, UDP: kept (the TCP agent ignores it)
    '2 1 TCP 2130706431 192.0.2.2 5000 typ host', // TCP without tcptype: refused
    '3 2 TCP 2130706431 192.0.2.3 5000 typ host tcptype passive', // component 2: dropped
    '4 1 TCP 2130706431 2001:db8::3 5000 typ relay tcptype passive\r',
    '5 1 TCP 1015022079 192.0.2.5 0 typ srflx raddr 10.0.0.1 rport 0 tcptype active', // raddr tolerated
    '6 1 TCP 2130706431 host.example 5000 typ host tcptype passive', // not a literal address
    '7 1 TCP 2130706431 192.0.2.7 70000 typ host tcptype passive', // port out of range
    '8 1 TCP 99999999999 192.0.2.8 5000 typ host tcptype passive', // priority out of range
    '9 1 TCP 1 192.0.2.9 5000 type host tcptype passive', // not "typ"
    'x'.repeat(32) + ' 1 TCP 1 192.0.2.10 5000 typ host tcptype passive', // foundation > 31 characters
    '11 1 TCP 1 192.0.2.11 5000 typ HOST tcptype passive', // types are case-sensitive in pjnath
    '12 1 TCP 1 192.0.2.12 5000 typ host tcptype simultaneous',
    '13 1 tcp 1 192.0.2.13 5000 typ host tcptype passive', // not "TCP": pjnath reads it as UDP
  ].join('\n')
  const d = parseIceMessage(text)
  assert.deepEqual(
    d.candidates.map((c) => `${c.foundation}/${c.transport}/${c.address}`),
    ['Hafe0001/TCP/10.254.0.1', '1/UDP/192.0.2.1', '4/TCP/2001:db8::3', '5/TCP/192.0.2.5', '13/UDP/192.0.2.13'],
  )
  assert.equal(d.candidates[3]!.tcpType, 'active')
  assert.equal(parseCandidateLine('H1 1 TCP 1 fe80::1%eth0 5 typ host tcptype passive'), undefined)
})

test('bounded: size, line count, and DHTNet trimming to 31 candidates (8 host, 4 relay)', () => {
  assert.throws(
    () => parseIceMessage('u\np\n' + 'x'.repeat(40_000)),
    (e: unknown) => isDhtnetError(e, 'BAD_ICE_MESSAGE'),
  )
  assert.throws(
    () => parseIceMessage(''),
    (e: unknown) => isDhtnetError(e, 'BAD_ICE_MESSAGE'),
  )
  assert.throws(
    () => parseIceMessage('ufrag\n'),
    (e: unknown) => isDhtnetError(e, 'BAD_ICE_MESSAGE'),
  )
  assert.throws(
    () => parseIceMessage('uf rag\npwd\n'),
    (e: unknown) => isDhtnetError(e, 'BAD_ICE_MESSAGE'),
  )
  assert.throws(
    () => parseIceMessage('a:b\npwd\n'),
    (e: unknown) => isDhtnetError(e, 'BAD_ICE_MESSAGE'),
  )
  const lines = ['ufrag', 'password']
  for (let i = 0; i < 20; i++) lines.push(`H${i} 1 TCP 2130706431 192.0.2.${i} 5000 typ host tcptype passive`)
  for (let i = 0; i < 10; i++) lines.push(`R${i} 1 TCP 16777215 198.51.100.${i} 5000 typ relay tcptype passive`)
  for (let i = 0; i < 30; i++) lines.push(`S${i} 1 TCP 1694498815 203.0.113.${i} 5000 typ srflx tcptype passive`)
  const d = parseIceMessage(lines.join('\n') + '\n')
  assert.equal(d.candidates.length, MAX_REMOTE_CANDIDATES)
  assert.equal(d.candidates.filter((c) => c.type === 'host').length, 8)
  assert.equal(d.candidates.filter((c) => c.type === 'relay').length, 4)
  // lines after the 256th are not looked at
  const many = ['u', 'p', ...Array.from({ length: 1000 }, () => 'garbage line'), 'H1 1 TCP 1 192.0.2.1 5 typ host tcptype passive'].join('\n')
  assert.equal(parseIceMessage(many).candidates.length, 0)
})

test('gathering: loopback only on request, IPv6 link-local only without a global IPv6, bind address and interface filters', () => {
  const info = (address: string, family: 'IPv4' | 'IPv6', internal = false) => ({ address, family, internal, netmask: '', mac: '', cidr: null, scopeid: 0 }) as never
  const ifs = {
    lo: [info('127.0.0.1', 'IPv4', true), info('::1', 'IPv6', true)],
    eth0: [info('192.168.1.2', 'IPv4'), info('fe80::1', 'IPv6')],
    eth1: [info('10.0.0.2', 'IPv4'), info('224.0.0.1', 'IPv4')],
  }
  assert.deepEqual(
    hostAddresses({}, ifs).map((h) => h.address),
    ['192.168.1.2', '10.0.0.2', 'fe80::1'],
  )
  assert.deepEqual(
    hostAddresses({ includeLoopback: true }, ifs).map((h) => h.address),
    ['127.0.0.1', '192.168.1.2', '10.0.0.2', '::1'],
  )
  assert.deepEqual(
    hostAddresses({ interfaces: ['eth1'] }, ifs).map((h) => h.address),
    ['10.0.0.2'],
  )
  assert.deepEqual(
    hostAddresses({ bindAddress: '10.0.0.2' }, ifs).map((h) => h.address),
    ['10.0.0.2'],
  )
  assert.deepEqual(
    hostAddresses({ bindAddress: '127.0.0.1' }, ifs).map((h) => h.address),
    ['127.0.0.1'],
  )
  assert.deepEqual(
    hostAddresses({ bindAddress: '0.0.0.0' }, ifs).map((h) => h.address),
    ['192.168.1.2', '10.0.0.2'],
  )
  const withGlobal = { ...ifs, eth2: [info('2001:db8::2', 'IPv6')] }
  assert.deepEqual(
    hostAddresses({}, withGlobal).map((h) => h.address),
    ['192.168.1.2', '10.0.0.2', '2001:db8::2'],
  )
})
