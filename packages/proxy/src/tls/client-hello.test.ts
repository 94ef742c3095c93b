import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import { parseClientHello, type ClientHelloResult } from './client-hello.js'
import {
  alpnExt,
  captureNodeHello,
  captureOpensslHello,
  craftedHello,
  echExt,
  ext,
  helloMessage,
  records,
  sniExt,
  supportedVersionsExt,
} from '../test-helpers/tls-fixtures.js'

const KINDS = new Set(['incomplete', 'not-tls', 'malformed', 'client-hello'])

function hello(r: ClientHelloResult) {
  if (r.kind !== 'client-hello') throw new Error(`expected a client-hello, got ${JSON.stringify(r)}`)
  return r
}

describe('parseClientHello on real hellos', () => {
  let nodeSni: Buffer
  let nodeNoSni: Buffer
  let opensslSni: Buffer
  let opensslNoSni: Buffer

  beforeAll(async () => {
    ;[nodeSni, nodeNoSni, opensslSni, opensslNoSni] = await Promise.all([
      captureNodeHello({ servername: 'Example.COM', ALPNProtocols: ['h2', 'http/1.1'] }),
      captureNodeHello({}), // host is an IP literal: node sends no SNI
      captureOpensslHello(['-servername', 'api.openssl.test']),
      captureOpensslHello(['-noservername']),
    ])
  })

  it('reads SNI and ALPN from node tls.connect', () => {
    const h = hello(parseClientHello(nodeSni))
    expect(h.sni).toBe('Example.COM')
    expect(h.alpn).toEqual(['h2', 'http/1.1'])
    expect(h.ech).toBe(false)
    expect(h.supportedVersions).toContain(0x0304)
    expect(h.consumed).toBe(nodeSni.length)
  })

  it('reports no SNI when node connects to an IP literal', () => {
    const h = hello(parseClientHello(nodeNoSni))
    expect(h.sni).toBeUndefined()
  })

  it('reads SNI from openssl s_client -servername', () => {
    expect(hello(parseClientHello(opensslSni)).sni).toBe('api.openssl.test')
    expect(hello(parseClientHello(opensslNoSni)).sni).toBeUndefined()
  })

  it('is incomplete at every truncation of a real hello, and never throws', () => {
    for (const full of [nodeSni, opensslSni]) {
      for (let n = 0; n < full.length; n++) {
        const r = parseClientHello(full.subarray(0, n))
        expect(r.kind, `truncated at ${n}`).toBe('incomplete')
        if (r.kind === 'incomplete' && r.need !== undefined) expect(r.need).toBeGreaterThan(n)
      }
    }
  })

  it('reads a real hello re-split across many records (handshake fragmentation)', () => {
    const hs = nodeSni.subarray(5) // strip the one record header
    for (const sizes of [[1], [1, 1, 1, 1], [3, 4, 50], [200, 1], Array.from({ length: 40 }, () => 7)]) {
      const buf = records(hs, sizes)
      expect(hello(parseClientHello(buf)).sni, `sizes ${sizes.join(',')}`).toBe('Example.COM')
      for (let n = 0; n < buf.length; n++) expect(parseClientHello(buf.subarray(0, n)).kind).toBe('incomplete')
    }
  })

  it('never throws on any single-byte corruption of a real hello', () => {
    for (let i = 0; i < nodeSni.length; i++) {
      for (const v of [0x00, 0xff, nodeSni[i]! ^ 0x01]) {
        const copy = Buffer.from(nodeSni)
        copy[i] = v
        expect(KINDS.has(parseClientHello(copy).kind)).toBe(true)
      }
    }
  })

  it('never throws on arbitrary bytes after a TLS record header (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, prefix) => {
        const buf = prefix ? Buffer.concat([Buffer.from([22, 3, 1, 1, 0x80]), Buffer.from(bytes)]) : Buffer.from(bytes)
        expect(KINDS.has(parseClientHello(buf).kind)).toBe(true)
      }),
      { numRuns: 3000 },
    )
  })
})

