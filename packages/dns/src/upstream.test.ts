import dgram from 'node:dgram'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWorld, type World } from '../../../test/world/index.js'
import { UpstreamDnsError, UpstreamResolver, parseHostPort, parseResolvConf } from './upstream.js'
import { RCode } from './wire.js'

/** A UDP port where nothing listens: queries get ICMP port-unreachable. */
async function closedPort(): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r))
  const port = s.address().port
  await new Promise<void>((r) => s.close(r))
  return port
}

describe('UpstreamResolver (against the fake world)', () => {
  let world: World
  let clock = 1_000_000
  let upstream: UpstreamResolver
  beforeAll(async () => {
    world = await startWorld({ dnsOnly: true })
    upstream = new UpstreamResolver({ servers: `127.0.0.1:${world.dnsPort}`, now: () => clock, timeoutMs: 300 })
  })
  afterAll(async () => {
    await world?.stop()
  })

  it('resolves A and AAAA, v4 first, and caches within the TTL', async () => {
    world.dns.reset()
    expect(await upstream.resolve('api.allowed.test')).toEqual(['127.0.0.2', '::1'])
    expect(await upstream.query('API.allowed.test.', 'A')).toMatchObject({ rcode: RCode.NOERROR, addresses: ['127.0.0.2'], ttl: 60, cached: true })
    expect(world.dns.count('api.allowed.test')).toBe(2) // one A, one AAAA
  })

  it('resolveCached answers from the cache only, both families fresh, and never asks upstream', async () => {
    world.dns.reset()
    const fresh = new UpstreamResolver({ servers: `127.0.0.1:${world.dnsPort}`, now: () => clock, timeoutMs: 300 })
    expect(fresh.resolveCached('api.allowed.test')).toBeUndefined()
    expect(await fresh.resolve('api.allowed.test')).toEqual(['127.0.0.2', '::1'])
    expect(fresh.resolveCached('API.allowed.test.')).toEqual(['127.0.0.2', '::1'])
    expect(world.dns.count('api.allowed.test')).toBe(2)
    // A short-lived answer: once it expires, the cached answer is gone with it.
    const short = await fresh.resolve('short-ttl.test')
    expect(fresh.resolveCached('short-ttl.test')).toEqual(short)
    clock += 1500
    expect(fresh.resolveCached('short-ttl.test')).toBeUndefined()
    expect(world.dns.count('api.allowed.test')).toBe(2)
  })

  it('honours the TTL: a 1 s answer is asked again after it expires', async () => {
    world.dns.reset()
    const first = await upstream.query('short-ttl.test', 'A')
    expect(first).toMatchObject({ addresses: ['127.0.0.5'], ttl: 1, cached: false })
    clock += 500
    expect((await upstream.query('short-ttl.test', 'A')).cached).toBe(true)
    expect(world.dns.count('short-ttl.test', 'A')).toBe(1)
    clock += 600
    expect((await upstream.query('short-ttl.test', 'A')).cached).toBe(false)
    expect(world.dns.count('short-ttl.test', 'A')).toBe(2)
  })

  it('follows CNAME chains and takes the smallest TTL', async () => {
    expect(await upstream.query('alias.test', 'A')).toMatchObject({ addresses: ['127.0.0.2'], ttl: 60 })
  })

  it('keeps NXDOMAIN and NODATA as answers, cached per the SOA (RFC 2308)', async () => {
    world.dns.reset()
    expect(await upstream.query('nx.test', 'A')).toMatchObject({ rcode: RCode.NXDOMAIN, addresses: [], ttl: 5 })
    expect(await upstream.query('nx.test', 'A')).toMatchObject({ rcode: RCode.NXDOMAIN, cached: true })
    expect(world.dns.count('nx.test')).toBe(1)
    expect(await upstream.query('v6only.test', 'A')).toMatchObject({ rcode: RCode.NOERROR, addresses: [] })
    expect(await upstream.resolve('v6only.test')).toEqual(['::1'])
    expect(await upstream.resolve('nx.test')).toEqual([])
  })

  it('retries over TCP when the UDP answer is truncated', async () => {
    world.dns.reset()
    const before = upstream.counters.tcpFallbacks
    const answer = await upstream.query('big.test', 'A')
    expect(answer.addresses).toHaveLength(100)
    expect(upstream.counters.tcpFallbacks).toBe(before + 1)
    expect(world.dns.queries.map((q) => q.transport)).toEqual(['udp', 'tcp'])
  })

  it('shares one upstream exchange between concurrent identical queries', async () => {
    world.dns.reset()
    const answers = await Promise.all(Array.from({ length: 10 }, () => upstream.query('www.allowed.test', 'A')))
    expect(answers.every((a) => a.addresses[0] === '127.0.0.2')).toBe(true)
    expect(world.dns.count('www.allowed.test')).toBe(1)
  })

  it('fails on SERVFAIL and on silence, within its bounds', async () => {
    await expect(upstream.query('servfail.test', 'A')).rejects.toMatchObject({ code: 'ERR_UPSTREAM_RCODE' })
    const t0 = performance.now()
    await expect(upstream.query('blackhole.test', 'A')).rejects.toMatchObject({ code: 'ERR_UPSTREAM_TIMEOUT' })
    const ms = performance.now() - t0
    expect(ms).toBeGreaterThanOrEqual(550) // two attempts of 300 ms
    expect(ms).toBeLessThan(1500)
    await expect(upstream.resolve('blackhole.test')).rejects.toBeInstanceOf(UpstreamDnsError)
  })

  it('fails fast when nothing listens upstream', async () => {
    const dead = new UpstreamResolver({ servers: { host: '127.0.0.1', port: await closedPort() } })
    const t0 = performance.now()
    await expect(dead.query('api.allowed.test', 'A')).rejects.toMatchObject({ code: 'ERR_UPSTREAM_NETWORK' })
    expect(performance.now() - t0).toBeLessThan(500)
    expect(dead.counters.failures).toBe(1)
  })

  it('rotates to the next server on the retry', async () => {
    const r = new UpstreamResolver({ servers: [`127.0.0.1:${await closedPort()}`, `127.0.0.1:${world.dnsPort}`] })
    expect((await r.query('other.test', 'A')).addresses).toEqual(['127.0.0.3'])
  })

  it('stops waiting when aborted', async () => {
    const ac = new AbortController()
    const p = upstream.query('blackhole.test', 'AAAA', { signal: ac.signal })
    ac.abort()
    await expect(p).rejects.toMatchObject({ code: 'ERR_UPSTREAM_ABORTED' })
  })

  it('refuses names that cannot be queried', async () => {
    await expect(upstream.query('', 'A')).rejects.toMatchObject({ code: 'ERR_UPSTREAM_BAD_NAME' })
    await expect(upstream.query('a..b', 'A')).rejects.toMatchObject({ code: 'ERR_UPSTREAM_BAD_NAME' })
  })
})

