import { randomBytes } from 'node:crypto'
import dgram from 'node:dgram'
import net from 'node:net'
import dns2 from 'dns2'
import type { DecideNameArgs, Decision, DecisionEvent } from '@keel/core'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startWorld, type World } from '../../../test/world/index.js'
import { formatIPv4, formatIPv6 } from './ip.js'
import { SyntheticPool } from './pool.js'
import { createDnsServer, listenDnsServer, type DnsServer } from './server.js'
import { dnsQuery, type DnsEndpoint } from './transport.js'
import { UpstreamResolver, type UpstreamQuerier } from './upstream.js'
import { EdeCode, RCode, RRType, encodeMessage, extendedErrors, parseMessage, RRClass, type DnsMessage } from './wire.js'

const AGENT = { name: 'coder', labels: { team: 'platform' } }

/** A stand-in for core's policy engine: exact names only, as a hostname route would be. */
const ALLOWED = new Set([
  'api.allowed.test',
  'www.allowed.test',
  'a.cdn.test',
  'b.cdn.test',
  'short-ttl.test',
  'alias.test',
  'v6only.test',
  'nx.test',
  'big.test',
  'servfail.test',
  'blackhole.test',
])
const decideName = ({ hostname }: DecideNameArgs): Decision =>
  ALLOWED.has(hostname)
    ? { verdict: 'allow', reason: 'allowed', route: 'world' }
    : { verdict: 'deny', reason: 'dns_name_denied', detail: 'no route allows this name' }

const addressOf = (msg: DnsMessage, i = 0): string => {
  const rr = msg.answers[i]
  if (!rr) throw new Error('no answer')
  return rr.data.length === 4 ? formatIPv4(rr.data) : formatIPv6(rr.data)
}

async function sendRawUdp(server: DnsEndpoint, bytes: Uint8Array, waitMs = 150): Promise<Buffer | undefined> {
  const s = dgram.createSocket('udp4')
  try {
    return await new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), waitMs)
      s.on('message', (m) => {
        clearTimeout(timer)
        resolve(m)
      })
      s.send(bytes, server.port, server.host)
    })
  } finally {
    s.close()
  }
}

/** Opens a TCP connection, writes `bytes`, collects everything until the server closes (or `waitMs`). */
async function rawTcp(server: DnsEndpoint, bytes: Uint8Array, waitMs = 500): Promise<{ data: Buffer; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const s = net.connect(server.port, server.host, () => s.write(bytes))
    const timer = setTimeout(() => {
      s.destroy()
      resolve({ data: Buffer.concat(chunks), closedByServer: false })
    }, waitMs)
    s.on('data', (c: Buffer) => chunks.push(c))
    s.on('close', () => {
      clearTimeout(timer)
      resolve({ data: Buffer.concat(chunks), closedByServer: true })
    })
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? undefined : reject(err)))
  })
}

const frame = (msg: Uint8Array): Buffer => Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg])
const query = (name: string, type: number = RRType.A, id = 0x4242, edns = true): Buffer =>
  encodeMessage({ header: { id, rd: true }, questions: [{ name, type, class: RRClass.IN }], ...(edns ? { edns: {} } : {}) })

