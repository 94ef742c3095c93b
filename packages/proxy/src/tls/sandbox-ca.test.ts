import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildSandboxCa, CLOCK_SKEW_MS, createSandboxCa, type LeafCertificate, type SandboxCa } from './sandbox-ca.js'

const NAMES = ['api.openai.test', '*.anthropic.test']

/** Serves `leaf` on loopback and connects with the CA as the only trust anchor; resolves the client's verdict. */
async function handshake(leaf: LeafCertificate, ca: string, servername: string): Promise<{ ok: boolean; error?: string; alpn?: string | false | null }> {
  const server = tls.createServer({ key: leaf.key, cert: leaf.cert, ALPNProtocols: ['http/1.1'] }, (s) => s.end())
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  try {
    return await new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername, ca, ALPNProtocols: ['http/1.1'] })
      s.on('secureConnect', () => {
        resolve({ ok: true, alpn: s.alpnProtocol })
        s.destroy()
      })
      s.on('error', (e: NodeJS.ErrnoException) => resolve({ ok: false, error: `${e.code ?? ''} ${e.message}` }))
    })
  } finally {
    server.close()
  }
}

describe('createSandboxCa', () => {
  let built: Awaited<ReturnType<typeof buildSandboxCa>>
  let ca: SandboxCa
  let dir: string

  beforeAll(async () => {
    built = await buildSandboxCa({ names: NAMES, commonName: 'keel sandbox CA test' })
    ca = built.ca
    dir = mkdtempSync(join(tmpdir(), 'keel-ca-test-'))
    writeFileSync(join(dir, 'ca.pem'), ca.certPem)
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('is a constrained CA: CA:true critical with pathlen 0, keyCertSign + cRLSign, name constraints critical', () => {
    const x = new X509Certificate(ca.certPem)
    expect(x.ca).toBe(true)
    expect(x.subject).toContain('CN=keel sandbox CA test')
    expect(x.verify(x.publicKey)).toBe(true) // self-signed, and our node:crypto signature is valid
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'ca.pem')], { encoding: 'utf8' })
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/)
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/)
    expect(text).toMatch(/X509v3 Name Constraints: critical\s+Permitted:\s+DNS:anthropic.test\s+DNS:api.openai.test\s+Excluded:\s+IP:0.0.0.0\/0.0.0.0\s+IP:(::|0:0:0:0:0:0:0:0)\/(0|0:0:0:0:0:0:0:0)\s/)
    expect(text).toContain('Public-Key: (2048 bit)')
    expect(ca.names).toEqual(['anthropic.test', 'api.openai.test'])
  })

  it('has a short validity, backdated for clock skew', () => {
    const x = new X509Certificate(ca.certPem)
    const from = Date.parse(x.validFrom)
    const to = Date.parse(x.validTo)
    expect(Date.now() - from).toBeGreaterThanOrEqual(CLOCK_SKEW_MS - 2000)
    expect(Date.now() - from).toBeLessThan(CLOCK_SKEW_MS + 60_000)
    expect(to - Date.now()).toBeLessThanOrEqual(7 * 24 * 3600_000)
  })

  it('issues a leaf per name: SAN dNSName, serverAuth, not a CA, within the CA validity, signed by the CA', () => {
    const leaf = ca.leafFor('api.openai.test')
    const x = new X509Certificate(leaf.cert)
    const caCert = new X509Certificate(ca.certPem)
    expect(x.ca).toBe(false)
    expect(x.subjectAltName).toBe('DNS:api.openai.test')
    expect(x.checkHost('api.openai.test')).toBe('api.openai.test')
    expect(x.checkIssued(caCert)).toBe(true)
    expect(x.verify(caCert.publicKey)).toBe(true)
    expect(x.keyUsage).toContain('1.3.6.1.5.5.7.3.1')
    expect(Date.parse(x.validTo)).toBeLessThanOrEqual(Date.parse(caCert.validTo))
    expect(Date.parse(x.validTo) - Date.now()).toBeLessThanOrEqual(24 * 3600_000)
    writeFileSync(join(dir, 'leaf.pem'), leaf.cert)
    // OpenSSL's own chain check, with X509_STRICT (RFC 5280 conformance: AKI, SKI, …).
    const out = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', join(dir, 'ca.pem'), join(dir, 'leaf.pem')], { encoding: 'utf8' })
    expect(out.trim()).toBe(`${join(dir, 'leaf.pem')}: OK`)
  })

  it('caches leaves per name (normalized) and shares nothing across names', () => {
    const a = ca.leafFor('api.openai.test')
    expect(ca.leafFor('API.OpenAI.test.')).toBe(a)
    const b = ca.leafFor('x.anthropic.test')
    expect(b).not.toBe(a)
    expect(new X509Certificate(b.cert).subjectAltName).toBe('DNS:x.anthropic.test')
  })

  it.each([
    ['a name outside the constraints', 'evil.test'],
    ['a sibling of a permitted name', 'api2.openai.test'],
    ['an IPv4 literal', '127.0.0.1'],
    ['an IPv6 literal', '::1'],
    ['junk', 'not a name'],
  ])('refuses %s (%s)', (_what, name) => {
    expect(ca.permits(name)).toBe(false)
    expect(() => ca.leafFor(name)).toThrow(expect.objectContaining({ name: 'KeelError', code: 'ERR_USAGE' }))
  })

  it('permits subdomains of a permitted name (RFC 5280 dNSName subtree semantics)', () => {
    expect(ca.permits('api.openai.test')).toBe(true)
    expect(ca.permits('eu.api.openai.test')).toBe(true)
    expect(ca.permits('anthropic.test')).toBe(true)
  })

  it('a real TLS client (OpenSSL in node) accepts a leaf it issued', async () => {
    expect(await handshake(ca.leafFor('api.openai.test'), ca.certPem, 'api.openai.test')).toEqual({ ok: true, alpn: 'http/1.1' })
  })

  it('name constraints hold even against the CA key: clients reject a certificate for another name or an IP', async () => {
    const evil = built.issueUnchecked([{ dns: 'evil.test' }])
    const r = await handshake(evil, ca.certPem, 'evil.test')
    expect(r.ok).toBe(false)
    expect(r.error).toMatch(/permitted subtree violation/i)
    const ip = built.issueUnchecked([{ dns: 'api.openai.test' }, { ip: '127.0.0.1' }])
    const r2 = await handshake(ip, ca.certPem, 'api.openai.test')
    expect(r2.ok).toBe(false)
    expect(r2.error).toMatch(/excluded subtree violation/i)
  })

  it('renews a cached leaf that is close to expiry, never past the CA', async () => {
    let t = Date.now()
    const short = await createSandboxCa({ names: ['api.openai.test'], validityMs: 10 * 3600_000, leafValidityMs: 3 * 3600_000, now: () => t })
    const first = short.leafFor('api.openai.test')
    t += 30 * 60_000
    expect(short.leafFor('api.openai.test')).toBe(first)
    t += 2 * 3600_000 // less than an hour left
    const renewed = short.leafFor('api.openai.test')
    expect(renewed).not.toBe(first)
    t += 7 * 3600_000 + 10 * 60_000 // CA has 20 min left; the leaf is capped at the CA
    expect(short.leafFor('api.openai.test').notAfter).toBe(short.notAfter)
    t = short.notAfter + 1
    expect(() => short.leafFor('api.openai.test')).toThrow(expect.objectContaining({ code: 'ERR_INTERNAL' }))
  })

  it('needs at least one valid name', async () => {
    await expect(createSandboxCa({ names: [] })).rejects.toMatchObject({ code: 'ERR_USAGE' })
    await expect(createSandboxCa({ names: ['10.0.0.1'] })).rejects.toMatchObject({ code: 'ERR_USAGE' })
  })
})
