/**
 * Fuzz targets for keel's parsers of hostile input, shared by the corpus replay and the
 * property runs in fuzz.test.ts.
 *
 * Each target takes bytes and throws only when an invariant breaks (a thrown error
 * from the parser itself counts as a break, except DnsWireError from parseMessage, which
 * is its documented way of saying "malformed"). The invariants are the security ones:
 *
 * - **Totality and bounds**: every input maps to a result, in bounded time, with outputs
 *   no larger than the input warrants.
 * - **Prefix finality** (ClientHello, HTTP head, first-bytes classification): keel's peek
 *   classifies the bytes read so far and stops at the first answer that is not
 *   "incomplete". If a prefix could be classified differently from the whole (say
 *   "opaque" for the start of an HTTP request), a client dribbling bytes could slip past
 *   the SNI/Host check. So a prefix's final answer must be the whole's.
 * - **DNS**: parse → encode → parse is stable; and the sandbox resolver never asks
 *   upstream for a name the policy denies, always answers (or drops) within its size
 *   limit, with the query's ID.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadPolicy, type AgentIdentity, type CompiledPolicy } from '@keel/core'
import {
  createDnsServer,
  encodeMessage,
  parseMessage,
  SyntheticPool,
  UpstreamDnsError,
  type DnsMessage,
  type DnsServer,
} from '@keel/dns'
import { classifyFirstBytes, isValidSniHostname, parseClientHello, parseRequestHead } from '@keel/proxy'
import { ROOT } from '../sandbox/harness.js'

export type TargetName = 'client-hello' | 'http-head' | 'first-bytes' | 'dns' | 'dns-server'

export class InvariantError extends Error {
  override readonly name = 'InvariantError'
}

function invariant(ok: unknown, message: string): asserts ok {
  if (!ok) throw new InvariantError(message)
}

/** Slowest single call allowed, ms (the parsers are linear in small inputs; this catches a hang or a blow-up). */
export const MAX_CALL_MS = 250

function timed<T>(what: string, f: () => T): T {
  const started = performance.now()
  const out = f()
  const ms = performance.now() - started
  invariant(ms < MAX_CALL_MS, `${what} took ${ms.toFixed(1)} ms`)
  return out
}

/** Cut points for the prefix checks: all of them for short inputs, a sample for long ones. */
function cutPoints(length: number): number[] {
  if (length <= 96) return Array.from({ length }, (_, i) => i)
  const points = new Set<number>([0, 1, 2, 3, 4, 5, 8, 9, 43, 44, length - 2, length - 1])
  for (let i = 0; i < 48; i++) points.add(Math.floor((i * length) / 48))
  return [...points].filter((p) => p >= 0 && p < length)
}

// ---------------------------------------------------------------- TLS ClientHello

const HELLO_KINDS = new Set(['incomplete', 'not-tls', 'malformed', 'client-hello'])

function helloSummary(buf: Buffer): string {
  const r = parseClientHello(buf)
  if (r.kind === 'client-hello') return `client-hello sni=${r.sni ?? '-'} ech=${r.ech}`
  return r.kind
}

export function checkClientHello(buf: Buffer): void {
  const r = timed('parseClientHello', () => parseClientHello(buf))
  invariant(HELLO_KINDS.has(r.kind), `unknown kind ${r.kind}`)
  if (r.kind === 'incomplete' && r.need !== undefined) invariant(r.need > buf.length, `need ${r.need} <= length ${buf.length}`)
  if (r.kind === 'client-hello') {
    invariant(r.consumed <= buf.length, 'consumed past the end')
    invariant(r.helloLength <= 65_536, 'hello over the cap')
    if (r.sni !== undefined) invariant(isValidSniHostname(Buffer.from(r.sni, 'latin1')), `invalid SNI accepted: ${JSON.stringify(r.sni)}`)
    invariant(r.extensions.length * 4 <= r.helloLength, 'more extensions than bytes')
  }
  if (r.kind === 'malformed') invariant(typeof r.detail === 'string' && r.detail.length < 200, 'detail')
  const whole = helloSummary(buf)
  for (const cut of cutPoints(buf.length)) {
    const prefix = parseClientHello(buf.subarray(0, cut))
    if (prefix.kind === 'incomplete') continue
    const p = helloSummary(buf.subarray(0, cut))
    invariant(p === whole, `prefix of ${cut} bytes says ${p}, the whole says ${whole}`)
  }
}