describe('keel DNS server', () => {
  let world: World
  let clock = 1_700_000_000_000
  let upstream: UpstreamResolver
  let pool: SyntheticPool
  let events: DecisionEvent[]
  let server: DnsServer & { host: string; port: number }
  let ep: DnsEndpoint

  beforeAll(async () => {
    world = await startWorld({ dnsOnly: true })
  })
  afterAll(async () => {
    await world?.stop()
  })
  beforeEach(async () => {
    world.dns.reset()
    upstream = new UpstreamResolver({ servers: { host: '127.0.0.1', port: world.dnsPort }, now: () => clock, timeoutMs: 400 })
    pool = new SyntheticPool()
    events = []
    server = await listenDnsServer({ agent: AGENT, decideName, pool, upstream, sink: (e) => events.push(e), now: () => clock })
    ep = { host: server.host, port: server.port }
  })
  afterEach(async () => {
    await server.close()
  })

  it('answers allowed names with synthetic A and AAAA addresses bound to the name', async () => {
    const a = await dnsQuery(ep, 'api.allowed.test', RRType.A)
    expect(a.rcode).toBe(RCode.NOERROR)
    expect(a.header).toMatchObject({ qr: true, ra: true, rd: true, aa: false })
    expect(a.answers).toHaveLength(1)
    const v4 = addressOf(a)
    expect(v4).toMatch(/^198\.1[89]\./)
    expect(a.answers[0]?.ttl).toBe(60) // the world's TTL, inside [1, 300]
    const aaaa = await dnsQuery(ep, 'api.allowed.test', RRType.AAAA)
    const v6 = addressOf(aaaa)
    expect(pool.nameFor(v4)).toBe('api.allowed.test')
    expect(pool.nameFor(v6)).toBe('api.allowed.test')
    expect(pool.nameFor(`::ffff:${v4}`)).toBe('api.allowed.test')
    expect(pool.lookup('api.allowed.test')).toEqual({ name: 'api.allowed.test', ipv4: v4, ipv6: v6 })
    expect(world.dns.count('api.allowed.test')).toBe(2)
    expect(events).toEqual([
      { time: clock, kind: 'dns', agent: 'coder', name: 'api.allowed.test', address: v4, protocol: 'UDP', verdict: 'allow', reason: 'allowed', route: 'world', detail: 'qtype=A' },
      { time: clock, kind: 'dns', agent: 'coder', name: 'api.allowed.test', address: v6, protocol: 'UDP', verdict: 'allow', reason: 'allowed', route: 'world', detail: 'qtype=AAAA' },
    ])
  })

  it('keeps one address per name, and gives names that share a real IP different ones', async () => {
    const first = addressOf(await dnsQuery(ep, 'a.cdn.test'))
    expect(addressOf(await dnsQuery(ep, 'A.CDN.Test.'))).toBe(first)
    expect(addressOf(await dnsQuery(ep, 'a.cdn.test', RRType.A, { transport: 'tcp' }))).toBe(first)
    const other = addressOf(await dnsQuery(ep, 'b.cdn.test')) // same real address 127.0.0.4
    expect(other).not.toBe(first)
    expect(pool.nameFor(first)).toBe('a.cdn.test')
    expect(pool.nameFor(other)).toBe('b.cdn.test')
  })

  it('denies with NXDOMAIN + EDE 15 (Blocked) and the reason, and never asks upstream', async () => {
    const r = await dnsQuery(ep, 'evil.test', RRType.A)
    expect(r.rcode).toBe(RCode.NXDOMAIN)
    expect(r.answers).toEqual([])
    expect(extendedErrors(r)).toEqual([{ infoCode: EdeCode.BLOCKED, text: 'dns_name_denied' }])
    // Without EDNS in the query there is no OPT (RFC 6891 §7), but still NXDOMAIN.
    const plain = await dnsQuery(ep, 'other.test', RRType.AAAA, { edns: false })
    expect(plain.rcode).toBe(RCode.NXDOMAIN)
    expect(plain.edns).toBeUndefined()
    expect(world.dns.queries).toEqual([])
    expect(upstream.counters.sent).toBe(0)
    expect(server.counters.denied).toBe(2)
    expect(events[0]).toMatchObject({ kind: 'dns', name: 'evil.test', verdict: 'deny', reason: 'dns_name_denied', protocol: 'UDP' })
    expect(pool.size).toBe(0)
  })

  it('stops DNS tunnelling: random subdomains of an allowed name are denied locally, none reach upstream', async () => {
    const types = [RRType.A, RRType.AAAA, RRType.TXT, RRType.MX, RRType.HTTPS, RRType.SRV, RRType.ANY]
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => {
        const chunk = randomBytes(36).toString('hex').slice(0, 63) // 63-char "data" label
        const name = `${chunk}.${randomBytes(8).toString('hex')}.${i}.api.allowed.test`
        return dnsQuery(ep, name, types[i % types.length], { transport: i % 5 === 0 ? 'tcp' : 'udp' })
      }),
    )
    for (const r of replies) {
      expect(r.rcode).toBe(RCode.NXDOMAIN)
      expect(extendedErrors(r)[0]?.text).toBe('dns_name_denied')
    }
    expect(world.dns.queries).toEqual([])
    expect(upstream.counters.sent).toBe(0)
    expect(pool.size).toBe(0)
    expect(server.counters.denied).toBe(200)
  })

  it('never forwards other query types for allowed names (TXT, HTTPS, MX, ANY …)', async () => {
    for (const type of [RRType.TXT, RRType.HTTPS, RRType.SVCB, RRType.MX, RRType.ANY, RRType.CNAME, RRType.NS]) {
      const r = await dnsQuery(ep, 'api.allowed.test', type)
      expect(r.rcode, String(type)).toBe(RCode.NOERROR)
      expect(r.answers).toEqual([])
      expect(extendedErrors(r)).toEqual([{ infoCode: EdeCode.BLOCKED, text: 'dns_query_type_denied' }])
    }
    expect(world.dns.queries).toEqual([])
    expect(events.every((e) => e.verdict === 'deny' && e.reason === 'dns_query_type_denied')).toBe(true)
  })

  it('mirrors upstream: NXDOMAIN stays NXDOMAIN, no AAAA stays NODATA, CNAMEs are flattened', async () => {
    const nx = await dnsQuery(ep, 'nx.test')
    expect(nx.rcode).toBe(RCode.NXDOMAIN)
    expect(extendedErrors(nx)).toEqual([])
    const noA = await dnsQuery(ep, 'v6only.test', RRType.A)
    expect(noA.rcode).toBe(RCode.NOERROR)
    expect(noA.answers).toEqual([])
    const v6 = await dnsQuery(ep, 'v6only.test', RRType.AAAA)
    expect(pool.nameFor(addressOf(v6))).toBe('v6only.test')
    const alias = await dnsQuery(ep, 'alias.test')
    expect(alias.answers.map((r) => r.type)).toEqual([RRType.A]) // no CNAME leaks to the agent
    expect(pool.nameFor(addressOf(alias))).toBe('alias.test')
    expect(pool.lookup('nx.test')).toBeUndefined() // nothing bound for names that do not exist
    const big = await dnsQuery(ep, 'big.test') // upstream needed TCP; the agent gets one address
    expect(big.answers).toHaveLength(1)
  })

  it('honours upstream TTLs: a short TTL is asked again after it expires', async () => {
    const r1 = await dnsQuery(ep, 'short-ttl.test')
    expect(r1.answers[0]?.ttl).toBe(1)
    await dnsQuery(ep, 'short-ttl.test')
    expect(world.dns.count('short-ttl.test', 'A')).toBe(1) // cached
    clock += 1100
    const r3 = await dnsQuery(ep, 'short-ttl.test')
    expect(world.dns.count('short-ttl.test', 'A')).toBe(2)
    expect(addressOf(r3)).toBe(addressOf(r1)) // same synthetic address for the sandbox's life
  })

  it('serves TCP: several pipelined queries on one connection, answered by ID', async () => {
    const names = ['api.allowed.test', 'www.allowed.test', 'evil.test', 'a.cdn.test']
    const bytes = Buffer.concat(names.map((n, i) => frame(query(n, RRType.A, 100 + i))))
    const { data } = await rawTcp(ep, bytes, 800)
    const replies: DnsMessage[] = []
    for (let off = 0; off + 2 <= data.length && replies.length < 10; ) {
      const len = data.readUInt16BE(off)
      replies.push(parseMessage(data.subarray(off + 2, off + 2 + len)))
      off += 2 + len
    }
    expect(replies.map((r) => r.header.id).sort()).toEqual([100, 101, 102, 103])
    const byId = new Map(replies.map((r) => [r.header.id, r]))
    expect(byId.get(102)?.rcode).toBe(RCode.NXDOMAIN)
    expect(pool.nameFor(addressOf(byId.get(101)!))).toBe('www.allowed.test')
    expect(events.filter((e) => e.protocol === 'TCP')).toHaveLength(4)
  })

  it('drops malformed UDP packets without answering and keeps serving', async () => {
    const header = (qd: number, ar = 0): number[] => [0x12, 0x34, 0x01, 0x00, 0, qd, 0, 0, 0, 0, 0, ar]
    const bad: number[][] = [
      [0x12, 0x34, 0x01], // truncated header
      [...header(1), 0x3f, 0x61, 0x62, 0x63], // label length past the end
      [...header(1), 0x45, 0x61, 0, 0, 1, 0, 1], // reserved label type
      [...header(1), 0xc0, 0x0c, 0, 1, 0, 1], // compression pointer to itself
      [...header(1), 1, 0x61, 0xc0, 0x0c, 0, 1, 0, 1], // two-step compression loop
      [0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0x61, 0, 0, 1, 0, 1], // huge counts
      [...header(1, 0xff), 1, 0x61, 0, 0, 1, 0, 1], // claims 255 additional records
      [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1], // a response (QR=1)
      [...header(1), 1, 0x61, 0, 0, 1, 0, 1, 0xde, 0xad], // trailing bytes
    ]
    const replies = await Promise.all(bad.map((b) => sendRawUdp(ep, Buffer.from(b))))
    expect(replies).toEqual(bad.map(() => undefined))
    expect(server.counters.malformed).toBe(bad.length)
    const good = await dnsQuery(ep, 'api.allowed.test')
    expect(good.rcode).toBe(RCode.NOERROR)
    expect(world.dns.queries.map((q) => q.name)).toEqual(['api.allowed.test'])
  })

  it('closes TCP connections that send malformed input, and keeps serving others', async () => {
    const garbage = frame(Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1]))
    const r1 = await rawTcp(ep, garbage)
    expect(r1).toEqual({ data: Buffer.alloc(0), closedByServer: true })
    const tooShort = await rawTcp(ep, Buffer.from([0, 3, 1, 2, 3]))
    expect(tooShort.closedByServer).toBe(true)
    const tooLong = await rawTcp(ep, Buffer.concat([Buffer.from([0x20, 0x00]), Buffer.alloc(100)]))
    expect(tooLong.closedByServer).toBe(true)
    // A good query followed by garbage on the same connection: closed (the good one may be answered first).
    const mixed = await rawTcp(ep, Buffer.concat([frame(query('api.allowed.test')), garbage]))
    expect(mixed.closedByServer).toBe(true)
    expect(server.counters.malformed).toBe(4)
    expect((await dnsQuery(ep, 'www.allowed.test', RRType.A, { transport: 'tcp' })).rcode).toBe(RCode.NOERROR)
  })

  it('answers FORMERR, NOTIMP, REFUSED and BADVERS for well-formed but unsupported queries', async () => {
    const ask = async (bytes: Uint8Array): Promise<DnsMessage> => parseMessage((await sendRawUdp(ep, bytes, 1000))!)
    const noQuestion = await ask(encodeMessage({ header: { id: 1 } }))
    expect(noQuestion.rcode).toBe(RCode.FORMERR)
    const two = await ask(
      encodeMessage({
        header: { id: 2 },
        questions: [
          { name: 'api.allowed.test', type: RRType.A, class: RRClass.IN },
          { name: 'evil.test', type: RRType.A, class: RRClass.IN },
        ],
      }),
    )
    expect(two.rcode).toBe(RCode.FORMERR)
    const notify = await ask(encodeMessage({ header: { id: 3, opcode: 4 }, questions: [{ name: 'x.test', type: RRType.SOA, class: RRClass.IN }] }))
    expect(notify.rcode).toBe(RCode.NOTIMP)
    const chaos = await ask(encodeMessage({ header: { id: 4 }, questions: [{ name: 'version.bind', type: RRType.TXT, class: 3 }] }))
    expect(chaos.rcode).toBe(RCode.REFUSED)
    const v1 = query('api.allowed.test')
    v1[v1.length - 5] = 1 // OPT (no options) ends TTL(4) RDLEN(2); TTL's 2nd byte is the EDNS version
    const badvers = await ask(v1)
    expect(badvers.rcode).toBe(RCode.BADVERS)
    expect(world.dns.queries).toEqual([])
  })

  it('denies names that are not plain hostnames without asking the policy', async () => {
    let asked = 0
    const s = await listenDnsServer({
      agent: AGENT,
      decideName: (a) => (asked++, decideName(a)),
      pool,
      upstream,
    })
    try {
      for (const name of ['*.allowed.test', 'a\\.b.allowed.test', '\\000.allowed.test', '.']) {
        const r = await dnsQuery({ host: s.host, port: s.port }, name)
        expect(r.rcode, name).toBe(RCode.NXDOMAIN)
      }
      expect(asked).toBe(0)
    } finally {
      await s.close()
    }
  })

  it('answers PTR for synthetic addresses from the pool', async () => {
    const v4 = addressOf(await dnsQuery(ep, 'api.allowed.test'))
    const rev = v4.split('.').reverse().join('.') + '.in-addr.arpa'
    const r = await dnsQuery(ep, rev, RRType.PTR)
    expect(r.rcode).toBe(RCode.NOERROR)
    expect(Buffer.from(r.answers[0]!.data).subarray(1, 4).toString()).toBe('api')
    const unbound = await dnsQuery(ep, '200.200.19.198.in-addr.arpa', RRType.PTR)
    expect(unbound.rcode).toBe(RCode.NXDOMAIN)
    const real = await dnsQuery(ep, '1.0.0.127.in-addr.arpa', RRType.PTR) // not synthetic: policy → denied
    expect(extendedErrors(real)[0]?.text).toBe('dns_name_denied')
    expect(world.dns.queries.map((q) => q.type)).toEqual(['A']) // only the forward lookup went upstream
  })

  it('fails closed when the policy engine throws', async () => {
    const s = await listenDnsServer({
      agent: AGENT,
      decideName: () => {
        throw new Error('boom')
      },
      pool,
      upstream,
    })
    try {
      const r = await dnsQuery({ host: s.host, port: s.port }, 'api.allowed.test')
      expect(r.rcode).toBe(RCode.SERVFAIL)
      expect(extendedErrors(r)[0]?.text).toBe('internal_error')
      expect(world.dns.queries).toEqual([])
    } finally {
      await s.close()
    }
  })

  it('answers SERVFAIL when the pool is exhausted', async () => {
    const s = await listenDnsServer({ agent: AGENT, decideName, pool: new SyntheticPool({ capacity: 1 }), upstream })
    try {
      const e = { host: s.host, port: s.port }
      expect((await dnsQuery(e, 'api.allowed.test')).rcode).toBe(RCode.NOERROR)
      expect((await dnsQuery(e, 'www.allowed.test')).rcode).toBe(RCode.SERVFAIL)
      expect((await dnsQuery(e, 'api.allowed.test', RRType.AAAA)).rcode).toBe(RCode.NOERROR)
    } finally {
      await s.close()
    }
  })

  it('is interoperable with dns2 as a client', async () => {
    const resolve = dns2.UDPClient({ dns: ep.host, port: ep.port })
    const r = await resolve('api.allowed.test', 'A')
    expect(r.answers[0]).toMatchObject({ name: 'api.allowed.test', address: addressOf(await dnsQuery(ep, 'api.allowed.test')) })
    const tcp = dns2.TCPClient({ dns: ep.host, port: ep.port })
    const d = await tcp('evil.test', 'A')
    expect(d.header.rcode).toBe(RCode.NXDOMAIN)
  })

  it('closes idle TCP connections', async () => {
    const s = await listenDnsServer({ agent: AGENT, decideName, pool, upstream, tcpIdleTimeoutMs: 150 })
    try {
      const t0 = performance.now()
      const r = await rawTcp({ host: s.host, port: s.port }, Buffer.alloc(0), 2000)
      expect(r.closedByServer).toBe(true)
      expect(performance.now() - t0).toBeLessThan(1000)
    } finally {
      await s.close()
    }
  })
})