describe('parseClientHello on crafted hellos', () => {
  const table: Array<{ name: string; input: Buffer; kind: ClientHelloResult['kind']; sni?: string; ech?: boolean; detail?: RegExp }> = [
    { name: 'plain SNI', input: craftedHello([sniExt('a.example')]), kind: 'client-hello', sni: 'a.example' },
    { name: 'underscore in a label', input: craftedHello([sniExt('_acme.example')]), kind: 'client-hello', sni: '_acme.example' },
    { name: 'no extensions block at all', input: craftedHello(undefined), kind: 'client-hello' },
    { name: 'empty extensions block', input: craftedHello([]), kind: 'client-hello' },
    { name: 'ECH extension', input: craftedHello([sniExt('public.example'), echExt()]), kind: 'client-hello', sni: 'public.example', ech: true },
    { name: 'ECH without SNI', input: craftedHello([echExt()]), kind: 'client-hello', ech: true },
    { name: 'ALPN and supported_versions', input: craftedHello([alpnExt('h2'), supportedVersionsExt(), sniExt('x.example')]), kind: 'client-hello', sni: 'x.example' },
    { name: 'unknown server_name type is ignored', input: craftedHello([ext(0, Buffer.from([0, 4, 9, 0, 1, 0x41]))]), kind: 'client-hello' },
    { name: 'duplicate extension', input: craftedHello([sniExt('a.example'), ext(0x15, Buffer.alloc(2)), ext(0x15, Buffer.alloc(2))]), kind: 'malformed', detail: /duplicate/ },
    { name: 'duplicate SNI extension', input: craftedHello([sniExt('a.example'), sniExt('b.example')]), kind: 'malformed', detail: /duplicate/ },
    { name: 'two host_names in one list', input: craftedHello([sniExt('a.example', 'b.example')]), kind: 'malformed', detail: /twice/ },
    { name: 'IPv4 literal SNI', input: craftedHello([sniExt('192.0.2.1')]), kind: 'malformed', detail: /hostname/ },
    { name: 'trailing dot SNI', input: craftedHello([sniExt('a.example.')]), kind: 'malformed' },
    { name: 'empty label', input: craftedHello([sniExt('a..example')]), kind: 'malformed' },
    { name: 'space in SNI', input: craftedHello([sniExt('a example')]), kind: 'malformed' },
    { name: 'NUL in SNI', input: craftedHello([sniExt(Buffer.from('a.example\0evil.test'))]), kind: 'malformed' },
    { name: 'non-ASCII SNI', input: craftedHello([sniExt(Buffer.from('bücher.example'))]), kind: 'malformed' },
    { name: 'label over 63', input: craftedHello([sniExt(`${'a'.repeat(64)}.example`)]), kind: 'malformed' },
    { name: 'name over 253', input: craftedHello([sniExt(`${'a.'.repeat(127)}ab`)]), kind: 'malformed' },
    { name: 'empty server_name list', input: craftedHello([ext(0, Buffer.from([0, 0]))]), kind: 'malformed' },
    { name: 'extension longer than the block', input: craftedHello([Buffer.from([0, 0x15, 0, 9, 0])]), kind: 'malformed' },
    { name: 'empty ALPN list', input: craftedHello([ext(0x10, Buffer.from([0, 0]))]), kind: 'malformed' },
    { name: 'session id over 32', input: records(helloMessage([], { sessionId: Buffer.alloc(33) })), kind: 'malformed' },
    { name: 'HTTP', input: Buffer.from('GET / HTTP/1.1\r\n'), kind: 'not-tls' },
    { name: 'SSH banner', input: Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), kind: 'not-tls' },
    { name: 'application data record first', input: Buffer.from([23, 3, 3, 0, 1, 0]), kind: 'not-tls' },
    { name: '0x16 but not version 3', input: Buffer.from([22, 0, 1, 2, 3]), kind: 'not-tls' },
    { name: 'one byte 0x16', input: Buffer.from([22]), kind: 'incomplete' },
    { name: 'empty', input: Buffer.alloc(0), kind: 'incomplete' },
    { name: 'SSLv2-compatible hello', input: Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15]), kind: 'malformed', detail: /sslv2/ },
    { name: 'zero-length record', input: Buffer.from([22, 3, 1, 0, 0]), kind: 'malformed', detail: /empty/ },
    { name: 'record over 16384', input: Buffer.from([22, 3, 1, 0x40, 0x01]), kind: 'malformed', detail: /16384/ },
    { name: 'record version 3.9', input: Buffer.from([22, 3, 9, 0, 4, 1, 0, 0, 0]), kind: 'malformed' },
    { name: 'not a ClientHello (ServerHello)', input: Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0]), kind: 'malformed', detail: /type 2/ },
    { name: 'hello declared over the cap', input: Buffer.from([22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x01]), kind: 'malformed', detail: /exceeds/ },
    { name: 'empty ClientHello body', input: Buffer.from([22, 3, 1, 0, 4, 1, 0, 0, 0]), kind: 'malformed' },
  ]

  it.each(table)('$name → $kind', ({ input, kind, sni, ech, detail }) => {
    const r = parseClientHello(input)
    expect(r.kind).toBe(kind)
    if (r.kind === 'client-hello') {
      expect(r.sni).toBe(sni)
      expect(r.ech).toBe(ech ?? false)
    }
    if (detail !== undefined && r.kind === 'malformed') expect(r.detail).toMatch(detail)
  })

  it('rejects a non-handshake record between fragments', () => {
    const hs = helloMessage([sniExt('a.example')])
    const first = records(hs.subarray(0, 10))
    const alert = Buffer.from([21, 3, 3, 0, 2, 1, 0])
    const rest = records(hs.subarray(10))
    const r = parseClientHello(Buffer.concat([first, alert, rest]))
    expect(r.kind).toBe('malformed')
  })

  it('ignores bytes after the hello (early data)', () => {
    const h = craftedHello([sniExt('a.example')])
    const r = hello(parseClientHello(Buffer.concat([h, Buffer.from([23, 3, 3, 0, 3, 1, 2, 3])])))
    expect(r.consumed).toBe(h.length)
  })

  it('honours a smaller maxHelloBytes', () => {
    const h = craftedHello([sniExt('a.example'), ext(0x15, Buffer.alloc(600))])
    expect(parseClientHello(h, { maxHelloBytes: 512 }).kind).toBe('malformed')
    expect(parseClientHello(h).kind).toBe('client-hello')
  })

  it('accepts a large hello split over several full records', () => {
    const hs = helloMessage([sniExt('big.example'), ext(0x15, Buffer.alloc(40_000))])
    const buf = records(hs, [16_384, 16_384])
    expect(hello(parseClientHello(buf)).sni).toBe('big.example')
  })
})
