/**
 * Per-sandbox synthetic address pool (DESIGN.md, sandbox data path step 5).
 *
 * Every name the policy allows gets one *slot*. Slot `i` is both
 * `198.18.0.0 + i` (RFC 2544 benchmarking range, 198.18.0.0/15, never routed on
 * the internet) and `<sandbox ULA /64>::i`, so the v4 and v6 answers for a name
 * are bound to that name together and for the sandbox's whole life. The proxy
 * reads the reverse map (address → name) through core's {@link NameBindings}, so it
 * knows exactly which name the agent meant even when many names share one CDN IP.
 *
 * Exhaustion: slots are never reused (reuse would let an address the agent still
 * holds silently point at a different name). When all `capacity` slots are bound,
 * {@link SyntheticPool.bind} returns `undefined` and the resolver answers SERVFAIL
 * (reason `internal_error`). The default capacity, 65 536 names, is far beyond
 * what a normal agent run resolves; a run that exhausts it only hurts itself.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto'
import type { NameBindings } from '@keel/core'
import { formatIPv4, formatIPv6, parseIPNormalized, parseIPv6 } from './ip.js'

/** The IPv4 synthetic range, the same in every sandbox (each sandbox is its own netns). */
export const SYNTHETIC_IPV4_CIDR = '198.18.0.0/15'
const V4_BASE = 0xc6120000 // 198.18.0.0
const V4_SIZE = 1 << 17 // a /15
/** Slots 1 … V4_SIZE-2: the first and last address of the /15 are never handed out. */
export const MAX_POOL_CAPACITY = V4_SIZE - 2
export const DEFAULT_POOL_CAPACITY = 65_536

/** One name and the two synthetic addresses bound to it. */
export interface SyntheticBinding {
  readonly name: string
  readonly ipv4: string
  readonly ipv6: string
}

export interface SyntheticPoolOptions {
  /**
   * The IPv6 /64 to allocate from, e.g. `fd3c:9a1e:44b0::/64`. Default: a fresh
   * random RFC 4193 ULA prefix (`fd` + 40 random bits + subnet 0), so every
   * sandbox has its own.
   */
  ipv6Prefix?: string
  /** How many names can be bound (1 … 131 070). Default 65 536. */
  capacity?: number
  /** Source of randomness for the ULA global ID (tests). */
  randomBytes?: (n: number) => Uint8Array
}

