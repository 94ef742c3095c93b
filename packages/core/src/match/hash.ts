/**
 * 32-bit hashing for the matcher's open-addressing tables. FNV-1a steps let a
 * caller hash a string right to left and read off the hash of every dot suffix in
 * the same pass; the finalizer (MurmurHash3 fmix32) spreads the bits before masking.
 */

export const FNV_OFFSET = 0x811c9dc5 | 0

/** One FNV-1a step. */
export function fnvStep(hash: number, code: number): number {
  return Math.imul(hash ^ code, 0x01000193)
}

/** Finalizer; never returns 0, which the tables use for "empty". */
export function finish(hash: number, salt: number): number {
  let h = hash ^ Math.imul(salt, 0x9e3779b1)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h === 0 ? 1 : h
}

/** Table capacity: a power of two at least twice `entries` (load factor <= 0.5). */
export function capacityFor(entries: number): number {
  let capacity = 16
  while (capacity < entries * 2) capacity *= 2
  return capacity
}
