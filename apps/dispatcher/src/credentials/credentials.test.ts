import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createPlaceholderDetector } from './placeholders.js'
import { readSecret, scrubSecrets } from './store.js'

const KEY = 'sk-live-supersecret-0123456789'

describe('readSecret', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })
  const file = (mode: number): string => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-key-'))
    dirs.push(dir)
    const p = join(dir, 'k')
    writeFileSync(p, `${KEY}\n`)
    chmodSync(p, mode)
    return p
  }

  it('reads a 0600 (or 0400) file, trimmed', async () => {
    expect(await readSecret({ file: file(0o600) })).toBe(KEY)
    expect(await readSecret({ file: file(0o400) })).toBe(KEY)
  })

  it.each([0o644, 0o640, 0o604, 0o660, 0o606])('refuses mode %s without revealing the key', async (mode) => {
    const p = file(mode)
    const err = await readSecret({ file: p }).catch((e: Error) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(/group- or world-accessible/)
    expect((err as Error).message).toContain(p)
    expect((err as Error).message).not.toContain(KEY)
  })

  it('refuses symlinks, missing files and unset variables', async () => {
    const p = file(0o600)
    const link = `${p}-link`
    symlinkSync(p, link)
    await expect(readSecret({ file: link })).rejects.toThrow(/symbolic link/)
    await expect(readSecret({ file: `${p}-missing` })).rejects.toThrow(/cannot be opened/)
    await expect(readSecret({ env: 'KEEL_NOT_SET_XYZ' }, {})).rejects.toThrow(/KEEL_NOT_SET_XYZ is not set/)
    expect(await readSecret({ env: 'K' }, { K: ` ${KEY} ` })).toBe(KEY)
  })

  it('scrubSecrets removes every occurrence', () => {
    expect(scrubSecrets(`a ${KEY} b ${KEY}`, [KEY])).toBe('a [REDACTED] b [REDACTED]')
  })
})

describe('placeholder detection', () => {
  const d = createPlaceholderDetector(['sk-keel-dummy*'])
  it.each([
    ['marker', 'KEEL_PLACEHOLDER', true, true],
    ['marker, kebab', 'x-keel-placeholder-openai', true, true],
    ['configured dummy', 'Bearer sk-keel-dummy-123', true, true],
    ['credential template ${}', '${OPENAI_API_KEY}', true, true],
    ['credential template {{}}', '{{ secrets.github_token }}', true, true],
    ['shell credential variable', 'Bearer $OPENAI_API_KEY', true, false],
    ['other template', '${count}', true, false],
    ['other mustache', '{{ user.name }}', true, false],
    ['plain text', 'hello world', false, false],
    ['shell non-credential', '$HOME/x', false, false],
  ])('%s: header %s, body %s', (_n, value, inHeader, inBody) => {
    expect(d.inHeaders([['x-h', value as string]])).toBe(inHeader ? 'x-h' : undefined)
    expect(d.inBody([value as string])).toBe(inBody)
  })
})
