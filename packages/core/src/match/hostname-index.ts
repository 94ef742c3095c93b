/**
 * Hostname patterns in one open-addressing hash table keyed by (kind, name), so a
 * lookup costs one pass over the queried name plus one probe per candidate key,
 * never a scan of the routes, and allocates nothing:
 * - exact names: one probe with the whole name;
 * - `*.suffix`: one probe with the query's parent (the name minus its first label);
 * - `**.suffix`: one probe per proper suffix of the query.
 * The name is hashed right to left, so the hash of every dot suffix falls out of
 * the same pass; suffixes with a label count no pattern has are not probed.
 * The bare suffix is never probed for `*.`/`**.` patterns, so `*.example.com`
 * never matches `example.com`.
 *
 * Layout, for cache locality (lookups at 10,000 routes should cost about what they
 * cost at 10): slots are 4 int32s [hash, key offset, key length << 2 | kind, value]
 * in one array, where value is the entry id when the key has one entry (the usual
 * case) or ~offset into an int32 pool of [count, id, id, …]; key bytes sit in one
 * byte pool. A hit is verified byte by byte: a hash match alone never decides, so
 * crafted names cannot collide their way in.
 */
import type { HostnamePattern } from '../net/hostname.js'
import { capacityFor, finish, FNV_OFFSET, fnvStep } from './hash.js'

/** DNS names have at most 127 labels. */
const MAX_LABELS = 128
const CH_DOT = 46
const SLOT = 4

const KIND = { exact: 1, 'one-label': 2, 'any-labels': 3 } as const

/** Right-to-left FNV-1a of `name`, the same walk collect() does. */
function hashName(name: string): number {
  let h = FNV_OFFSET
  for (let i = name.length - 1; i >= 0; i--) h = fnvStep(h, name.charCodeAt(i))
  return h
}

export class HostnameIndex {
  private readonly pending = new Map<string, { kind: number; name: string; ids: number[] }>()
  private sealed = false
  private slots = new Int32Array(0)
  private keyPool = new Uint8Array(0)
  private valuePool = new Int32Array(0)
  private mask = 0
  /** `depth[kind][n]` is 1 when some pattern of that kind has an n-label name. */
  private readonly depth = [new Uint8Array(0), new Uint8Array(MAX_LABELS), new Uint8Array(MAX_LABELS), new Uint8Array(MAX_LABELS)]
  private hasWildcards = false

  /** Indexes entry `id` under `pattern`. Precondition: pattern names are normalized (ASCII). */
  add(pattern: HostnamePattern, id: number): void {
    if (this.sealed) throw new Error('HostnameIndex: add after the first lookup')
    const kind = KIND[pattern.kind]
    const key = `${kind}:${pattern.name}`
    const entry = this.pending.get(key)
    if (entry) entry.ids.push(id)
    else this.pending.set(key, { kind, name: pattern.name, ids: [id] })
    this.depth[kind]![pattern.name.split('.').length] = 1
    if (kind !== KIND.exact) this.hasWildcards = true
  }

  /** Builds the lookup table; called by compileMatcher, or by the first lookup. No adds after. */
  seal(): void {
    if (this.sealed) return
    this.sealed = true
    const entries = [...this.pending.values()]
    this.pending.clear()
    const capacity = capacityFor(entries.length)
    this.mask = capacity - 1
    this.slots = new Int32Array(capacity * SLOT)
    this.keyPool = new Uint8Array(entries.reduce((n, e) => n + e.name.length, 0))
    this.valuePool = new Int32Array(entries.reduce((n, e) => n + (e.ids.length > 1 ? 1 + e.ids.length : 0), 0))
    let keyOffset = 0
    let valueOffset = 0
    for (const { kind, name, ids } of entries) {
      const h = finish(hashName(name), kind)
      let i = h & this.mask
      while (this.slots[i * SLOT] !== 0) i = (i + 1) & this.mask
      let value = ids[0]!
      if (ids.length > 1) {
        value = ~valueOffset
        this.valuePool[valueOffset] = ids.length
        this.valuePool.set(ids, valueOffset + 1)
        valueOffset += 1 + ids.length
      }
      this.slots.set([h, keyOffset, (name.length << 2) | kind, value], i * SLOT)
      for (let c = 0; c < name.length; c++) this.keyPool[keyOffset + c] = name.charCodeAt(c)
      keyOffset += name.length
    }
  }

  /** Slot index (into slots) of key (kind, name[start..]) with the given right-to-left hash, or -1. */
  private probe(hash: number, kind: number, name: string, start: number): number {
    const h = finish(hash, kind)
    const meta = ((name.length - start) << 2) | kind
    const slots = this.slots
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const s = i * SLOT
      const stored = slots[s]!
      if (stored === 0) return -1
      if (stored === h && slots[s + 2] === meta && this.keyEquals(slots[s + 1]!, name, start)) return s
    }
  }

  private keyEquals(offset: number, name: string, start: number): boolean {
    const pool = this.keyPool
    const length = name.length - start
    for (let i = 0; i < length; i++) if (pool[offset + i] !== name.charCodeAt(start + i)) return false
    return true
  }

  /** Appends the ids of slot `s` to `out` from `count` on; returns the new count. */
  private emit(s: number, out: Int32Array, count: number): number {
    const value = this.slots[s + 3]!
    if (value >= 0) {
      out[count++] = value
      return count
    }
    const pool = this.valuePool
    const offset = ~value
    const end = offset + 1 + pool[offset]!
    for (let v = offset + 1; v < end; v++) out[count++] = pool[v]!
    return count
  }

  /**
   * Writes the id of every entry whose pattern matches `name` to `out` from index
   * `count` on, and returns the new count. Each id appears at most once, so `out`
   * needs room for every entry. Precondition: `name` is normalized.
   */
  collect(name: string, out: Int32Array, count: number): number {
    if (!this.sealed) this.seal()
    const anyDepth = this.depth[KIND['any-labels']]!
    let h = FNV_OFFSET
    let labels = 0 // labels right of position i
    let parentHash = 0
    let parentStart = -1
    let parentLabels = 0
    for (let i = name.length - 1; i >= 0; i--) {
      const c = name.charCodeAt(i)
      if (c === CH_DOT && this.hasWildcards) {
        labels++
        // h is now the hash of name[i+1..]: a proper suffix with `labels` labels.
        if (anyDepth[labels] === 1) {
          const found = this.probe(h, KIND['any-labels'], name, i + 1)
          if (found >= 0) count = this.emit(found, out, count)
        }
        parentHash = h
        parentStart = i + 1
        parentLabels = labels
      }
      h = fnvStep(h, c)
    }
    if (parentStart > 0 && this.depth[KIND['one-label']]![parentLabels] === 1) {
      const found = this.probe(parentHash, KIND['one-label'], name, parentStart)
      if (found >= 0) count = this.emit(found, out, count)
    }
    const exact = this.probe(h, KIND.exact, name, 0)
    return exact >= 0 ? this.emit(exact, out, count) : count
  }
}
