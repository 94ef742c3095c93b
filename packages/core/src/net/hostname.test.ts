import { describe, expect, it } from 'vitest'
import { normalizeHostname, parseHostnamePattern } from './hostname.js'

describe('normalizeHostname', () => {
  it.each([
    ['api.example.com', 'api.example.com'],
    ['API.Example.COM', 'api.example.com'], // case-insensitive
    ['api.example.com.', 'api.example.com'], // trailing dot ignored
    ['localhost', 'localhost'],
    ['_dmarc.example.com', '_dmarc.example.com'],
    ['bücher.de', 'xn--bcher-kva.de'], // IDN → punycode
    ['BÜCHER.DE.', 'xn--bcher-kva.de'],
    ['xn--bcher-kva.de', 'xn--bcher-kva.de'],
    ['münchen.example', 'xn--mnchen-3ya.example'],
    ['ａｐｉ.example.com', 'api.example.com'], // full-width folds (UTS #46 mapping)
    ['a-b.example.com', 'a-b.example.com'],
    ['1password.com', '1password.com'],
    [`${'a'.repeat(63)}.com`, `${'a'.repeat(63)}.com`],
  ])('%s → %s', (input, expected) => {
    expect(normalizeHostname(input)).toBe(expected)
  })

  it.each([
    [''],
    ['.'],
    ['a..b.com'],
    ['.a.com'],
    ['a.com..'],
    ['-a.example.com'],
    ['a-.example.com'],
    ['exa mple.com'],
    ['a/b.com'],
    ['ex%41mple.com'], // the URL parser would percent-decode this
    ['user@example.com'],
    ['example.com:443'],
    ['xn--zz.com'], // punycode that does not decode
    ['xn--.com'],
    ['a\u200db.com'],
    [`${'a'.repeat(64)}.com`],
    [`${'a.'.repeat(127)}com`], // 257 characters
    ['1.2.3.4'], // IP literals are not hostnames
    ['1.2.3'],
    ['0x7f.1'],
    ['*.example.com'],
  ])('rejects %j', (input) => {
    expect(normalizeHostname(input)).toBeUndefined()
  })

  it('never throws on non-strings', () => {
    expect(normalizeHostname(undefined as unknown as string)).toBeUndefined()
    expect(normalizeHostname({} as unknown as string)).toBeUndefined()
  })
})

describe('parseHostnamePattern', () => {
  it.each([
    ['api.example.com', 'exact', 'api.example.com'],
    ['*.example.com', 'one-label', 'example.com'],
    ['**.example.com', 'any-labels', 'example.com'],
    ['*.EXAMPLE.com.', 'one-label', 'example.com'],
    ['*.bücher.de', 'one-label', 'xn--bcher-kva.de'],
    ['localhost', 'exact', 'localhost'],
  ])('%s → %s %s', (text, kind, name) => {
    const r = parseHostnamePattern(text)
    expect(r.ok && r.pattern).toMatchObject({ kind, name })
  })

  it.each([
    ['*', 'a bare wildcard would match every name'],
    ['**', 'a bare wildcard would match every name'],
    ['*.com', 'the wildcard would cover a whole top-level domain; name at least two labels after it, e.g. "*.example.com"'],
    ['**.com', 'e.g. "**.example.com"'],
    ['a.*.com', 'a wildcard may only be the whole first label'],
    ['*a.example.com', 'a wildcard may only be the whole first label'],
    ['api.*', 'a wildcard may only be the whole first label'],
    ['***.example.com', 'a wildcard may only be the whole first label'],
    ['10.0.0.1', 'an IP address is not a hostname; put it in destinationCIDRs'],
    ['::1', 'an IP address is not a hostname'],
    ['bad_-.example.com', 'not a valid hostname'],
    ['', 'empty'],
  ])('rejects %j: %s', (text, problem) => {
    const r = parseHostnamePattern(text)
    expect(r.ok).toBe(false)
    expect(!r.ok && r.problem).toContain(problem)
  })
})
