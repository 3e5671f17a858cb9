// Shared by both processes of the ICE-TCP benchmark.
import { readFileSync } from 'node:fs'
import { identityFromPem } from '../../../packages/core/src/identity/load.js'
import type { Identity } from '../../../packages/core/src/identity/types.js'

const DIR = new URL('../../../packages/core/test/fixtures/dhtnet-captures/identities/', import.meta.url)

/** The throwaway RSA-4096 identities of the C++ captures: server = responder (TLS client), client = requester. */
export function benchIdentity(name: 'server-id' | 'client-id'): Identity {
  return identityFromPem(readFileSync(new URL(`${name}.pem`, DIR)), readFileSync(new URL(`${name}.crt`, DIR)))
}

export type Mode = 'tcp' | 'tls' | 'ice-framed' | 'ice-native'

export type ParentMessage = { cmd: 'start'; mode: Mode; total: number } | { cmd: 'answer'; description: string } | { cmd: 'quit' }

export type ChildMessage = { ready: 'port'; port: number } | { ready: 'description'; description: string } | { done: true; ms: number; bytes: number } | { error: string }