// ---------------------------------------------------------------- HTTP request head

const HEAD_KINDS = new Set(['incomplete', 'not-http', 'malformed', 'oversize', 'request'])

function headSummary(buf: Buffer): string {
  const r = parseRequestHead(buf)
  if (r.kind === 'request') return `request ${r.method} ${r.target} host=${r.host ?? '-'} target=${r.targetHost ?? '-'} len=${r.headLength}`
  return r.kind
}

export function checkHttpHead(buf: Buffer): void {
  const r = timed('parseRequestHead', () => parseRequestHead(buf))
  invariant(HEAD_KINDS.has(r.kind), `unknown kind ${r.kind}`)
  if (r.kind === 'request') {
    invariant(r.headLength <= buf.length, 'head past the end')
    invariant(r.headLength <= 16_384, 'head over the cap')
    invariant(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(r.method), `method ${JSON.stringify(r.method)}`)
    for (const h of [r.host, r.targetHost]) {
      if (h === undefined || h === '') continue
      invariant(/^([a-z0-9._~-]+|\[[0-9a-f:.]+\])$/.test(h) && !h.endsWith('.'), `host not normalized: ${JSON.stringify(h)}`)
    }
    invariant(!/[\r\n]/.test(r.target) && r.headers.every(([n, v]) => !/[\r\n:]/.test(n) && !/[\r\n]/.test(v)), 'CR/LF in a parsed field')
    invariant(r.headers.filter(([n]) => n.toLowerCase() === 'host').length <= 1, 'two Host headers accepted')
  }
  const whole = headSummary(buf)
  for (const cut of cutPoints(buf.length)) {
    if (parseRequestHead(buf.subarray(0, cut)).kind === 'incomplete') continue
    const p = headSummary(buf.subarray(0, cut))
    invariant(p === whole, `prefix of ${cut} bytes says ${p}, the whole says ${whole}`)
  }
}

// ---------------------------------------------------------------- first bytes (what the peek decides on)

function firstSummary(buf: Buffer): string {
  const r = classifyFirstBytes(buf)
  switch (r.kind) {
    case 'tls':
      return `tls sni=${r.hello.sni ?? '-'} ech=${r.hello.ech}`
    case 'http':
      return `http ${r.request.method} host=${r.request.host ?? '-'} target=${r.request.targetHost ?? '-'}`
    case 'malformed':
      return `malformed ${r.protocol}`
    default:
      return r.kind
  }
}

export function checkFirstBytes(buf: Buffer): void {
  timed('classifyFirstBytes', () => classifyFirstBytes(buf))
  const whole = firstSummary(buf)
  for (const cut of cutPoints(buf.length)) {
    if (classifyFirstBytes(buf.subarray(0, cut)).kind === 'incomplete') continue
    const p = firstSummary(buf.subarray(0, cut))
    invariant(p === whole, `the peek would stop after ${cut} bytes with "${p}", but the whole is "${whole}"`)
  }
}

// ---------------------------------------------------------------- DNS wire codec

function messageSummary(m: DnsMessage): string {
  const records = (list: DnsMessage['answers']) => list.map((r) => [r.name, r.type, r.class, r.ttl, Buffer.from(r.data).toString('hex')])
  return JSON.stringify({
    header: { ...m.header, rcode: undefined },
    rcode: m.rcode,
    questions: m.questions,
    answers: records(m.answers),
    authorities: records(m.authorities),
    additionals: records(m.additionals),
    edns: m.edns ? { udp: m.edns.udpPayloadSize, dnssecOk: m.edns.dnssecOk, options: m.edns.options.map((o) => [o.code, Buffer.from(o.data).toString('hex')]) } : null,
  })
}

