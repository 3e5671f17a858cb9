/**
 * TURN long-term credentials (RFC 8489 §9.2): the first request goes out without credentials, the server answers
 * 401 with REALM and NONCE, and every later request carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY keyed with
 * MD5(username ":" realm ":" password). A 438 (stale nonce) brings a new NONCE: the request is sent again with it.
 * A 401 to a request signed with a nonce the server had just given means the credentials are wrong.
 *
 * The password stays in a private field and never reaches a message, a log line or an error; once the realm is
 * known only the derived key is used. Nonces are per connection (coturn keeps one per TCP session): each data
 * connection gets its own state, sharing the realm and key.
 */
import { DhtnetError } from '../../errors.js'
import { StunAttr } from '../stun/constants.js'
import { StunMessageBuilder } from '../stun/builder.js'
import { longTermKey } from '../stun/integrity.js'
import type { StunMessage } from '../stun/message.js'
import type { TurnConnection } from './connection.js'
import { TurnErrorCode, errorCodeOf } from './attributes.js'

/** REALM and NONCE are at most 763 bytes (RFC 8489 §14.9, §14.10); anything longer is not a TURN server. */
const MAX_REALM_OR_NONCE_BYTES = 763
/** Challenges answered per request (401, then a 438 or two): a server asking for more is looping. */
const MAX_CHALLENGES = 3

export class LongTermCredentials {
  readonly #password: string
  #realm: string | undefined
  #key: Buffer | undefined
  #nonce: string | undefined
  /** The nonce came from the server's last answer and has not been used yet. */
  #nonceFresh = false

  constructor(
    readonly username: string,
    password: string,
    /** A realm we expect; the server's REALM wins (it is the one the key must use). */
    private readonly expectedRealm?: string | undefined,
  ) {
    this.#password = password
  }

  get realm(): string | undefined {
    return this.#realm
  }

  /** Credentials for another connection to the same server: same realm and key, the nonce to try first. */
  forNewConnection(): LongTermCredentials {
    const copy = new LongTermCredentials(this.username, this.#password, this.expectedRealm)
    copy.#realm = this.#realm
    copy.#key = this.#key
    copy.#nonce = this.#nonce
    return copy
  }

  /** The key responses are checked with (once a realm is known). */
  get key(): Buffer | undefined {
    return this.#key
  }

  /** Add USERNAME, REALM, NONCE and MESSAGE-INTEGRITY when a challenge has been answered, and encode. */
  sign(builder: StunMessageBuilder): { bytes: Buffer; key: Buffer | undefined } {
    if (this.#realm === undefined || this.#nonce === undefined || !this.#key) return { bytes: builder.build({ fingerprint: true }), key: undefined }
    builder.addText(StunAttr.USERNAME, this.username).addText(StunAttr.REALM, this.#realm).addText(StunAttr.NONCE, this.#nonce)
    return { bytes: builder.build({ integrityKey: this.#key, fingerprint: true }), key: this.#key }
  }

  /** Take REALM and NONCE from a 401/438. Throws STUN_ERROR when they are missing or absurd. */
  private learn(msg: StunMessage): void {
    const realmAttr = msg.get(StunAttr.REALM)
    const nonceAttr = msg.get(StunAttr.NONCE)
    if (!nonceAttr || nonceAttr.value.length === 0 || nonceAttr.value.length > MAX_REALM_OR_NONCE_BYTES) {
      throw new DhtnetError('STUN_ERROR', `the TURN server's ${errorCodeOf(msg)} answer carries no usable NONCE`)
    }
    const realm = realmAttr?.value.toString('utf8') ?? this.#realm
    if (realm === undefined || (realmAttr && (realmAttr.value.length === 0 || realmAttr.value.length > MAX_REALM_OR_NONCE_BYTES))) {
      throw new DhtnetError('STUN_ERROR', `the TURN server's ${errorCodeOf(msg)} answer carries no usable REALM`)
    }
    if (realm !== this.#realm || !this.#key) {
      this.#realm = realm
      this.#key = longTermKey(this.username, realm, this.#password)
    }
    this.#nonce = nonceAttr.value.toString('utf8')
    this.#nonceFresh = true
  }

  /** Whether the realm the server announced differs from the one configured (for a log line; realms are public). */
  realmMismatch(): string | undefined {
    if (this.expectedRealm === undefined || this.#realm === undefined || this.expectedRealm === this.#realm) return undefined
    return `the TURN server's realm is "${printable(this.#realm)}", not the configured "${printable(this.expectedRealm)}"`
  }

  /**
   * Send the request `make()` builds (a fresh transaction id each time) with credentials, answering 401/438
   * challenges. Resolves with the final response: a success, or an error other than 401/438 for the caller to
   * read. Rejects TURN_AUTH_FAILED (401 with a fresh nonce, or 441), STUN_ERROR (a challenge without REALM/NONCE),
   * and whatever the connection rejects with (TURN_UNREACHABLE, ABORTED).
   */
  async request(
    connection: TurnConnection,
    make: () => StunMessageBuilder,
    options: { timeoutMs: number; signal?: AbortSignal | undefined; detachOnSuccess?: boolean | undefined; what: string },
  ): Promise<StunMessage> {
    for (let challenges = 0; ; challenges++) {
      const signedWithFreshNonce = this.#nonceFresh && this.#key !== undefined
      const { bytes, key } = this.sign(make())
      this.#nonceFresh = false
      const response = await connection.request(bytes, { timeoutMs: options.timeoutMs, signal: options.signal, integrityKey: key, detachOnSuccess: options.detachOnSuccess })
      if (response.class === 'success') return response
      const code = errorCodeOf(response)
      if (code === TurnErrorCode.WRONG_CREDENTIALS || (code === TurnErrorCode.UNAUTHORIZED && signedWithFreshNonce)) {
        throw new DhtnetError('TURN_AUTH_FAILED', `the TURN server refused the credentials (${code}) for ${options.what}`)
      }
      if (code !== TurnErrorCode.UNAUTHORIZED && code !== TurnErrorCode.STALE_NONCE) return response
      if (challenges >= MAX_CHALLENGES) {
        throw new DhtnetError('TURN_AUTH_FAILED', `the TURN server kept answering ${code} to ${options.what} (${MAX_CHALLENGES} challenges answered)`)
      }
      this.learn(response)
    }
  }
}

/** Text from the network made safe for one log line. */
export function printable(text: string, max = 80): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what this removes from text a server sent
  return text.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, max)
}