describe('keel DNS server with upstream down', () => {
  const closeAll: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const c of closeAll.splice(0)) await c()
  })

  async function serverWith(upstream: UpstreamQuerier): Promise<DnsEndpoint> {
    const s = await listenDnsServer({ agent: AGENT, decideName, pool: new SyntheticPool(), upstream })
    closeAll.push(() => s.close())
    return { host: s.host, port: s.port }
  }

  it('answers SERVFAIL + EDE 23 quickly when nothing listens upstream', async () => {
    const probe = dgram.createSocket('udp4')
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r))
    const port = probe.address().port
    await new Promise<void>((r) => probe.close(r))
    const ep = await serverWith(new UpstreamResolver({ servers: { host: '127.0.0.1', port } }))
    const t0 = performance.now()
    const r = await dnsQuery(ep, 'api.allowed.test', RRType.A, { timeoutMs: 5000 })
    expect(performance.now() - t0).toBeLessThan(1000)
    expect(r.rcode).toBe(RCode.SERVFAIL)
    expect(extendedErrors(r)).toEqual([{ infoCode: EdeCode.NETWORK_ERROR, text: 'upstream_dns_failed' }])
  })

  it('answers SERVFAIL + EDE 22 well under 3 s when upstream never answers', async () => {
    const silent = dgram.createSocket('udp4')
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r))
    let received = 0
    silent.on('message', () => received++)
    closeAll.push(() => new Promise<void>((r) => silent.close(() => r())))
    // Production defaults: 1 s per attempt, 2 attempts.
    const ep = await serverWith(new UpstreamResolver({ servers: { host: '127.0.0.1', port: silent.address().port } }))
    const t0 = performance.now()
    const r = await dnsQuery(ep, 'api.allowed.test', RRType.A, { timeoutMs: 5000 })
    const ms = performance.now() - t0
    expect(ms).toBeLessThan(2600)
    expect(r.rcode).toBe(RCode.SERVFAIL)
    expect(extendedErrors(r)).toEqual([{ infoCode: EdeCode.NO_REACHABLE_AUTHORITY, text: 'upstream_dns_failed' }])
    expect(received).toBe(2)
  })

  it('never throws out of the socket path, even if the upstream object misbehaves', async () => {
    const ep = await serverWith({
      query: () => {
        throw new TypeError('not even a promise')
      },
    })
    const r = await dnsQuery(ep, 'api.allowed.test')
    expect(r.rcode).toBe(RCode.SERVFAIL)
  })
})

