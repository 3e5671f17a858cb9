/**
 * An attacker of a DHT node on loopback, for the hardening tests and for scripts/bench/dht-attack.ts and the
 * "under attack" row of scripts/bench/dht: a UDP socket on its own loopback address (127.0.0.2 by default) that
 * speaks just enough of the OpenDHT wire to obtain a put token and send
 *  - puts carrying many junk-signed values (owner keys with a huge public exponent, or ordinary-looking ones),
 *  - puts carrying junk "encrypted" values (random cyphers, as a connection request at SHA1("peer:" + id) would be),
 *  - pushes to a listen (a reply whose tid is the listen's socket id, or an `update` query) from anywhere.
 * Every send is paced on what the target has read (a callback the caller supplies), so the kernel does not drop the
 * attack before it reaches the node. Nothing here touches anything but the target's address.
 */
import dgram from 'node:dgram'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { WireEncoder, decodeMessage } from '../../src/dht/wire.js'
import { MsgWriter } from '../../src/dht/msgpack-writer.js'
import { packValue, type DhtValue } from '../../src/dht/value.js'
import { randomHash } from '../../src/dht/infohash.js'

// ------------------------------------------------------------------------------------------------ DER by hand

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

function der(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body])
}

function derUint(magnitude: Buffer): Buffer {
  let m = magnitude
  while (m.length > 1 && m[0] === 0) m = m.subarray(1)
  return der(0x02, m[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), m]) : m)
}

const RSA_ALGORITHM = Buffer.from('300d06092a864886f70d0101010500', 'hex')

/** DER SubjectPublicKeyInfo of an RSA key with the given modulus and exponent (big-endian magnitudes). */
export function rsaSpki(modulus: Buffer, exponent: Buffer): Buffer {
  return rsaSpkiFromIntegers(derUint(modulus), derUint(exponent))
}

/** The same from ready-made INTEGER elements (to build malformed ones). */
export function rsaSpkiFromIntegers(modulusInteger: Buffer, exponentInteger: Buffer): Buffer {
  const rsaKey = der(0x30, Buffer.concat([modulusInteger, exponentInteger]))
  return der(0x30, Buffer.concat([RSA_ALGORITHM, der(0x03, Buffer.concat([Buffer.from([0]), rsaKey]))]))
}

/**
 * An RSA public key that OpenSSL accepts but whose verification costs a full modular exponentiation: a 3072-bit
 * modulus (the largest for which OpenSSL allows an exponent above 64 bits) and a 3071-bit odd exponent below it.
 */
export function hugeExponentKey(): Buffer {
  const n = randomBytes(384)
  n[0]! |= 0x80
  n[383]! |= 1
  const e = randomBytes(384)
  e[0] = 0x7f & (e[0]! | 0x40)
  e[383]! |= 1
  return rsaSpki(n, e)
}

/** A valid-looking RSA key (4096 bits, e = 65537) for junk signatures that pass the key policy. */
export function ordinaryKey(bits = 4096): Buffer {
  return generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ type: 'spki', format: 'der' })
}

/** A signed value whose signature does not verify (random bytes of the modulus' length). */
export function junkSignedValue(id: bigint, owner: Buffer, sigBytes = 384, dataBytes = 16): DhtValue {
  const signature = randomBytes(sigBytes)
  signature[0] = 0x01 // below any modulus of that size, so OpenSSL does the exponentiation
  return { id, type: 0, data: randomBytes(dataBytes), seq: 0, owner, signature }
}

/** A junk "encrypted" value: random bytes where an RSA block (and an AES-GCM body) would be. */
export function junkEncryptedValue(id: bigint, cypherBytes = 512): DhtValue {
  return { id, type: 0, cypher: randomBytes(cypherBytes) }
}

// ------------------------------------------------------------------------------------------------ the attacker

export interface AttackerOptions {
  /** node id to claim (default random; e.g. a legitimate node's, to show that an id alone opens nothing) */
  id?: Buffer
  /** send `s: true` like a client (default true), so the target does not add us to its routing table and our
   * pushes cannot pass for those of a node it sent a listen to */
  isClient?: boolean
  /** loopback address to send from (default 127.0.0.2) */
  address?: string
  targetPort: number
  targetHost?: string
  /** how many datagrams the target has read so far (for pacing); omit to pace on time only */
  readCount?: () => number | Promise<number>
}

export class Attacker {
  readonly id: Buffer
  readonly enc: WireEncoder
  private sock!: dgram.Socket
  private tid = 1000
  private sent = 0
  private readonly host: string
  token: Buffer = Buffer.alloc(0)
  /** tids of requests the target sent us (its transaction counter) */
  readonly seenTids: number[] = []

  private constructor(private readonly o: AttackerOptions) {
    this.host = o.targetHost ?? '127.0.0.1'
    this.id = o.id ?? randomHash()
    this.enc = new WireEncoder({ myId: this.id, userAgent: 'RNG1', network: 0, isClient: o.isClient ?? true })
  }

  static async open(o: AttackerOptions): Promise<Attacker> {
    const a = new Attacker(o)
    a.sock = dgram.createSocket('udp4')
    await new Promise<void>((resolve, reject) => {
      a.sock.once('error', reject)
      a.sock.bind(0, o.address ?? '127.0.0.2', () => resolve())
    })
    a.sock.setSendBufferSize(4 << 20)
    a.sock.on('message', (m) => a.onMessage(m))
    return a
  }