export function checkDnsParse(buf: Buffer): void {
  let m: DnsMessage
  try {
    m = timed('parseMessage', () => parseMessage(buf))
  } catch (e) {
    if (e instanceof InvariantError) throw e
    invariant((e as Error).name === 'DnsWireError', `parseMessage threw ${(e as Error).name}: ${(e as Error).message}`)
    return
  }
  for (const q of m.questions) invariant(q.name.length <= 4 * 255, 'name text too long')
  // parse → encode → parse is stable (EDNS version 0 only: the encoder writes version 0).
  if (m.edns && m.edns.version !== 0) return
  let again: DnsMessage
  try {
    const wire = encodeMessage({
      header: m.header,
      rcode: m.rcode,
      questions: m.questions,
      answers: m.answers,
      authorities: m.authorities,
      additionals: m.additionals,
      ...(m.edns ? { edns: { udpPayloadSize: m.edns.udpPayloadSize, dnssecOk: m.edns.dnssecOk, options: m.edns.options } } : {}),
    })
    again = parseMessage(wire)
  } catch (e) {
    throw new InvariantError(`a parsed message does not re-encode: ${(e as Error).message}`)
  }
  invariant(messageSummary(again) === messageSummary(m), `encode/parse changed the message:\n${messageSummary(m)}\n${messageSummary(again)}`)
}

// ---------------------------------------------------------------- the sandbox's DNS server

export interface DnsServerHarness {
  server: DnsServer
  policy: CompiledPolicy
  agent: AgentIdentity
  /** Names the fake upstream was asked for. */
  upstreamAsked: string[]
}

/** The sandbox resolver with the fake world's policy and an instant fake upstream (no sockets). */
export function dnsServerHarness(): DnsServerHarness {
  const path = join(ROOT, 'examples/fake-world.yaml')
  const policy = loadPolicy([{ path, text: readFileSync(path, 'utf8') }])
  const agent = policy.agent('test-agent', {})
  const upstreamAsked: string[] = []
  let n = 0
  const server = createDnsServer({
    agent,
    decideName: (args) => policy.decideName(args),
    pool: new SyntheticPool({ capacity: 4096 }),
    upstream: {
      async query(name, type) {
        upstreamAsked.push(name)
        // A spread of upstream behaviours: answers, NXDOMAIN, NODATA, failures.
        switch (n++ % 5) {
          case 0:
            throw new UpstreamDnsError('ERR_UPSTREAM_TIMEOUT', 'fake timeout')
          case 1:
            return { rcode: 3, addresses: [], ttl: 5, cached: false }
          case 2:
            return { rcode: 0, addresses: [], ttl: 5, cached: false }
          default:
            return { rcode: 0, addresses: [type === 'A' ? '127.0.0.2' : '::1'], ttl: 60 + n, cached: false }
        }
      },
    },
    now: () => Date.UTC(2026, 0, 1),
  })
  return { server, policy, agent, upstreamAsked }
}

export async function checkDnsServer(h: DnsServerHarness, buf: Buffer): Promise<void> {
  for (const protocol of ['UDP', 'TCP'] as const) {
    const asked = h.upstreamAsked.length
    const maxBytes = protocol === 'UDP' ? 4096 : undefined
    const started = performance.now()
    let out: Buffer | undefined
    try {
      out = await h.server.handle(buf, protocol, maxBytes)
    } catch (e) {
      throw new InvariantError(`handle() rejected: ${(e as Error).message}`)
    }
    const ms = performance.now() - started
    invariant(ms < MAX_CALL_MS, `handle() took ${ms.toFixed(1)} ms`)
    for (const name of h.upstreamAsked.slice(asked)) {
      const d = h.policy.decideName({ agent: h.agent, hostname: name, now: Date.UTC(2026, 0, 1) })
      invariant(d.verdict === 'allow', `the upstream was asked for ${JSON.stringify(name)}, which the policy denies`)
    }
    if (out === undefined) continue
    let reply: DnsMessage
    try {
      reply = parseMessage(out)
    } catch (e) {
      throw new InvariantError(`the reply does not parse: ${(e as Error).message}`)
    }
    invariant(reply.header.qr, 'reply without QR')
    invariant(buf.length >= 2 && reply.header.id === buf.readUInt16BE(0), 'reply ID differs from the query ID')
    if (protocol === 'UDP') {
      // RFC 6891: at most the client's advertised size (512 without EDNS), never more than keel's 4096.
      let limit = 512
      try {
        const q = parseMessage(buf)
        if (q.edns) limit = Math.max(512, Math.min(4096, q.edns.udpPayloadSize))
      } catch {
        // a reply to a query keel could not parse would be a bug of its own (checked below)
      }
      invariant(out.length <= limit, `UDP reply of ${out.length} bytes over the ${limit}-byte limit`)
    }
    invariant(out.length <= 65_535, 'reply over 64 KiB')
  }
}