/** Lower-case ASCII letters and drop one trailing dot: the key names are bound under. */
export function normalizeName(name: string): string {
  const lower = name.replace(/[A-Z]+/g, (s) => s.toLowerCase())
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/**
 * Synthetic address ↔ name table for one sandbox.
 *
 * @example
 * const pool = new SyntheticPool()
 * const b = pool.bind('api.example.com') // { ipv4: '198.18.0.1', ipv6: 'fdxx:…::1' }
 * pool.nameFor('::ffff:198.18.0.1')      // 'api.example.com'
 */
export class SyntheticPool implements NameBindings {
  /** `198.18.0.0/15` */
  readonly ipv4Cidr = SYNTHETIC_IPV4_CIDR
  /** This sandbox's IPv6 /64, e.g. `fd3c:9a1e:44b0::/64`. */
  readonly ipv6Cidr: string
  readonly capacity: number
  readonly #prefix: Uint8Array // 8 bytes
  readonly #byName = new Map<string, SyntheticBinding>()
  readonly #bySlot = new Map<number, SyntheticBinding>()
  #next = 1

  constructor(options: SyntheticPoolOptions = {}) {
    const capacity = options.capacity ?? DEFAULT_POOL_CAPACITY
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_POOL_CAPACITY) {
      throw new RangeError(`pool capacity must be an integer in 1…${MAX_POOL_CAPACITY}, got ${capacity}`)
    }
    this.capacity = capacity
    if (options.ipv6Prefix !== undefined) {
      const [addr, len] = options.ipv6Prefix.split('/')
      const bytes = parseIPv6(addr ?? '')
      if (!bytes || (len !== undefined && len !== '64')) {
        throw new RangeError(`ipv6Prefix must be an IPv6 /64, got ${options.ipv6Prefix}`)
      }
      this.#prefix = bytes.slice(0, 8)
    } else {
      const rnd = (options.randomBytes ?? nodeRandomBytes)(5)
      this.#prefix = new Uint8Array([0xfd, rnd[0] ?? 0, rnd[1] ?? 0, rnd[2] ?? 0, rnd[3] ?? 0, rnd[4] ?? 0, 0, 0])
    }
    const full = new Uint8Array(16)
    full.set(this.#prefix)
    this.ipv6Cidr = `${formatIPv6(full)}/64`
  }

  /** Number of names bound so far. */
  get size(): number {
    return this.#byName.size
  }

  /**
   * The binding for `name`, creating it on first use. Same name → same addresses
   * for the pool's life. `undefined` when the pool is full (see the module doc).
   * Precondition: `name` is a hostname; it is normalized (case, trailing dot) here.
   */
  bind(name: string): SyntheticBinding | undefined {
    const key = normalizeName(name)
    const existing = this.#byName.get(key)
    if (existing) return existing
    if (key === '' || this.#next > this.capacity) return undefined
    const slot = this.#next++
    const v4 = V4_BASE + slot
    const v6 = new Uint8Array(16)
    v6.set(this.#prefix)
    // slot < 2^17, so it fits in the last 3 bytes of the interface identifier
    v6[13] = (slot >>> 16) & 0xff
    v6[14] = (slot >>> 8) & 0xff
    v6[15] = slot & 0xff
    const binding: SyntheticBinding = Object.freeze({
      name: key,
      ipv4: formatIPv4(new Uint8Array([v4 >>> 24, (v4 >>> 16) & 0xff, (v4 >>> 8) & 0xff, v4 & 0xff])),
      ipv6: formatIPv6(v6),
    })
    this.#byName.set(key, binding)
    this.#bySlot.set(slot, binding)
    return binding
  }

  /** The existing binding for `name`, without creating one. */
  lookup(name: string): SyntheticBinding | undefined {
    return this.#byName.get(normalizeName(name))
  }

  /** True when `address` lies in 198.18.0.0/15 or this pool's /64 (bound or not). IPv4-mapped IPv6 is folded. */
  isSynthetic(address: string): boolean {
    return this.#slotOf(address) !== undefined
  }

  /** The name bound to a synthetic `address` (any textual form, incl. `::ffff:198.18.x.y`), if any. */
  nameFor(address: string): string | undefined {
    const slot = this.#slotOf(address)
    return slot === undefined ? undefined : this.#bySlot.get(slot)?.name
  }

  /** The full binding for a synthetic address, if bound. */
  bindingFor(address: string): SyntheticBinding | undefined {
    const slot = this.#slotOf(address)
    return slot === undefined ? undefined : this.#bySlot.get(slot)
  }

  /** Every binding, oldest first (for exit reports and debugging). */
  bindings(): IterableIterator<SyntheticBinding> {
    return this.#byName.values()
  }

  /** Slot of an address in the synthetic ranges; -1 for in-/64 but beyond any slot; undefined outside. */
  #slotOf(address: string): number | undefined {
    const ip = parseIPNormalized(address)
    if (!ip) return undefined
    const b = ip.bytes
    if (ip.family === 4) {
      const v = (((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0
      const off = v - V4_BASE
      return off >= 0 && off < V4_SIZE ? off : undefined
    }
    for (let i = 0; i < 8; i++) if (b[i] !== this.#prefix[i]) return undefined
    // Interface identifiers above the v4-sized slot space are still "in the pool" but never bound.
    let high = 0
    for (let i = 8; i < 13; i++) high |= b[i] ?? 0
    const low = ((b[13] ?? 0) << 16) | ((b[14] ?? 0) << 8) | (b[15] ?? 0)
    return high === 0 ? low : -1
  }
}
