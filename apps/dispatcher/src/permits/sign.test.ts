import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { bindingDigest, createPermitSigner, sha256Hex, type PermitClaims } from './sign.js'

const NOW = Date.UTC(2026, 0, 5, 12)
const claims = (over: Partial<PermitClaims> = {}): PermitClaims => ({
  v: 1,
  jti: '00000000-0000-4000-8000-000000000000',
  iss: 'keel-dispatcher',
  iat: NOW / 1000,
  exp: NOW / 1000 + 300,
  project: 'p',
  agent: 'a',
  provider: 'openai',
  route: 'chat.completions',
  model: 'gpt-4o-mini',
  maxOutputTokens: 100,
  endpoint: 'https://api.openai.com/v1',
  requestSha256: sha256Hex('{}'),
  bindingKeySha256: sha256Hex('k'),
  reason: 'permit_allowed',
  ...over,
})

describe('permit signing', () => {
  it('round-trips and rejects tampering, other keys, alg confusion and expiry', () => {
    const signer = createPermitSigner()
    const token = signer.sign(claims())
    expect(signer.verify(token, NOW)).toMatchObject({ ok: true, claims: { model: 'gpt-4o-mini' } })
    const [h, p, s] = token.split('.') as [string, string, string]
    const forged = Buffer.from(JSON.stringify(claims({ maxOutputTokens: 9999 }))).toString('base64url')
    expect(signer.verify(`${h}.${forged}.${s}`, NOW)).toMatchObject({ ok: false, reason: 'permit_signature_invalid' })
    expect(createPermitSigner().verify(token, NOW)).toMatchObject({ ok: false, reason: 'permit_signature_invalid' })
    const none = Buffer.from(JSON.stringify({ alg: 'none', kid: signer.keyId })).toString('base64url')
    expect(signer.verify(`${none}.${p}.`, NOW)).toMatchObject({ ok: false, reason: 'permit_signature_invalid' })
    expect(signer.verify('a.b', NOW)).toMatchObject({ ok: false })
    expect(signer.verify(token, NOW + 301_000)).toMatchObject({ ok: false, reason: 'permit_expired' })
  })

  it('loads a PKCS#8 PEM key and keeps its key id', () => {
    const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    expect(createPermitSigner(pem).keyId).toBe(createPermitSigner(pem).keyId)
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey
    expect(() => createPermitSigner(rsa)).toThrow(/must be Ed25519/)
  })

  it('is verifiable with openssl pkeyutl -verify -rawin', () => {
    const signer = createPermitSigner()
    const token = signer.sign(claims())
    const [h, p, s] = token.split('.') as [string, string, string]
    const dir = mkdtempSync(join(tmpdir(), 'keel-permit-'))
    try {
      writeFileSync(join(dir, 'pub.pem'), signer.publicKeyPem)
      writeFileSync(join(dir, 'msg'), `${h}.${p}`)
      writeFileSync(join(dir, 'sig'), Buffer.from(s, 'base64url'))
      const out = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', join(dir, 'pub.pem'), '-rawin', '-in', join(dir, 'msg'), '-sigfile', join(dir, 'sig')], { encoding: 'utf8' })
      expect(out).toMatch(/Signature Verified Successfully/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('the binding digest changes with the endpoint', () => {
    const a = bindingDigest('id', 'h', 'https://a/v1', 'k')
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(bindingDigest('id', 'h', 'https://b/v1', 'k')).not.toBe(a)
  })
})
