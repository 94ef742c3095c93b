/**
 * CIDR lookup as a multibit trie with an 8-bit stride: one level per address byte,
 * so a lookup visits at most 4 (IPv4) or 16 (IPv6) nodes and collects the ids of
 * every block containing the address. Its cost depends on the address length,
 * never on the number of CIDRs.
 *
 * A block whose length is not a multiple of 8 is expanded inside the last byte it
 * touches (controlled prefix expansion): `10.128.0.0/9` fills byte values 128-255
 * of the second level. The nodes live in one open-addressing hash table keyed by
 * (family, level, the address bytes up to that level), laid out as flat int32 slots
 * [hash, family << 8 | level, value offset, has-children, key words ×4] so a lookup
 * touches a few compact arrays instead of chasing objects; the key words are
 * compared in full, a hash match alone never decides. Ids sit in one int32 pool as
 * [count, id, id, …].
 */
import type { CidrBlock } from '../net/cidr.js'
import { capacityFor, finish, FNV_OFFSET, fnvStep } from './hash.js'

const SLOT = 8

interface PendingNode {
  meta: number
  bytes: number[]
  ids: number[]
  hasChild: boolean
}

/** The 16 address bytes up to `level`, packed big-endian into 4 words (zero beyond `level`). */
function packWords(bytes: readonly number[]): [number, number, number, number] {
  const w: [number, number, number, number] = [0, 0, 0, 0]
  bytes.forEach((b, j) => (w[j >> 2]! |= b << (24 - 8 * (j & 3))))
  return w
}

export class CidrTrie {
  private readonly pending = new Map<string, PendingNode>()
  /** Ids of /0 blocks, by family. */
  private readonly everything: { 4: number[]; 6: number[] } = { 4: [], 6: [] }
  private count = 0
  private sealed = false
  private slots = new Int32Array(0)
  private valuePool = new Int32Array(0)
  private mask = 0

  get size(): number {
    return this.count
  }

  private node(family: 4 | 6, bytes: number[]): PendingNode {
    const key = `${family}/${bytes.join('.')}`
    let node = this.pending.get(key)
    if (node === undefined) {
      node = { meta: (family << 8) | (bytes.length - 1), bytes, ids: [], hasChild: false }
      this.pending.set(key, node)
    }
    return node
  }

  /** Indexes entry `id` under `cidr`. */
  insert(cidr: CidrBlock, id: number): void {
    if (this.sealed) throw new Error('CidrTrie: insert after the first lookup')
    this.count++
    if (cidr.prefixLength === 0) {
      this.everything[cidr.family].push(id)
      return
    }
    const lastByte = (cidr.prefixLength - 1) >> 3
    const path = [...cidr.bytes.subarray(0, lastByte)]
    for (let level = 0; level < lastByte; level++) this.node(cidr.family, path.slice(0, level + 1)).hasChild = true
    // Bits of the prefix inside the last byte; the rest of that byte is free.
    const bitsInByte = cidr.prefixLength - lastByte * 8
    const first = cidr.bytes[lastByte]! & (0xff << (8 - bitsInByte)) & 0xff
    for (let b = first; b < first + (1 << (8 - bitsInByte)); b++) this.node(cidr.family, [...path, b]).ids.push(id)
  }

  /** Builds the lookup table; called by compileMatcher, or by the first lookup. No adds after. */
  seal(): void {
    if (this.sealed) return
    this.sealed = true
    const nodes = [...this.pending.values()]
    this.pending.clear()
    const capacity = capacityFor(nodes.length)
    this.mask = capacity - 1
    this.slots = new Int32Array(capacity * SLOT)
    this.valuePool = new Int32Array(nodes.reduce((n, node) => n + (node.ids.length > 0 ? 1 + node.ids.length : 0), 0))
    let valueOffset = 0
    for (const node of nodes) {
      let h = FNV_OFFSET
      for (const b of node.bytes) h = fnvStep(h, b)
      const hash = finish(h, node.meta)
      let i = hash & this.mask
      while (this.slots[i * SLOT] !== 0) i = (i + 1) & this.mask
      let offset = -1
      if (node.ids.length > 0) {
        offset = valueOffset
        this.valuePool[valueOffset] = node.ids.length
        this.valuePool.set(node.ids, valueOffset + 1)
        valueOffset += 1 + node.ids.length
      }
      this.slots.set([hash, node.meta, offset, node.hasChild ? 1 : 0, ...packWords(node.bytes)], i * SLOT)
    }
  }

  /**
   * Writes the id of every entry whose block contains `address` (4 or 16 bytes) to
   * `out` from index `count` on, and returns the new count. An id sits at one level
   * only, so each appears at most once and `out` needs room for every entry.
   */
  collect(address: Uint8Array, out: Int32Array, count: number): number {
    if (this.count === 0) return count
    if (!this.sealed) this.seal()
    const family = address.length === 4 ? 4 : 6
    const everything = this.everything[family]
    for (let i = 0; i < everything.length; i++) out[count++] = everything[i]!
    const slots = this.slots
    const pool = this.valuePool
    let h = FNV_OFFSET
    let w0 = 0
    let w1 = 0
    let w2 = 0
    let w3 = 0
    for (let level = 0; level < address.length; level++) {
      const b = address[level]!
      h = fnvStep(h, b)
      const shifted = b << (24 - 8 * (level & 3))
      const word = level >> 2
      if (word === 0) w0 |= shifted
      else if (word === 1) w1 |= shifted
      else if (word === 2) w2 |= shifted
      else w3 |= shifted
      const meta = (family << 8) | level
      const hash = finish(h, meta)
      let s = -1
      for (let i = hash & this.mask; ; i = (i + 1) & this.mask) {
        const at = i * SLOT
        const stored = slots[at]!
        if (stored === 0) break
        if (stored === hash && slots[at + 1] === meta && slots[at + 4] === w0 && slots[at + 5] === w1 && slots[at + 6] === w2 && slots[at + 7] === w3) {
          s = at
          break
        }
      }
      if (s < 0) break // no block is longer than this along the address
      const offset = slots[s + 2]!
      if (offset >= 0) {
        const end = offset + 1 + pool[offset]!
        for (let v = offset + 1; v < end; v++) out[count++] = pool[v]!
      }
      if (slots[s + 3] === 0) break
    }
    return count
  }
}
