/** Deterministic fuzzing helpers: a seeded PRNG (xorshift32, so a failure can be replayed) and byte mutations. */
import v8 from 'node:v8'
import vm from 'node:vm'

export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x
  }
}

export function randomBuffer(next: () => number, maxLength: number): Buffer {
  const b = Buffer.alloc(next() % (maxLength + 1))
  for (let i = 0; i < b.length; i++) b[i] = next() & 0xff
  return b
}

/** Flip bytes, truncate, or append garbage. */
export function mutateBytes(base: Buffer, next: () => number): Buffer {
  const b = Buffer.from(base)
  switch (next() % 4) {
    case 0:
      for (let i = 0, n = 1 + (next() % 4); i < n && b.length > 0; i++) b[next() % b.length] = next() & 0xff
      return b
    case 1:
      return b.subarray(0, next() % (b.length + 1))
    case 2:
      return Buffer.concat([b, randomBuffer(next, 64)])
    default: {
      if (b.length < 2) return b
      const at = next() % (b.length - 1)
      b.writeUInt16BE(next() & 0xffff, at)
      return b
    }
  }
}

let gcFn: (() => void) | undefined
/** Heap in use after a full GC. */
export function heapUsedAfterGc(): number {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc')
    gcFn = vm.runInNewContext('gc') as () => void
  }
  gcFn()
  return process.memoryUsage().heapUsed
}
