import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { parseAuthority, parseRequestHead, type RequestHeadResult } from './request-head.js'

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

describe('parseRequestHead', () => {
  const table: Array<{ name: string; input: string; kind: RequestHeadResult['kind']; host?: string; targetHost?: string; status?: number }> = [
    { name: 'origin-form GET', input: 'GET /a?b=c HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\n', kind: 'request', host: 'example.com' },
    { name: 'Host with port', input: 'GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n', kind: 'request', host: 'example.com' },
    { name: 'Host with trailing dot', input: 'GET / HTTP/1.1\r\nHost: example.com.\r\n\r\n', kind: 'request', host: 'example.com' },
    { name: 'IPv6 Host', input: 'GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n', kind: 'request', host: '[::1]' },
    { name: 'lowercase host header name', input: 'GET / HTTP/1.1\r\nhost: a.test\r\n\r\n', kind: 'request', host: 'a.test' },
    { name: 'HTTP/1.0 without Host', input: 'GET / HTTP/1.0\r\n\r\n', kind: 'request' },
    { name: 'empty Host', input: 'GET / HTTP/1.1\r\nHost:\r\n\r\n', kind: 'request', host: '' },
    { name: 'leading empty lines', input: '\r\n\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'request', host: 'a.test' },
    { name: 'absolute-form', input: 'GET http://Other.test:81/x HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'request', host: 'a.test', targetHost: 'other.test' },
    { name: 'CONNECT authority-form', input: 'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n', kind: 'request', host: 'evil.test', targetHost: 'evil.test' },
    { name: 'OPTIONS *', input: 'OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'request', host: 'a.test' },
    { name: 'unknown method with version', input: 'FROB / HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'request', host: 'a.test' },
    { name: 'value with obs-text', input: 'GET / HTTP/1.1\r\nHost: a.test\r\nX: caf\xe9\r\n\r\n', kind: 'request', host: 'a.test' },
    // incomplete
    { name: 'empty', input: '', kind: 'incomplete' },
    { name: 'partial method', input: 'GE', kind: 'incomplete' },
    { name: 'partial line', input: 'GET /index.html HT', kind: 'incomplete' },
    { name: 'partial headers', input: 'GET / HTTP/1.1\r\nHost: a.test\r\n', kind: 'incomplete' },
    { name: 'lone CR after empty line', input: '\r\n\r', kind: 'incomplete' },
    // not HTTP
    { name: 'SSH banner', input: 'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n', kind: 'not-http' },
    { name: 'Redis RESP', input: '*1\r\n$4\r\nPING\r\n', kind: 'not-http' },
    { name: 'Redis inline SET', input: 'SET key value\r\n', kind: 'not-http' },
    { name: 'SMTP EHLO', input: 'EHLO client.example\r\n', kind: 'not-http' },
    { name: 'Postgres startup', input: '\x00\x00\x00\x08\x04\xd2\x16\x2f', kind: 'not-http' },
    { name: 'git protocol', input: '0032git-upload-pack /p.git\x00host=x\x00', kind: 'not-http' },
    { name: 'TLS', input: '\x16\x03\x01\x02\x00', kind: 'not-http' },
    { name: 'leading space', input: ' GET / HTTP/1.1\r\n', kind: 'not-http' },
    { name: 'long token', input: `${'A'.repeat(40)} / HTTP/1.1\r\n`, kind: 'not-http' },
    // malformed
    { name: 'double space (lenient servers read it)', input: 'GET  /  HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'tab separator', input: 'GET\t/ HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'known method without version (HTTP/0.9)', input: 'GET /\r\n', kind: 'malformed' },
    { name: 'bare LF request line', input: 'GET / HTTP/1.1\nHost: a.test\n\n', kind: 'malformed' },
    { name: 'bare LF header', input: 'GET / HTTP/1.1\r\nHost: a.test\n\r\n', kind: 'malformed' },
    { name: 'obs-fold', input: 'GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n', kind: 'malformed' },
    { name: 'space before colon', input: 'GET / HTTP/1.1\r\nHost : a.test\r\n\r\n', kind: 'malformed' },
    { name: 'duplicate Host', input: 'GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n', kind: 'malformed' },
    { name: 'duplicate Host, other case', input: 'GET / HTTP/1.1\r\nHost: a.test\r\nHOST: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'Host with userinfo', input: 'GET / HTTP/1.1\r\nHost: a.test@b.test\r\n\r\n', kind: 'malformed' },
    { name: 'Host with space inside', input: 'GET / HTTP/1.1\r\nHost: a.test b.test\r\n\r\n', kind: 'malformed' },
    { name: 'Host with bad port', input: 'GET / HTTP/1.1\r\nHost: a.test:99999\r\n\r\n', kind: 'malformed' },
    { name: 'NUL in a header value', input: 'GET / HTTP/1.1\r\nHost: a.test\r\nX: a\x00b\r\n\r\n', kind: 'malformed' },
    { name: 'bare CR in a header value', input: 'GET / HTTP/1.1\r\nHost: a.test\r\nX: a\rb\r\n\r\n', kind: 'malformed' },
    { name: 'header without colon', input: 'GET / HTTP/1.1\r\nHost a.test\r\n\r\n', kind: 'malformed' },
    { name: 'absolute-form with userinfo', input: 'GET http://a.test@evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'relative target', input: 'GET index.html HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'asterisk on GET', input: 'GET * HTTP/1.1\r\nHost: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'h2c prior knowledge', input: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', kind: 'malformed' },
    { name: 'HTTP/2.0 version', input: 'GET / HTTP/2.0\r\nHost: a.test\r\n\r\n', kind: 'malformed', status: 505 },
    { name: 'lowercase version', input: 'GET / http/1.1\r\nHost: a.test\r\n\r\n', kind: 'malformed' },
    { name: 'unknown method, garbage after version', input: 'FROB / HTTP/1.1 x\r\n\r\n', kind: 'not-http' },
  ]

  it.each(table)('$name → $kind', ({ input, kind, host, targetHost, status }) => {
    const r = parseRequestHead(b(input))
    expect(r.kind).toBe(kind)
    if (r.kind === 'request') {
      expect(r.host).toBe(host)
      expect(r.targetHost).toBe(targetHost)
      expect(r.headLength).toBe(b(input).length)
    }
    if (status !== undefined && (r.kind === 'malformed' || r.kind === 'oversize')) expect(r.status).toBe(status)
  })

  it('is 431 oversize past the cap, and 414 for a long request line', () => {
    const big = `GET / HTTP/1.1\r\nHost: a.test\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`
    expect(parseRequestHead(b(big))).toMatchObject({ kind: 'oversize', status: 431 })
    const partial = `GET / HTTP/1.1\r\nHost: a.test\r\nX: ${'a'.repeat(20_000)}`
    expect(parseRequestHead(b(partial))).toMatchObject({ kind: 'oversize', status: 431 })
    expect(parseRequestHead(b(`GET /${'a'.repeat(20_000)}`))).toMatchObject({ kind: 'malformed', status: 414 })
    const many = `GET / HTTP/1.1\r\nHost: a.test\r\n${'X: 1\r\n'.repeat(200)}\r\n`
    expect(parseRequestHead(b(many))).toMatchObject({ kind: 'oversize', status: 431 })
    expect(parseRequestHead(b(`GET / HTTP/1.1\r\nHost: a.test\r\nX: ${'a'.repeat(200)}\r\n\r\n`), { maxHeadBytes: 100 }).kind).toBe('oversize')
  })

  it('is incomplete at every truncation of a valid head', () => {
    const full = b('GET /x HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\n\r\n')
    for (let n = 0; n < full.length; n++) expect(parseRequestHead(full.subarray(0, n)).kind, `at ${n}`).toBe('incomplete')
  })

  it('gives every prefix that is not incomplete the same answer as the whole (what the peek relies on)', () => {
    // Regression (test/fuzz): an unknown method whose first line holds a control byte was
    // "not-http" until its LF arrived, then HTTP. Sent in two writes it passed as opaque.
    const inputs = [
      'PRH * HTTP/2.0\r\x00\r\nHost: evil.test\r\n\r\n',
      'FROB / HTTP/1.1\x01\r\nHost: evil.test\r\n\r\n',
      'FROB /\x00 HTTP/1.1\r\nHost: evil.test\r\n\r\n',
      'GET /\x00 HTTP/1.1\r\nHost: evil.test\r\n\r\n',
      'FROB / HTTP/1.1\r\nHost: evil.test\r\n\r\n',
    ]
    for (const input of inputs) {
      const whole = parseRequestHead(b(input)).kind
      for (let n = 0; n < input.length; n++) {
        const kind = parseRequestHead(b(input.slice(0, n))).kind
        if (kind !== 'incomplete') expect(kind, `${JSON.stringify(input)} cut at ${n}`).toBe(whole)
      }
    }
    expect(parseRequestHead(b(inputs[0]!)).kind).toBe('not-http')
    expect(parseRequestHead(b(inputs[3]!)).kind).toBe('malformed')
  })

  it('never throws on arbitrary input (fuzz)', () => {
    const kinds = new Set(['incomplete', 'not-http', 'malformed', 'oversize', 'request'])
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
          fc.string({ maxLength: 200 }).map((s) => b(`GET / HTTP/1.1\r\n${s}\r\n\r\n`)),
          fc.string({ maxLength: 200 }).map((s) => b(`${s} HTTP/1.1\r\nHost: a\r\n\r\n`)),
        ),
        (buf) => {
          expect(kinds.has(parseRequestHead(buf).kind)).toBe(true)
        },
      ),
      { numRuns: 3000 },
    )
  })
})

describe('parseAuthority', () => {
  it.each([
    ['a.test', 'a.test'],
    ['A.Test:80', 'a.test'],
    ['a.test:', 'a.test'],
    ['[::1]', '[::1]'],
    ['[::1]:443', '[::1]'],
    ['127.0.0.1:80', '127.0.0.1'],
    ['a.test:x', undefined],
    ['[::1', undefined],
    ['[::1]x', undefined],
    ['a%2etest', undefined],
    ['a,b', undefined],
  ])('%s → %s', (input, want) => {
    expect(parseAuthority(input)).toBe(want)
  })
})