// ---------------------------------------------------------------- seeds (valid inputs to mutate)

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n & 0xffff)
  return b
}

function ext(type: number, data: Buffer): Buffer {
  return Buffer.concat([u16(type), u16(data.length), data])
}

export function clientHello(options: { sni?: string; alpn?: string[]; ech?: boolean; split?: number; padding?: number } = {}): Buffer {
  const exts: Buffer[] = []
  if (options.sni !== undefined) {
    const name = Buffer.from(options.sni, 'latin1')
    const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name])
    exts.push(ext(0, Buffer.concat([u16(entry.length), entry])))
  }
  if (options.alpn) {
    const names = Buffer.concat(options.alpn.map((a) => Buffer.concat([Buffer.from([a.length]), Buffer.from(a)])))
    exts.push(ext(0x10, Buffer.concat([u16(names.length), names])))
  }
  exts.push(ext(0x2b, Buffer.from([4, 3, 4, 3, 3])))
  exts.push(ext(0x0a, Buffer.from([0, 4, 0, 0x1d, 0, 0x17])))
  if (options.ech) exts.push(ext(0xfe0d, Buffer.from([0, 0, 1, 0, 1, 2])))
  if (options.padding) exts.push(ext(0x15, Buffer.alloc(options.padding)))
  const extBytes = Buffer.concat(exts)
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([32]),
    Buffer.alloc(32, 9),
    u16(4),
    Buffer.from([0x13, 0x01, 0x13, 0x02]),
    Buffer.from([1, 0]),
    u16(extBytes.length),
    extBytes,
  ])
  const hs = Buffer.concat([Buffer.from([1, 0, (body.length >> 8) & 0xff, body.length & 0xff]), body])
  const split = options.split ?? hs.length
  const records: Buffer[] = []
  for (let i = 0; i < hs.length; i += split) {
    const frag = hs.subarray(i, i + split)
    records.push(Buffer.concat([Buffer.from([0x16, 3, 1]), u16(frag.length), frag]))
  }
  return Buffer.concat(records)
}

export const HELLO_SEEDS: Buffer[] = [
  clientHello({ sni: 'api.allowed.test', alpn: ['h2', 'http/1.1'] }),
  clientHello({ sni: 'a.cdn.test' }),
  clientHello({ sni: 'api.allowed.test', ech: true }),
  clientHello({ sni: 'api.allowed.test', split: 40 }),
  clientHello({}),
  clientHello({ sni: 'x'.repeat(63) + '.test', padding: 300 }),
]