describe('createDnsServer with handed-in sockets', () => {
  it('serves on sockets bound elsewhere (as the netns child hands them over) and closes them', async () => {
    const udp = dgram.createSocket('udp4')
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r))
    const udp6 = dgram.createSocket({ type: 'udp6', ipv6Only: true })
    await new Promise<void>((r) => udp6.bind(0, '::1', r))
    const tcp = net.createServer({ allowHalfOpen: true })
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r))
    const tcp6 = net.createServer({ allowHalfOpen: true })
    await new Promise<void>((r) => tcp6.listen(0, '::1', r))
    const fake: UpstreamQuerier = { query: async () => ({ rcode: 0, addresses: ['127.0.0.2'], ttl: 30, cached: false }) }
    const s = createDnsServer({ udp: [udp, udp6], tcp: [tcp, tcp6], agent: AGENT, decideName, pool: new SyntheticPool(), upstream: fake })
    const u = await dnsQuery({ host: '127.0.0.1', port: udp.address().port }, 'api.allowed.test')
    const t = await dnsQuery({ host: '127.0.0.1', port: (tcp.address() as net.AddressInfo).port }, 'api.allowed.test', RRType.A, { transport: 'tcp' })
    const u6 = await dnsQuery({ host: '::1', port: udp6.address().port }, 'api.allowed.test')
    const t6 = await dnsQuery({ host: '::1', port: (tcp6.address() as net.AddressInfo).port }, 'api.allowed.test', RRType.A, { transport: 'tcp' })
    expect(new Set([u, t, u6, t6].map((m) => addressOf(m))).size).toBe(1)
    expect(u.answers[0]?.ttl).toBe(30)
    await s.close()
    expect(tcp.listening || tcp6.listening).toBe(false)
    expect(() => udp.address()).toThrow()
    expect(() => udp6.address()).toThrow()
  })

  it('handle() answers raw queries directly', async () => {
    const s = createDnsServer({
      agent: AGENT,
      decideName,
      pool: new SyntheticPool(),
      upstream: { query: async () => ({ rcode: 0, addresses: ['127.0.0.2'], ttl: 100_000, cached: false }) },
      maxAnswerTtl: 120,
    })
    const out = await s.handle(query('api.allowed.test'), 'UDP', 512)
    expect(parseMessage(out!).answers[0]?.ttl).toBe(120)
    expect(await s.handle(Buffer.from([1, 2, 3]), 'UDP')).toBeUndefined()
    // Random input (and random mutations of a good query) never rejects and never hangs.
    const good = query('api.allowed.test')
    for (let i = 0; i < 3000; i++) {
      const bytes = i % 2 === 0 ? randomBytes(1 + (i % 90)) : Buffer.from(good)
      if (i % 2 === 1) for (let k = 0; k < 3; k++) bytes[(i * 7 + k * 13) % bytes.length] = (i * 31 + k) & 0xff
      const out = await s.handle(bytes, 'TCP')
      if (out) expect(() => parseMessage(out)).not.toThrow()
    }
    await s.close()
  })
})
