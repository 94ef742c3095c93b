import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { generateKeyPairSync } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { generateKeyFiles, keyFingerprint, readPrivateKeyFile, readPublicKeyFile, signBytes, verifyBytes } from './keys.js'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keel-audit-keys-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('generateKeyFiles', () => {
  it('writes an Ed25519 PKCS#8 key with mode 0600 and an SPKI public key, whatever the umask', async () => {
    const old = process.umask(0o000)
    try {
      const r = await generateKeyFiles(join(dir, 'k'))
      expect((await stat(r.privateKeyPath)).mode & 0o777).toBe(0o600)
      expect((await stat(r.publicKeyPath)).mode & 0o777).toBe(0o644)
      expect(await readFile(r.privateKeyPath, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/)
      expect(await readFile(r.publicKeyPath, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----\n/)
      const priv = await readPrivateKeyFile(r.privateKeyPath)
      const pub = await readPublicKeyFile(r.publicKeyPath)
      expect(keyFingerprint(priv)).toBe(r.fingerprint)
      expect(keyFingerprint(pub)).toBe(r.fingerprint)
      const sig = signBytes(Buffer.from('m'), priv)
      expect(sig).toHaveLength(64)
      expect(verifyBytes(Buffer.from('m'), sig, pub)).toBe(true)
      expect(verifyBytes(Buffer.from('n'), sig, pub)).toBe(false)
    } finally {
      process.umask(old)
    }
  })

  it('refuses to overwrite without force; with force replaces both, still 0600', async () => {
    const first = await generateKeyFiles(join(dir, 'k'))
    await expect(generateKeyFiles(join(dir, 'k'))).rejects.toMatchObject({ code: 'ERR_USAGE', message: expect.stringContaining('--force') })
    expect(keyFingerprint(await readFile(first.privateKeyPath))).toBe(first.fingerprint)
    const second = await generateKeyFiles(join(dir, 'k'), { force: true })
    expect(second.fingerprint).not.toBe(first.fingerprint)
    expect((await stat(second.privateKeyPath)).mode & 0o777).toBe(0o600)
  })

  it('rejects keys that are not Ed25519', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 })
    await writeFile(join(dir, 'rsa.key'), rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }))
    await expect(readPrivateKeyFile(join(dir, 'rsa.key'))).rejects.toMatchObject({ code: 'ERR_USAGE', message: expect.stringContaining('Ed25519') })
    await expect(readPublicKeyFile(join(dir, 'missing.pub'))).rejects.toMatchObject({ code: 'ERR_USAGE' })
  })
})