  get address(): { address: string; port: number } {
    return this.sock.address()
  }

  private onMessage(m: Buffer): void {
    let msg
    try {
      msg = decodeMessage(m)
    } catch {
      return
    }
    if (msg.kind === 'ping' || msg.kind === 'find' || msg.kind === 'get') {
      if (this.seenTids.length < 64) this.seenTids.push(msg.tid)
      // answer like a node, so the target keeps talking to us
      void this.raw(this.enc.pong(msg.tid, Buffer.from([127, 0, 0, 1])))
    }
  }

  /** A put token for our address (a `get` of a random key). */
  async getToken(timeoutMs = 5000): Promise<Buffer> {
    const tid = this.tid++
    this.token = await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.sock.off('message', onMsg)
        reject(new Error('no token from the target'))
      }, timeoutMs)
      const onMsg = (m: Buffer) => {
        let msg
        try {
          msg = decodeMessage(m)
        } catch {
          return
        }
        if (msg.kind !== 'reply' || msg.tid !== tid || !msg.token) return
        clearTimeout(timer)
        this.sock.off('message', onMsg)
        resolve(msg.token)
      }
      this.sock.on('message', onMsg)
      void this.raw(this.enc.get(tid, randomHash(), undefined, 1))
    })
    return this.token
  }

  /** A put request carrying every value inline (one datagram, up to 64 KB), as OpenDHT accepts. */
  putMessage(key: Buffer, values: DhtValue[]): Buffer {
    const packed = values.map((v) => packValue(v))
    const w = new MsgWriter(256 + packed.reduce((s, b) => s + b.length, 0)).map((this.o.isClient ?? true) ? 6 : 5)
    w.str('a').map(4).str('id').bin(this.id).str('h').bin(key)
    w.str('values').array(packed.length)
    for (const p of packed) w.raw(p)
    w.str('token').bin(this.token)
    w.str('q').str('put').str('t').uint(this.tid++).str('y').str('q').str('v').str('RNG1')
    return Buffer.concat([w.finish(), this.clientTail()])
  }

  private clientTail(): Buffer {
    return (this.o.isClient ?? true) ? new MsgWriter(8).str('s').bool(true).finish() : Buffer.alloc(0)
  }

  /** A legacy listen push: a reply with t = sid carrying values (fragmented when large, as nodes send them). */
  pushMessages(sid: number, values: DhtValue[]): Buffer[] {
    const out = this.enc.nodesValues(
      sid,
      Buffer.from([127, 0, 0, 1]),
      Buffer.alloc(0),
      Buffer.alloc(0),
      this.token,
      values.map((v) => packValue(v)),
    )
    return [out.msg, ...out.parts]
  }

  /** A v1 listen push: an `update` query to socket id `sid`. */
  updateMessages(key: Buffer, sid: number, values: DhtValue[]): Buffer[] {
    const out = this.enc.updateValues(
      this.tid++,
      key,
      sid,
      values.map((v) => packValue(v)),
      undefined,
      this.token,
    )
    return [out.msg, ...out.parts]
  }

  pingMessage(): Buffer {
    return this.enc.ping(this.tid++)
  }

  raw(d: Buffer): Promise<void> {
    return new Promise((resolve) => this.sock.send(d, this.o.targetPort, this.host, () => resolve()))
  }

  /**
   * Send datagrams in batches, waiting after each batch until the target has read all but `slack` of what was sent
   * (bounded: at most `maxWaitMs` per batch), or `pauseMs` when there is no read counter.
   */
  async send(datagrams: Iterable<Buffer>, opts: { batch?: number; slack?: number; maxWaitMs?: number; pauseMs?: number; maxPerSecond?: number } = {}): Promise<number> {
    const batch = opts.batch ?? 32
    const slack = opts.slack ?? 64
    let n = 0
    let pending: Promise<void>[] = []
    const base = this.o.readCount ? await this.o.readCount() : 0
    const start = this.sent
    const t0 = performance.now()
    for (const d of datagrams) {
      pending.push(this.raw(d))
      n++
      this.sent++
      if (pending.length >= batch) {
        await Promise.all(pending)
        pending = []
        await this.pace(base, start, slack, opts.maxWaitMs ?? 2000, opts.pauseMs ?? 5)
        // stay under a rate (e.g. below the target's per-IP limit, so that every datagram is judged on its content)
        if (opts.maxPerSecond) {
          const ahead = (n / opts.maxPerSecond) * 1000 - (performance.now() - t0)
          if (ahead > 0) await new Promise((r) => setTimeout(r, ahead))
        }
      }
    }
    await Promise.all(pending)
    await this.pace(base, start, 0, opts.maxWaitMs ?? 2000, opts.pauseMs ?? 5)
    return n
  }

  private async pace(base: number, start: number, slack: number, maxWaitMs: number, pauseMs: number): Promise<void> {
    if (!this.o.readCount) {
      await new Promise((r) => setTimeout(r, pauseMs))
      return
    }
    const t0 = Date.now()
    while (Date.now() - t0 < maxWaitMs) {
      const read = (await this.o.readCount()) - base
      if (read >= this.sent - start - slack) return
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.sock.close(() => resolve())
      } catch {
        resolve()
      }
    })
  }
}
