/**
 * Finding a device's certificate chain: carried in its request (our extension), or on the DHT (DHTNet §2.5: at
 * SHA1(long id bytes) or at the 40-hex key id, as type-8 values).
 */
import { type X509Certificate, createHash } from 'node:crypto'
import { DhtnetError, isDhtnetError } from '../errors.js'
import type { Logger } from '../util/log.js'
import { parsePeerId, publicKeyIds } from '../identity/ids.js'
import { parseCertificateChain } from '../identity/pem.js'
import type { SecureDht } from '../dht/secure-dht.js'
import { ValueType } from '../dht/value.js'
import { certificatesFromValue } from '../dht/crypto.js'
import type { Deadline } from '../util/deadline.js'
import type { PeerConnectionRequest } from './signalling.js'

/** A chain longer than this is not a device chain (device, account, organisation CA, ...). */
const MAX_CHAIN_LENGTH = 8

export class PeerCertificates {
  constructor(
    private readonly dht: SecureDht,
    private readonly log: Logger,
  ) {}

  /**
   * The chain of a device by its id (either form), from the DHT, within the deadline. Rejects with CERT_NOT_FOUND,
   * PEER_NOT_FOUND (the lookup itself failed), TIMEOUT or ABORTED.
   */
  async find(hex: string, deadline: Deadline): Promise<X509Certificate[]> {
    let chain: X509Certificate[] | null
    try {
      chain = await deadline.race(this.lookup(hex, deadline.signal))
    } catch (err) {
      if (isDhtnetError(err) && (err.code === 'TIMEOUT' || err.code === 'ABORTED')) throw err
      throw new DhtnetError('PEER_NOT_FOUND', `looking up the certificate of ${hex} on the DHT failed: ${(err as Error).message}`, { cause: err })
    }
    deadline.throwIfAborted()
    if (!chain || chain.length === 0) throw new DhtnetError('CERT_NOT_FOUND', `no certificate found on the DHT for ${hex}`)
    return chain
  }

  /** The chain a request carries, when it parses and its leaf key is the signer's; null otherwise. */
  fromRequest(req: PeerConnectionRequest, signerLongId: string): X509Certificate[] | null {
    if (!req.certificate) return null
    try {
      const chain = parseCertificateChain(req.certificate, 'the certificate in a connection request')
      if (chain.length === 0 || chain.length > MAX_CHAIN_LENGTH || publicKeyIds(chain[0]!).longId !== signerLongId) return null
      this.dht.registerCertificate(chain)
      return chain
    } catch (err) {
      this.log('debug', `ignoring the certificate of a request: ${(err as Error).message}`)
      return null
    }
  }

  /**
   * SecureDht.findCertificate, raced with a listen at the same key that resolves on the first matching certificate:
   * a DHT get only resolves once its search finished, which on a network with departed nodes means waiting for
   * their timeouts (measured: ~0.6 s), while the first storage node usually answers in a few ms.
   */
  private async lookup(hex: string, signal: AbortSignal): Promise<X509Certificate[] | null> {
    // a device met before: no listen to start and cancel (a search each)
    const known = this.dht.knownCertificate(hex)
    if (known) return known
    const { kind } = parsePeerId(hex)
    const where = kind === 'longId' ? createHash('sha1').update(Buffer.from(hex, 'hex')).digest() : Buffer.from(hex, 'hex')
    const stop = new AbortController()
    const both = AbortSignal.any([signal, stop.signal])
    let listen: { cancel(): void } | undefined
    const early = new Promise<X509Certificate[]>((resolve) => {
      listen = this.dht.listen(where, (values, expired) => {
        if (expired) return
        for (const v of values) {
          if (v.type !== ValueType.CERTIFICATE) continue
          try {
            const chain = certificatesFromValue(v)
            const ids = publicKeyIds(chain[0]!)
            if ((kind === 'longId' ? ids.longId : ids.id) !== hex) continue
            this.dht.registerCertificate(chain)
            resolve(chain)
            return
          } catch {
            // malformed: keep listening
          }
        }
      })
    })
    try {
      return await Promise.race([early, this.dht.findCertificate(hex, { signal: both })])
    } finally {
      stop.abort()
      listen?.cancel()
    }
  }
}
