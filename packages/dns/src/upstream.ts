/**
 * keel's own upstream resolution: real A/AAAA lookups against the host's resolver
 * (or `--upstream-dns host:port`), cached for exactly as long as the answer's TTL.
 *
 * Two consumers share one cache:
 * - the sandbox DNS server asks {@link UpstreamResolver.query} before it hands out a
 *   synthetic address (so NXDOMAIN upstream stays NXDOMAIN, and TTLs follow upstream);
 * - the proxy calls {@link UpstreamResolver.resolve} (core's `Resolve`) to learn the
 *   real address to dial for an allowed name.
 *
 * Only A and AAAA ever go upstream, and only for names the policy allowed: the DNS
 * server never calls this for a denied name (DESIGN.md: denied names are never
 * forwarded, so DNS cannot tunnel data out).
 *
 * Bounded: each attempt waits `timeoutMs` (default 1 s), there are `attempts`
 * (default 2, rotating through the configured servers), UDP first and TCP when the
 * answer is truncated (TC). Every query has a fresh random ID and source port, and an
 * answer is taken only if its ID and question match (RFC 5452).
 *
 * The host's resolver: keel's resolver runs in the launcher, which stays in the host
 * network namespace (DESIGN.md step 3), so a loopback nameserver such as
 * systemd-resolved's stub at 127.0.0.53 works as is and keeps the host's split-DNS
 * setup. Tests never use it: they always pass the fake world's server.
 */
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { KeelError, NOOP_LOGGER, type Logger, type Resolve } from '@keel/core'
import { formatIPv4, formatIPv6 } from './ip.js'
import { normalizeName } from './pool.js'
import {
  DnsTransportError,
  buildQuery,
  isReplyTo,
  tcpExchange,
  udpExchange,
  type DnsEndpoint,
  type ExchangeOptions,
} from './transport.js'
import {
  RCode,
  RRClass,
  RRType,
  asciiLower,
  decodeNameRdata,
  decodeSoa,
  nameToLabels,
  parseMessage,
  typeName,
  type DnsMessage,
} from './wire.js'

export type AddressType = 'A' | 'AAAA'

/** What upstream said about one (name, type). */
export interface UpstreamAnswer {
  /** `RCode.NOERROR` (possibly with no addresses: NODATA) or `RCode.NXDOMAIN`. */
  rcode: number
  /** Real addresses, in upstream's order, CNAME chain already followed. */
  addresses: string[]
  /** Seconds this answer stays valid (counts down while cached). */
  ttl: number
  /** True when served from the cache. */
  cached: boolean
}

/** The upstream interface the DNS server needs; tests can pass a fake. */
export interface UpstreamQuerier {
  query(name: string, type: AddressType, options?: { signal?: AbortSignal }): Promise<UpstreamAnswer>
}

export type UpstreamErrorCode =
  | 'ERR_UPSTREAM_TIMEOUT'
  | 'ERR_UPSTREAM_NETWORK'
  | 'ERR_UPSTREAM_RCODE'
  | 'ERR_UPSTREAM_ABORTED'
  | 'ERR_UPSTREAM_BAD_NAME'