export const HEAD_SEEDS: Buffer[] = [
  'GET / HTTP/1.1\r\nHost: plain.test\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\n\r\n',
  'POST /upload?x=1 HTTP/1.1\r\nHost: api.allowed.test:80\r\nContent-Length: 3\r\n\r\nabc',
  'GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n',
  'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n',
  '\r\nHEAD /x HTTP/1.0\r\n\r\n',
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'))

function dnsQuery(name: string, type: number, options: { edns?: boolean; id?: number } = {}): Buffer {
  const wire = encodeMessage({
    header: { id: options.id ?? 0x1234, rd: true },
    questions: [{ name, type, class: 1 }],
    ...(options.edns === false ? {} : { edns: { udpPayloadSize: 1232 } }),
  })
  return wire
}

export const DNS_SEEDS: Buffer[] = [
  dnsQuery('api.allowed.test', 1),
  dnsQuery('api.allowed.test', 28, { edns: false }),
  dnsQuery('a.cdn.test', 16),
  dnsQuery('other.test', 1),
  dnsQuery('1.0.18.198.in-addr.arpa', 12),
  dnsQuery('zz0123456789abcdefghij.api.allowed.test', 1),
  encodeMessage({
    header: { id: 7, qr: true, aa: true, rd: true, ra: true },
    questions: [{ name: 'alias.test', type: 1, class: 1 }],
    answers: [
      { name: 'alias.test', type: 5, ttl: 60, data: Buffer.from('\x03api\x07allowed\x04test\x00', 'latin1') },
      { name: 'api.allowed.test', type: 1, ttl: 60, data: Buffer.from([127, 0, 0, 2]) },
    ],
    authorities: [{ name: 'test', type: 6, ttl: 5, data: Buffer.from('\x02ns\x04test\x00\x0ahostmaster\x04test\x00' + '\x00'.repeat(20), 'latin1') }],
    edns: { udpPayloadSize: 1232, options: [{ code: 15, data: Buffer.from('\x00\x0fdns_name_denied', 'latin1') }] },
  }),
]

// ---------------------------------------------------------------- mutation

/** A deterministic PRNG (mulberry32) so a seed reproduces a run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const INTERESTING = [0x00, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0d, 0x16, 0x20, 0x2e, 0x3a, 0x3f, 0x40, 0x5c, 0x7f, 0x80, 0xc0, 0xfe, 0xff]
const INTERESTING_16 = [0, 1, 2, 0x3f, 0x40, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x4000, 0x4001, 0x7fff, 0x8000, 0xfffe, 0xffff]

/** Applies 1..6 byte-level mutations (flip, set, insert, delete, duplicate, truncate, splice, length fields). */
export function mutate(input: Buffer, random: () => number, donors: readonly Buffer[]): Buffer {
  let b = Buffer.from(input)
  const pick = (n: number) => Math.floor(random() * n)
  const rounds = 1 + pick(6)
  for (let i = 0; i < rounds; i++) {
    const pos = b.length === 0 ? 0 : pick(b.length)
    switch (pick(9)) {
      case 0:
        if (b.length > 0) b[pos] = b[pos]! ^ (1 << pick(8))
        break
      case 1:
        if (b.length > 0) b[pos] = INTERESTING[pick(INTERESTING.length)]!
        break
      case 2: {
        const n = 1 + pick(16)
        const extra = Buffer.from(Array.from({ length: n }, () => pick(256)))
        b = Buffer.concat([b.subarray(0, pos), extra, b.subarray(pos)])
        break
      }
      case 3:
        b = Buffer.concat([b.subarray(0, pos), b.subarray(Math.min(b.length, pos + 1 + pick(16)))])
        break
      case 4: {
        const len = 1 + pick(Math.min(64, Math.max(1, b.length - pos)))
        const chunk = b.subarray(pos, pos + len)
        const times = 1 + pick(8)
        b = Buffer.concat([b.subarray(0, pos), ...Array.from({ length: times }, () => chunk), b.subarray(pos)])
        break
      }
      case 5:
        b = b.subarray(0, pos)
        break
      case 6: {
        const donor = donors[pick(donors.length)]!
        const from = pick(donor.length)
        b = Buffer.concat([b.subarray(0, pos), donor.subarray(from, from + 1 + pick(64)), b.subarray(pos)])
        break
      }
      case 7:
        if (b.length >= 2) {
          const at = pick(b.length - 1)
          b.writeUInt16BE(INTERESTING_16[pick(INTERESTING_16.length)]!, at)
        }
        break
      default:
        if (b.length >= 2) {
          // nudge a length field by ±1..4
          const at = pick(b.length - 1)
          b.writeUInt16BE((b.readUInt16BE(at) + (random() < 0.5 ? -1 : 1) * (1 + pick(4))) & 0xffff, at)
        }
    }
    if (b.length > 70_000) b = b.subarray(0, 70_000)
  }
  return Buffer.from(b)
}
