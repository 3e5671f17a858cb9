// The decrypted MultiplexedSocket byte streams of real C++ DHTNet sessions (fixtures/dhtnet-captures/*/tls-mux.json,
// copied from /work/shared/dhtnet-captures), rebuilt byte for byte, one per direction.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export type Scenario = 'dnc' | 'dsh' | 'dvpn'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'dhtnet-captures')

interface MuxObject {
  sender: 'client' | 'server'
  tls_role: string
  stream_offset: number
  len: number
  channel: number
  data_len: number
  header_hex: string
  hex?: string
  data_sha256?: string
  kind: string
  inner?: unknown
}

interface TlsRecord {
  sender: 'client' | 'server'
  outer_type: string
  inner_type?: string
  content_len?: number
}

export interface CapturedFrame {
  channel: number
  kind: string
  /** the whole frame as it was on the wire */
  bytes: Buffer
  data: Buffer
  inner?: unknown
}

export interface CapturedDirection {
  /** the tool's role: 'client' ran connectDevice (TLS server), 'server' answered (`-l`, TLS client) */
  sender: 'client' | 'server'
  tlsRole: string
  /** the MultiplexedSocket bytes this side sent, in order */
  bytes: Buffer
  frames: CapturedFrame[]
  /** plaintext sizes of the TLS records that carried them, in order (the chunks the receiver read) */
  recordSizes: number[]
}

export interface Capture {
  client: CapturedDirection
  server: CapturedDirection
}

export function loadPayload(): Buffer {
  const payload = readFileSync(join(FIXTURES, 'payload.bin'))
  assert.equal(createHash('sha256').update(payload).digest('hex'), 'ee48cc2461ce8808ade2c3b24c210498709a4aa0a9b0fbe0c270b556d1d51505')
  return payload
}

/**
 * Rebuild both directions. Small frames are in the JSON verbatim; the data of large ones (dnc's payload) is not,
 * and is taken from payload.bin in order, checked against the captured SHA-256 of each frame's data.
 */
export function loadCapture(scenario: Scenario): Capture {
  const json = JSON.parse(readFileSync(join(FIXTURES, scenario, 'tls-mux.json'), 'utf8')) as { mux: MuxObject[]; records: TlsRecord[] }
  const build = (sender: 'client' | 'server'): CapturedDirection => {
    const objects = json.mux.filter((m) => m.sender === sender).sort((a, b) => a.stream_offset - b.stream_offset)
    let payload: Buffer | undefined
    let payloadOffset = 0
    const frames: CapturedFrame[] = []
    let offset = 0
    for (const m of objects) {
      assert.equal(m.stream_offset, offset, `${scenario}/${sender}: objects are contiguous`)
      let bytes: Buffer
      if (m.hex !== undefined) {
        bytes = Buffer.from(m.hex, 'hex')
      } else {
        payload ??= loadPayload()
        const data = payload.subarray(payloadOffset, payloadOffset + m.data_len)
        bytes = Buffer.concat([Buffer.from(m.header_hex, 'hex'), data])
      }
      // the position in the channel's data (payload.bin for dnc), whether this frame was verbatim or not
      if (m.kind === 'data') payloadOffset += m.data_len
      assert.equal(bytes.length, m.len)
      const data = bytes.subarray(m.header_hex.length / 2)
      assert.equal(data.length, m.data_len)
      if (m.data_sha256) assert.equal(createHash('sha256').update(data).digest('hex'), m.data_sha256, `${scenario}/${sender}: frame data matches its hash`)
      frames.push({ channel: m.channel, kind: m.kind, bytes, data, inner: m.inner })
      offset += m.len
    }
    const recordSizes = json.records.filter((r) => r.sender === sender && r.inner_type === 'application_data' && r.content_len).map((r) => r.content_len!)
    const bytes = Buffer.concat(frames.map((f) => f.bytes))
    assert.equal(
      recordSizes.reduce((a, b) => a + b, 0),
      bytes.length,
      `${scenario}/${sender}: the TLS records carry exactly the frames`,
    )
    return { sender, tlsRole: objects[0]!.tls_role, bytes, frames, recordSizes }
  }
  return { client: build('client'), server: build('server') }
}

/** Split a buffer into the given chunk sizes (the TLS records as the receiver read them). */
export function splitBySizes(bytes: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = []
  let off = 0
  for (const n of sizes) {
    out.push(bytes.subarray(off, off + n))
    off += n
  }
  assert.equal(off, bytes.length)
  return out
}