/** Upstream resolution failed (after all attempts). Not a policy decision. */
export class UpstreamDnsError extends Error {
  override readonly name = 'UpstreamDnsError'
  constructor(
    readonly code: UpstreamErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

export interface UpstreamResolverOptions {
  /** One or more servers: `{ host, port }` or `host[:port]` / `[v6]:port` text. */
  servers: DnsEndpoint | string | readonly (DnsEndpoint | string)[]
  /** Per attempt. Default 1000 ms. */
  timeoutMs?: number
  /** Attempts per query, rotating through `servers`. Default 2. */
  attempts?: number
  /** Cache entries kept (oldest evicted first). Default 10 000. */
  maxCacheEntries?: number
  /** Longest time anything is cached, seconds. Default 3600. */
  maxCacheTtl?: number
  /** Milliseconds since the epoch; for cache expiry (tests pass a fake clock). */
  now?: () => number
  logger?: Logger
}

export interface UpstreamCounters {
  /** Queries sent upstream (attempts, including the TCP retry after TC). */
  sent: number
  cacheHits: number
  /** Queries that failed after every attempt. */
  failures: number
  tcpFallbacks: number
}

interface CacheEntry {
  expires: number
  answer: Omit<UpstreamAnswer, 'ttl' | 'cached'>
}

const MAX_CNAME_HOPS = 16

/**
 * Parses `host`, `host:port`, `[v6]` or `[v6]:port` (port default 53). The host must
 * be an IP literal: resolving the resolver's own name would need a resolver.
 * Throws KeelError `ERR_CONFIG_INVALID`.
 */
export function parseHostPort(text: string, defaultPort = 53): DnsEndpoint {
  const s = text.trim()
  let host: string
  let port: string | undefined
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s)
  if (bracket) {
    host = bracket[1] ?? ''
    port = bracket[2]
  } else if (net.isIPv6(s.split('%')[0] ?? '')) {
    host = s
  } else {
    const i = s.lastIndexOf(':')
    host = i === -1 ? s : s.slice(0, i)
    port = i === -1 ? undefined : s.slice(i + 1)
  }
  if (net.isIP(host.split('%')[0] ?? '') === 0) {
    throw new KeelError('ERR_CONFIG_INVALID', `upstream DNS must be an IP address with an optional port, got ${JSON.stringify(text)}`)
  }
  const p = port === undefined ? defaultPort : Number(port)
  if (!/^\d*$/.test(port ?? '') || !Number.isInteger(p) || p < 1 || p > 65535) {
    throw new KeelError('ERR_CONFIG_INVALID', `bad port in upstream DNS ${JSON.stringify(text)}`)
  }
  return { host, port: p }
}

/**
 * The `nameserver` lines of resolv.conf(5), in order, port 53. With none, the
 * resolver library's default applies: the local host (127.0.0.1).
 */
export function parseResolvConf(text: string): DnsEndpoint[] {
  const out: DnsEndpoint[] = []
  for (const raw of text.split('\n').slice(0, 10_000)) {
    const line = raw.replace(/[#;].*$/, '').trim()
    const m = /^nameserver\s+(\S+)$/.exec(line)
    if (!m || !m[1]) continue
    const host = m[1]
    if (net.isIP(host.split('%')[0] ?? '') !== 0) out.push({ host, port: 53 })
  }
  return out.length > 0 ? out : [{ host: '127.0.0.1', port: 53 }]
}

function negativeTtl(msg: DnsMessage): number {
  // RFC 2308 §5: negative answers are cached for min(SOA TTL, SOA MINIMUM); without
  // an SOA they SHOULD NOT be cached.
  const soa = msg.authorities.find((r) => r.type === RRType.SOA)
  if (!soa) return 0
  try {
    return Math.min(soa.ttl, decodeSoa(soa.data).minimum)
  } catch {
    return 0
  }
}

/** Follows the CNAME chain from `name` and collects the addresses of `type`. */
function extract(msg: DnsMessage, name: string, type: number): { rcode: number; addresses: string[]; ttl: number } {
  if (msg.rcode === RCode.NXDOMAIN) return { rcode: RCode.NXDOMAIN, addresses: [], ttl: negativeTtl(msg) }
  if (msg.rcode !== RCode.NOERROR) {
    throw new UpstreamDnsError('ERR_UPSTREAM_RCODE', `upstream answered rcode ${msg.rcode} for ${name}/${typeName(type)}`)
  }
  let target = name
  let ttl = Number.POSITIVE_INFINITY
  const addresses: string[] = []
  for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
    const owned = msg.answers.filter((r) => r.class === RRClass.IN && asciiLower(r.name) === target)
    const found = owned.filter((r) => r.type === type)
    if (found.length > 0) {
      for (const r of found) {
        const a = r.data.length === 4 ? formatIPv4(r.data) : formatIPv6(r.data)
        if (!addresses.includes(a)) addresses.push(a)
        ttl = Math.min(ttl, r.ttl)
      }
      break
    }
    const cname = owned.find((r) => r.type === RRType.CNAME)
    if (!cname) break
    ttl = Math.min(ttl, cname.ttl)
    target = asciiLower(decodeNameRdata(cname.data))
  }
  if (addresses.length === 0) return { rcode: RCode.NOERROR, addresses, ttl: negativeTtl(msg) }
  return { rcode: RCode.NOERROR, addresses, ttl }
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p
  if (signal.aborted) return Promise.reject(new UpstreamDnsError('ERR_UPSTREAM_ABORTED', 'aborted'))
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new UpstreamDnsError('ERR_UPSTREAM_ABORTED', 'aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

/**
 * Real DNS lookups for allowed names, with a TTL-honouring cache.
 *
 * @example
 * const upstream = new UpstreamResolver({ servers: '127.0.0.1:5300' })
 * await upstream.query('api.example.com', 'A') // { rcode: 0, addresses: ['…'], ttl: 60, cached: false }
 * await upstream.resolve('api.example.com')    // ['93.184.216.34', '2606:2800:…'] (v4 first)
 */
export class UpstreamResolver implements UpstreamQuerier {
  readonly servers: readonly DnsEndpoint[]
  readonly counters: UpstreamCounters = { sent: 0, cacheHits: 0, failures: 0, tcpFallbacks: 0 }
  readonly #timeoutMs: number
  readonly #attempts: number
  readonly #maxEntries: number
  readonly #maxTtl: number
  readonly #now: () => number
  readonly #log: Logger
  readonly #cache = new Map<string, CacheEntry>()
  readonly #inflight = new Map<string, Promise<UpstreamAnswer>>()

  constructor(options: UpstreamResolverOptions) {
    const list = Array.isArray(options.servers) ? options.servers : [options.servers]
    this.servers = (list as readonly (DnsEndpoint | string)[]).map((s) => (typeof s === 'string' ? parseHostPort(s) : s))
    if (this.servers.length === 0) throw new KeelError('ERR_CONFIG_INVALID', 'no upstream DNS server')
    this.#timeoutMs = options.timeoutMs ?? 1000
    this.#attempts = Math.max(1, Math.min(options.attempts ?? 2, 10))
    this.#maxEntries = options.maxCacheEntries ?? 10_000
    this.#maxTtl = options.maxCacheTtl ?? 3600
    this.#now = options.now ?? Date.now
    this.#log = options.logger ?? NOOP_LOGGER
  }

  /** Uses the host's resolver: the `nameserver` lines of `/etc/resolv.conf` (or `path`). */
  static fromResolvConf(options: Omit<UpstreamResolverOptions, 'servers'> & { path?: string } = {}): UpstreamResolver {
    const { path = '/etc/resolv.conf', ...rest } = options
    let text = ''
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      throw new KeelError('ERR_CONFIG_INVALID', `cannot read ${path} for the upstream DNS server`, { cause: err })
    }
    return new UpstreamResolver({ ...rest, servers: parseResolvConf(text) })
  }

  /**
   * A/AAAA for `name` (normalized: case, trailing dot). Cached per TTL; concurrent
   * identical queries share one upstream exchange. Rejects with {@link UpstreamDnsError}
   * on timeout, network error or SERVFAIL/REFUSED; NXDOMAIN and NODATA are answers.
   */
  query(name: string, type: AddressType, options: { signal?: AbortSignal } = {}): Promise<UpstreamAnswer> {
    const key = normalizeName(name)
    const cacheKey = `${type} ${key}`
    // Only valid names are ever cached, so a hit needs no validation.
    const hit = this.#fresh(cacheKey)
    if (hit) {
      this.counters.cacheHits++
      return Promise.resolve({ ...hit.answer, addresses: [...hit.answer.addresses], ttl: Math.ceil((hit.expires - this.#now()) / 1000), cached: true })
    }
    try {
      if (nameToLabels(key).length === 0) throw new Error('root')
    } catch (err) {
      return Promise.reject(new UpstreamDnsError('ERR_UPSTREAM_BAD_NAME', `not a resolvable name: ${JSON.stringify(name)}`, { cause: err }))
    }
    let flight = this.#inflight.get(cacheKey)
    if (!flight) {
      flight = this.#fetch(key, type).finally(() => this.#inflight.delete(cacheKey))
      this.#inflight.set(cacheKey, flight)
    }
    return raceAbort(flight, options.signal)
  }

  /**
   * Core's `Resolve`: every real address for `hostname`, IPv4 first then IPv6.
   * `[]` when the name does not exist or has no addresses; rejects only if both
   * lookups failed.
   */
  readonly resolve: Resolve = async (hostname, options) => {
    const [a, aaaa] = await Promise.allSettled([this.query(hostname, 'A', options), this.query(hostname, 'AAAA', options)])
    if (a.status === 'rejected' && aaaa.status === 'rejected') throw a.reason
    return [
      ...(a.status === 'fulfilled' ? a.value.addresses : []),
      ...(aaaa.status === 'fulfilled' ? aaaa.value.addresses : []),
    ]
  }

  /**
   * What {@link resolve} would answer, when both the A and the AAAA answer are in the cache
   * and fresh; otherwise `undefined` (ask {@link resolve}). Synchronous: the proxy asks this
   * first for every connection, and a promise, a timer and an abort signal per connection
   * cost more than the lookup.
   */
  readonly resolveCached = (hostname: string): string[] | undefined => {
    const key = normalizeName(hostname)
    const a = this.#fresh(`A ${key}`)
    const aaaa = a && this.#fresh(`AAAA ${key}`)
    if (!a || !aaaa) return undefined
    this.counters.cacheHits += 2
    return [...a.answer.addresses, ...aaaa.answer.addresses]
  }

  /** A cache entry that has not expired (an expired one is dropped). */
  #fresh(cacheKey: string): CacheEntry | undefined {
    const hit = this.#cache.get(cacheKey)
    if (!hit) return undefined
    if (hit.expires > this.#now()) return hit
    this.#cache.delete(cacheKey)
    return undefined
  }

  /** Forgets every cached answer. */
  clearCache(): void {
    this.#cache.clear()
  }

  async #fetch(name: string, type: AddressType): Promise<UpstreamAnswer> {
    const qtype = type === 'A' ? RRType.A : RRType.AAAA
    let lastError: unknown
    for (let attempt = 0; attempt < this.#attempts; attempt++) {
      const server = this.servers[attempt % this.servers.length] as DnsEndpoint
      try {
        const msg = await this.#exchange(server, name, qtype)
        const { ttl, ...answer } = extract(msg, name, qtype)
        const cacheTtl = Math.min(ttl, this.#maxTtl)
        if (cacheTtl > 0) this.#store(`${type} ${name}`, { expires: this.#now() + cacheTtl * 1000, answer })
        return { ...answer, addresses: [...answer.addresses], ttl: Number.isFinite(ttl) ? ttl : 0, cached: false }
      } catch (err) {
        lastError = err
        this.#log.debug('upstream dns attempt failed', { name, type, server: `${server.host}:${server.port}`, attempt, error: String(err) })
      }
    }
    this.counters.failures++
    if (lastError instanceof UpstreamDnsError) throw lastError
    const code = lastError instanceof DnsTransportError && lastError.code === 'ERR_DNS_TIMEOUT' ? 'ERR_UPSTREAM_TIMEOUT' : 'ERR_UPSTREAM_NETWORK'
    throw new UpstreamDnsError(code, `upstream DNS failed for ${name}/${type}: ${String(lastError)}`, { cause: lastError })
  }

  async #exchange(server: DnsEndpoint, name: string, qtype: number): Promise<DnsMessage> {
    const { id, wire } = buildQuery(name, qtype, { edns: { udpPayloadSize: 1232 } })
    const accept = (buf: Buffer): DnsMessage | undefined => {
      const msg = parseMessage(buf, { strict: false, maxRecords: 1024 })
      return isReplyTo(msg, id, name, qtype) ? msg : undefined
    }
    const opts: ExchangeOptions = { timeoutMs: this.#timeoutMs }
    this.counters.sent++
    const reply = await udpExchange(server, wire, accept, opts)
    if (!reply.header.tc) return reply
    // RFC 7766 §5: a truncated UDP answer is retried over TCP (fresh ID).
    this.counters.sent++
    this.counters.tcpFallbacks++
    const again = buildQuery(name, qtype, { edns: { udpPayloadSize: 1232 } })
    return tcpExchange(
      server,
      again.wire,
      (buf) => {
        const msg = parseMessage(buf, { strict: false, maxRecords: 4096 })
        return isReplyTo(msg, again.id, name, qtype) ? msg : undefined
      },
      opts,
    )
  }

  #store(key: string, entry: CacheEntry): void {
    this.#cache.delete(key)
    this.#cache.set(key, entry)
    // Map iteration is insertion order, so the first key is the oldest entry.
    while (this.#cache.size > this.#maxEntries) {
      const oldest = this.#cache.keys().next()
      if (oldest.done) break
      this.#cache.delete(oldest.value)
    }
  }
}
