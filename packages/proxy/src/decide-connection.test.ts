import { describe, expect, it } from 'vitest'
import { Reason, type Decision } from '@keel/core'
import { classifyFirstBytes, type FirstBytes } from './first-bytes.js'
import { domainToASCII } from 'node:url'
import { decideDestination, normalizeName, verifyFirstBytes, vetResolved } from './decide-connection.js'
import { craftedHello, echExt, sniExt } from './test-helpers/tls-fixtures.js'
import { AGENT } from './test-helpers/world.js'

function classified(buf: Buffer | string): Exclude<FirstBytes, { kind: 'incomplete' }> {
  const r = classifyFirstBytes(Buffer.isBuffer(buf) ? buf : Buffer.from(buf, 'latin1'))
  if (r.kind === 'incomplete') throw new Error('incomplete')
  return r
}

describe('verifyFirstBytes', () => {
  const table: Array<{ name: string; input: Buffer | string; bound: string; ok: boolean; reason?: Reason }> = [
    { name: 'SNI equal', input: craftedHello([sniExt('api.example.com')]), bound: 'api.example.com', ok: true },
    { name: 'SNI other case', input: craftedHello([sniExt('API.Example.com')]), bound: 'api.example.com', ok: true },
    { name: 'bound name with trailing dot', input: craftedHello([sniExt('api.example.com')]), bound: 'api.example.com.', ok: true },
    { name: 'IDN bound name vs A-label SNI', input: craftedHello([sniExt('xn--bcher-kva.example')]), bound: 'bücher.example', ok: true },
    { name: 'SNI differs', input: craftedHello([sniExt('evil.example.com')]), bound: 'api.example.com', ok: false, reason: Reason.SNI_MISMATCH },
    { name: 'SNI is a subdomain', input: craftedHello([sniExt('x.api.example.com')]), bound: 'api.example.com', ok: false, reason: Reason.SNI_MISMATCH },
    { name: 'no SNI', input: craftedHello([]), bound: 'api.example.com', ok: false, reason: Reason.SNI_MISSING },
    { name: 'ECH with matching outer SNI', input: craftedHello([sniExt('api.example.com'), echExt()]), bound: 'api.example.com', ok: false, reason: Reason.ECH_UNSUPPORTED },
    { name: 'malformed hello', input: craftedHello([sniExt('1.2.3.4')]), bound: 'api.example.com', ok: false, reason: Reason.MALFORMED_REQUEST },
    { name: 'Host equal with port', input: 'GET / HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n', bound: 'api.example.com', ok: true },
    { name: 'Host differs', input: 'GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n', bound: 'api.example.com', ok: false, reason: Reason.HOST_MISMATCH },
    { name: 'Host is the IP', input: 'GET / HTTP/1.1\r\nHost: 198.18.0.1\r\n\r\n', bound: 'api.example.com', ok: false, reason: Reason.HOST_MISMATCH },
    { name: 'no Host', input: 'GET / HTTP/1.0\r\n\r\n', bound: 'api.example.com', ok: false, reason: Reason.HOST_MISSING },
    { name: 'empty Host', input: 'GET / HTTP/1.1\r\nHost:\r\n\r\n', bound: 'api.example.com', ok: false, reason: Reason.HOST_MISSING },
    { name: 'absolute-form matching, no Host', input: 'GET http://api.example.com/ HTTP/1.0\r\n\r\n', bound: 'api.example.com', ok: true },
    { name: 'absolute-form other host', input: 'GET http://evil.test/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n', bound: 'api.example.com', ok: false, reason: Reason.HOST_MISMATCH },
    { name: 'CONNECT', input: 'CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n', bound: 'api.example.com', ok: false, reason: Reason.HTTP_CONNECT_NOT_ALLOWED },
    { name: 'malformed HTTP', input: 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', bound: 'a', ok: false, reason: Reason.MALFORMED_REQUEST },
    { name: 'opaque', input: 'SSH-2.0-x\r\n', bound: 'git.example.com', ok: true },
  ]
  it.each(table)('$name', ({ input, bound, ok, reason }) => {
    const v = verifyFirstBytes(classified(input), bound, 'allow')
    expect(v.ok).toBe(ok)
    if (!v.ok) expect(v.reason).toBe(reason)
  })

  it("denies opaque bytes with opaque 'deny'", () => {
    expect(verifyFirstBytes(classified('\0\0\0\x08'), 'db.example.com', 'deny')).toMatchObject({
      ok: false,
      reason: Reason.PROTOCOL_UNRECOGNIZED,
    })
  })
})

describe('decideDestination', () => {
  const calls: unknown[] = []
  const deps = {
    agent: AGENT,
    bindings: { isSynthetic: (a: string) => a.startsWith('198.18.'), nameFor: (a: string) => (a === '198.18.0.1' ? 'a.test' : undefined) },
    decide: (args: unknown): Decision => {
      calls.push(args)
      return { verdict: 'allow', reason: Reason.ALLOWED }
    },
    now: () => 42,
  }
  it('decides on the bound name for a synthetic address', () => {
    expect(decideDestination({ address: '198.18.0.1', port: 443 }, deps)).toMatchObject({ kind: 'name', name: 'a.test' })
    expect(calls.pop()).toEqual({ agent: AGENT, hostname: 'a.test', port: 443, protocol: 'TCP', now: 42 })
  })
  it('denies an unbound synthetic address without asking the policy', () => {
    const d = decideDestination({ address: '198.18.0.2', port: 443 }, deps)
    expect(d.decision).toMatchObject({ verdict: 'deny', reason: Reason.SYNTHETIC_ADDRESS_UNBOUND })
    expect(calls).toEqual([])
  })
  it('decides on the address for a literal IP', () => {
    expect(decideDestination({ address: '10.20.0.5', port: 5432 }, deps)).toMatchObject({ kind: 'address', address: '10.20.0.5' })
    expect(calls.pop()).toEqual({ agent: AGENT, address: '10.20.0.5', port: 5432, protocol: 'TCP', now: 42 })
  })
})

describe('vetResolved', () => {
  const deps = {
    agent: AGENT,
    now: () => 0,
    checkResolved: ({ address }: { address: string }): Decision =>
      address.startsWith('10.')
        ? { verdict: 'deny', reason: Reason.GUARD_PRIVATE_ADDRESS }
        : address.startsWith('169.254.')
          ? { verdict: 'deny', reason: Reason.GUARD_METADATA }
          : { verdict: 'allow', reason: Reason.ALLOWED },
  }
  it('keeps allowed addresses in order', () => {
    expect(vetResolved('a.test', 443, ['10.0.0.1', '192.0.2.1', 'junk', '192.0.2.2'], deps)).toEqual({
      ok: true,
      addresses: ['192.0.2.1', '192.0.2.2'],
    })
  })
  it('returns the first refusal when nothing is allowed', () => {
    const v = vetResolved('a.test', 443, ['169.254.169.254', '10.0.0.1'], deps)
    expect(v).toMatchObject({ ok: false, decision: { verdict: 'deny', reason: Reason.GUARD_METADATA } })
    if (!v.ok) expect(v.decision.detail).toContain('10.0.0.1 (guard_private_address)')
  })
  it('treats an empty or junk answer as a DNS failure', () => {
    expect(vetResolved('a.test', 443, [], deps)).toMatchObject({ ok: false, decision: { reason: Reason.UPSTREAM_DNS_FAILED } })
    expect(vetResolved('a.test', 443, ['nope'], deps)).toMatchObject({ ok: false, decision: { reason: Reason.UPSTREAM_DNS_FAILED } })
  })
})

describe('normalizeName', () => {
  it.each([
    ['Example.COM.', 'example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['a.test', 'a.test'],
  ])('%s → %s', (a, b) => expect(normalizeName(a)).toBe(b))

  it('the lower-case LDH fast path gives what domainToASCII gives', () => {
    const names = ['a.test', 'api.openai.com.', 'a..b', '-x-.test', '0.1.2.3', 'xn--bcher-kva.example', 'xn--invalid-.test', 'a-b.c-d.e', '']
    for (const n of names) {
      const bare = n.endsWith('.') ? n.slice(0, -1) : n
      const ascii = domainToASCII(bare)
      expect(normalizeName(n), n).toBe((ascii === '' ? bare : ascii).toLowerCase())
    }
  })
})
