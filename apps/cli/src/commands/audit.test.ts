import { mkdtemp, readFile, rm, stat, writeFile, appendFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { main } from '../main.js'

let tmp: string
let stdout: string
let stderr: string

beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'keel-cli-audit-'))
  stdout = ''
  stderr = ''
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk)
    return true
  })
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk)
    return true
  })
})
afterEach(async () => {
  process.exitCode = undefined
  await rm(tmp, { recursive: true, force: true })
})

async function keel(...args: string[]): Promise<number> {
  stdout = ''
  stderr = ''
  process.exitCode = undefined
  const code = await main(args)
  process.exitCode = undefined
  return code
}

describe('keel audit', () => {
  it('keygen, append, log, checkpoint, export, verify; tampering exits 1 naming the record', async () => {
    const data = ['--data-dir', join(tmp, 'logs')]
    expect(await keel('audit', 'keygen', '--out', join(tmp, 'k'))).toBe(0)
    expect((await stat(join(tmp, 'k.key'))).mode & 0o777).toBe(0o600)
    expect(await keel('audit', 'keygen', '--out', join(tmp, 'k'))).toBe(2)
    expect(stderr).toContain('--force')

    for (let i = 1; i <= 5; i++) {
      expect(
        await keel('audit', 'append', ...data, '--project', 'acme', '--event', 'dispatch.egress_bound', '--reason', 'allowed', '--actor', 'agent:coder', '--subject', `h${i}.test:443`, '--data', `{"i":${i}}`),
      ).toBe(0)
    }
    expect(stdout).toMatch(/^appended acme #5 [0-9a-f]{64}\n$/)

    expect(await keel('audit', 'log', ...data, '--project', 'acme', '--tail', '2')).toBe(0)
    expect(stdout.trim().split('\n')).toHaveLength(2)
    expect(stdout).toContain('subject=h5.test:443')
    expect(await keel('audit', 'log', ...data, '--project', 'acme', '--tail', '1', '--json')).toBe(0)
    expect(JSON.parse(stdout)).toMatchObject({ seq: 5, data: { i: 5 } })

    const cps = join(tmp, 'cps')
    expect(await keel('audit', 'checkpoint', ...data, '--project', 'acme', '--key', join(tmp, 'k.key'), '--dir', cps)).toBe(0)
    expect(stdout).toContain('000000000005.json (seq 5)')

    const bundle = join(tmp, 'bundle')
    expect(await keel('audit', 'export', ...data, '--project', 'acme', '--key', join(tmp, 'k.key'), '--out', bundle, '--checkpoints', cps)).toBe(0)
    expect(stdout).toContain('exported 5 records of acme')

    expect(await keel('audit', 'verify', bundle, '--pubkey', join(tmp, 'k.pub'))).toBe(0)
    expect(stdout).toMatch(/^OK: bundle/)
    expect(await keel('audit', 'verify', '--project', 'acme', ...data, '--checkpoints', cps, '--pubkey', join(tmp, 'k.pub'))).toBe(0)

    const text = await readFile(join(bundle, 'records.jsonl'), 'utf8')
    await writeFile(join(bundle, 'records.jsonl'), text.replace('h2.test', 'hX.test'))
    expect(await keel('audit', 'verify', bundle, '--pubkey', join(tmp, 'k.pub'))).toBe(1)
    expect(stdout).toMatch(/^FAILED: bundle/)
    expect(stdout).toContain('record_changed: record 2 (line 2)')
    expect(await keel('audit', 'verify', bundle, '--pubkey', join(tmp, 'k.pub'), '--json')).toBe(1)
    const report = JSON.parse(stdout) as { ok: boolean; findings: Array<{ code: string; seq: number }> }
    expect(report.ok).toBe(false)
    expect(report.findings.map((f) => [f.code, f.seq])).toEqual([['record_changed', 2]])

    // Replaced key.
    expect(await keel('audit', 'keygen', '--out', join(tmp, 'evil'))).toBe(0)
    expect(await keel('audit', 'export', ...data, '--project', 'acme', '--key', join(tmp, 'evil.key'), '--out', join(tmp, 'b2'))).toBe(0)
    expect(await keel('audit', 'verify', join(tmp, 'b2'), '--pubkey', join(tmp, 'k.pub'))).toBe(1)
    expect(stdout).toContain('key_mismatch')
  })

  it('torn tail: append refuses, repair quarantines, append continues', async () => {
    const data = ['--data-dir', join(tmp, 'logs')]
    const add = () => keel('audit', 'append', ...data, '--project', 'p', '--event', 'e', '--reason', 'r', '--actor', 'a', '--subject', 's')
    expect(await add()).toBe(0)
    await appendFile(join(tmp, 'logs', 'p.jsonl'), '{"v":1,"seq"')
    expect(await add()).toBe(1)
    expect(stderr).toContain('torn last line')
    expect(await keel('audit', 'verify', '--project', 'p', ...data)).toBe(1)
    expect(stdout).toContain('torn_tail')
    expect(await keel('audit', 'repair', ...data, '--project', 'p')).toBe(0)
    expect(stdout).toMatch(/moved 12 bytes from offset \d+ to .*p\.jsonl\.torn-\d+/)
    expect(await add()).toBe(0)
    expect(stdout).toContain('#2')
  })

  it('usage errors exit 2', async () => {
    expect(await keel('audit', 'verify')).toBe(2)
    expect(await keel('audit', 'verify', tmp)).toBe(2) // no --pubkey
    expect(await keel('audit', 'log', '--project', 'p', '--tail', '0')).toBe(2)
    expect(await keel('audit', 'append', '--project', '../etc', '--event', 'e', '--reason', 'r', '--actor', 'a', '--subject', 's', '--data-dir', tmp)).toBe(2)
    expect(await keel('audit', 'verify', '--help')).toBe(0)
    expect(stdout).toContain('Examples:')
  })
})