describe('upstream configuration', () => {
  it('parses resolv.conf nameserver lines', () => {
    const text = [
      '# generated by NetworkManager',
      'search example.com',
      'nameserver 127.0.0.53',
      'nameserver ::1 ; comment',
      'nameserver fe80::1%eth0',
      'nameserver not-an-ip',
      'options edns0 trust-ad',
    ].join('\n')
    expect(parseResolvConf(text)).toEqual([
      { host: '127.0.0.53', port: 53 },
      { host: '::1', port: 53 },
      { host: 'fe80::1%eth0', port: 53 },
    ])
    expect(parseResolvConf('')).toEqual([{ host: '127.0.0.1', port: 53 }])
  })

  it('parses --upstream-dns host:port', () => {
    expect(parseHostPort('10.0.0.1')).toEqual({ host: '10.0.0.1', port: 53 })
    expect(parseHostPort('10.0.0.1:5353')).toEqual({ host: '10.0.0.1', port: 5353 })
    expect(parseHostPort('[::1]:5353')).toEqual({ host: '::1', port: 5353 })
    expect(parseHostPort('::1')).toEqual({ host: '::1', port: 53 })
    for (const bad of ['dns.google', '10.0.0.1:0', '10.0.0.1:70000', '10.0.0.1:x', '[::1]:', '']) {
      expect(() => parseHostPort(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
    }
  })

  it('reads the host resolver from a resolv.conf file', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
    const { join } = await import('node:path')
    const { tmpdir } = await import('node:os')
    const dir = mkdtempSync(join(tmpdir(), 'keel-dns-'))
    try {
      writeFileSync(join(dir, 'resolv.conf'), 'nameserver 127.0.0.53\n')
      expect(UpstreamResolver.fromResolvConf({ path: join(dir, 'resolv.conf') }).servers).toEqual([{ host: '127.0.0.53', port: 53 }])
      expect(() => UpstreamResolver.fromResolvConf({ path: join(dir, 'missing') })).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
