import { readFile, stat, writeFile, appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { useCli } from '../../test-support/cli-harness.js'

const { io, keel } = useCli('keel-cli-audit-')

describe('keel audit', () => {
  it('keygen, append, log, checkpoint, export, verify; tampering exits 1 naming the record', async () => {
    const data = ['--data-dir', join(io.tmp, 'logs')]
    expect(await keel('audit', 'keygen', '--out', join(io.tmp, 'k'))).toBe(0)
    expect((await stat(join(io.tmp, 'k.key'))).mode & 0o777).toBe(0o600)
    expect(await keel('audit', 'keygen', '--out', join(io.tmp, 'k'))).toBe(2)
    expect(io.stderr).toContain('--force')

    for (let i = 1; i <= 5; i++) {
      expect(
        await keel('audit', 'append', ...data, '--project', 'acme', '--event', 'dispatch.egress_bound', '--reason', 'allowed', '--actor', 'agent:coder', '--subject', `h${i}.test:443`, '--data', `{"i":${i}}`),
      ).toBe(0)
    }
    expect(io.stdout).toMatch(/^appended acme #5 [0-9a-f]{64}\n$/)

    expect(await keel('audit', 'log', ...data, '--project', 'acme', '--tail', '2')).toBe(0)
    expect(io.stdout.trim().split('\n')).toHaveLength(2)
    expect(io.stdout).toContain('subject=h5.test:443')
    expect(await keel('audit', 'log', ...data, '--project', 'acme', '--tail', '1', '--json')).toBe(0)
    expect(JSON.parse(io.stdout)).toMatchObject({ seq: 5, data: { i: 5 } })

    const cps = join(io.tmp, 'cps')
    expect(await keel('audit', 'checkpoint', ...data, '--project', 'acme', '--key', join(io.tmp, 'k.key'), '--dir', cps)).toBe(0)
    expect(io.stdout).toContain('000000000005.json (seq 5)')

    const bundle = join(io.tmp, 'bundle')
    expect(await keel('audit', 'export', ...data, '--project', 'acme', '--key', join(io.tmp, 'k.key'), '--out', bundle, '--checkpoints', cps)).toBe(0)
    expect(io.stdout).toContain('exported 5 records of acme')

    expect(await keel('audit', 'verify', bundle, '--pubkey', join(io.tmp, 'k.pub'))).toBe(0)
    expect(io.stdout).toMatch(/^OK: bundle/)
    expect(await keel('audit', 'verify', '--project', 'acme', ...data, '--checkpoints', cps, '--pubkey', join(io.tmp, 'k.pub'))).toBe(0)

    const text = await readFile(join(bundle, 'records.jsonl'), 'utf8')
    await writeFile(join(bundle, 'records.jsonl'), text.replace('h2.test', 'hX.test'))
    expect(await keel('audit', 'verify', bundle, '--pubkey', join(io.tmp, 'k.pub'))).toBe(1)
    expect(io.stdout).toMatch(/^FAILED: bundle/)
    expect(io.stdout).toContain('record_changed: record 2 (line 2)')
    expect(await keel('audit', 'verify', bundle, '--pubkey', join(io.tmp, 'k.pub'), '--json')).toBe(1)
    const report = JSON.parse(io.stdout) as { ok: boolean; findings: Array<{ code: string; seq: number }> }
    expect(report.ok).toBe(false)
    expect(report.findings.map((f) => [f.code, f.seq])).toEqual([['record_changed', 2]])

    // Replaced key.
    expect(await keel('audit', 'keygen', '--out', join(io.tmp, 'evil'))).toBe(0)
    expect(await keel('audit', 'export', ...data, '--project', 'acme', '--key', join(io.tmp, 'evil.key'), '--out', join(io.tmp, 'b2'))).toBe(0)
    expect(await keel('audit', 'verify', join(io.tmp, 'b2'), '--pubkey', join(io.tmp, 'k.pub'))).toBe(1)
    expect(io.stdout).toContain('key_mismatch')
  })

  it('torn tail: append refuses, repair quarantines, append continues', async () => {
    const data = ['--data-dir', join(io.tmp, 'logs')]
    const add = () => keel('audit', 'append', ...data, '--project', 'p', '--event', 'e', '--reason', 'r', '--actor', 'a', '--subject', 's')
    expect(await add()).toBe(0)
    await appendFile(join(io.tmp, 'logs', 'p.jsonl'), '{"v":1,"seq"')
    expect(await add()).toBe(1)
    expect(io.stderr).toContain('torn last line')
    expect(await keel('audit', 'verify', '--project', 'p', ...data)).toBe(1)
    expect(io.stdout).toContain('torn_tail')
    expect(await keel('audit', 'repair', ...data, '--project', 'p')).toBe(0)
    expect(io.stdout).toMatch(/moved 12 bytes from offset \d+ to .*p\.jsonl\.torn-\d+/)
    expect(await add()).toBe(0)
    expect(io.stdout).toContain('#2')
  })

  it('usage errors exit 2', async () => {
    expect(await keel('audit', 'verify')).toBe(2)
    expect(await keel('audit', 'verify', io.tmp)).toBe(2) // no --pubkey
    expect(await keel('audit', 'log', '--project', 'p', '--tail', '0')).toBe(2)
    expect(await keel('audit', 'append', '--project', '../etc', '--event', 'e', '--reason', 'r', '--actor', 'a', '--subject', 's', '--data-dir', io.tmp)).toBe(2)
    expect(await keel('audit', 'verify', '--help')).toBe(0)
    expect(io.stdout).toContain('Examples:')
  })
})
