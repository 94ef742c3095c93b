import { generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { exportBundle, verifyBundle, verifyLog } from './bundle.js'
import { writeCheckpoint } from './checkpoint.js'
import { ALL_VERIFY_CODES, VerifyCode } from './codes.js'
import type { Finding } from './codes.js'
import { encodeRecord, genesisHash, sha256Hex } from './format.js'
import type { AuditRecord } from './format.js'
import { signBytes } from './keys.js'
import { auditLogPath, openAuditLog } from './log.js'

const N = 10
let tmp: string
let key: { privateKey: KeyObject; publicKey: KeyObject }

async function makeLog(project: string, n: number, dir = join(tmp, 'logs')): Promise<string> {
  const log = openAuditLog({ dir, project, fsync: 'never', clock: () => Date.UTC(2025, 0, 1) })
  for (let i = 1; i <= n; i++) {
    await log.append({ event: 'dispatch.egress_bound', reason: 'allowed', actor: `agent:a${i}`, subject: `host-${i}.test:443`, data: { i } })
  }
  await log.close()
  return dir
}

async function makeBundle(n = N, project = 'proj'): Promise<string> {
  const dir = await makeLog(project, n)
  const out = join(tmp, `bundle-${Math.random().toString(36).slice(2)}`)
  await exportBundle({ dir, project, key: key.privateKey, out })
  return out
}

async function lines(bundle: string): Promise<string[]> {
  const text = await readFile(join(bundle, 'records.jsonl'), 'utf8')
  return text.split('\n').slice(0, -1)
}

async function writeLines(bundle: string, ls: string[], trailingNewline = true): Promise<void> {
  await writeFile(join(bundle, 'records.jsonl'), ls.join('\n') + (trailingNewline && ls.length ? '\n' : ''))
}

/** Line `seq` (1-based) edited through a function of the parsed record, re-serialized. */
function edit(line: string, f: (r: AuditRecord & Record<string, unknown>) => void): string {
  const r = JSON.parse(line) as AuditRecord & Record<string, unknown>
  f(r)
  return JSON.stringify(r)
}

const summary = (fs: Finding[]) => fs.map((f) => [f.code, f.seq ?? null, f.seqEnd ?? null, f.line ?? null])

async function verify(bundle: string, extra: Partial<Parameters<typeof verifyBundle>[0]> = {}) {
  return verifyBundle({ bundle, publicKey: key.publicKey, ...extra })
}

beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'keel-audit-verify-'))
  key = generateKeyPairSync('ed25519')
})
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true })
})

describe('verifyBundle: an untouched bundle', () => {
  it('verifies, with the signature and every record', async () => {
    const b = await makeBundle()
    const r = await verify(b)
    expect(r.findings).toEqual([])
    expect(r).toMatchObject({ ok: true, records: N, lastSeq: N, signatureValid: true })
  })

  it('verifies an empty log export', async () => {
    const dir = join(tmp, 'logs')
    const log = openAuditLog({ dir, project: 'empty', fsync: 'never' })
    await log.append({ event: 'x', reason: 'allowed', actor: 'a', subject: 's' })
    await log.close()
    await writeFile(auditLogPath(dir, 'empty'), '')
    const out = join(tmp, 'b-empty')
    const { manifest } = await exportBundle({ dir, project: 'empty', key: key.privateKey, out })
    expect(manifest).toMatchObject({ count: 0, firstSeq: 0, lastSeq: 0, headHash: genesisHash('empty') })
    expect((await verify(out)).ok).toBe(true)
  })
})

describe('verifyBundle: each kind of tampering names the record', () => {
  // [name, tamper(lines) → lines, expected findings: [code, seq, seqEnd, line]]
  const cases: Array<[string, (ls: string[]) => string[], unknown[][]]> = [
    ['changed field in a middle record', (ls) => ls.map((l, i) => (i === 4 ? edit(l, (r) => (r.reason = 'deny_policy')) : l)), [[VerifyCode.RECORD_CHANGED, 5, null, 5]]],
    ['changed field in the first record', (ls) => ls.map((l, i) => (i === 0 ? edit(l, (r) => (r.actor = 'agent:evil')) : l)), [[VerifyCode.RECORD_CHANGED, 1, null, 1]]],
    ['changed field in the last record', (ls) => ls.map((l, i) => (i === N - 1 ? edit(l, (r) => (r.subject = 'evil.test:443')) : l)), [[VerifyCode.RECORD_CHANGED, N, null, N]]],
    ['changed data in a record (whitespace only)', (ls) => ls.map((l, i) => (i === 2 ? l.replace('"data":{', '"data": {') : l)), [[VerifyCode.RECORD_CHANGED, 3, null, 3]]],
    // The chain cannot tell "prev of 7 changed" from "6 changed too": record 7 is certain, the 6→7 link is reported.
    ['changed prev field', (ls) => ls.map((l, i) => (i === 6 ? edit(l, (r) => (r.prev = '0'.repeat(64))) : l)), [[VerifyCode.CHAIN_BROKEN, 6, null, 6], [VerifyCode.RECORD_CHANGED, 7, null, 7]]],
    ['changed two adjacent records', (ls) => ls.map((l, i) => (i === 2 || i === 3 ? edit(l, (r) => (r.actor = 'agent:evil')) : l)), [[VerifyCode.CHAIN_BROKEN, 3, null, 3], [VerifyCode.RECORD_CHANGED, 4, null, 4]]],
    // Every record changed: each certain change is reported, and every other link as broken (either side may hold the change).
    ['changed every record (sed over the file)', (ls) => ls.map((l) => l.replace('agent:', 'agent:x')), Array.from({ length: N }, (_, i) => [i % 2 ? VerifyCode.RECORD_CHANGED : VerifyCode.CHAIN_BROKEN, i + 1, null, i + 1])],
    ['changed seq field', (ls) => ls.map((l, i) => (i === 3 ? edit(l, (r) => (r.seq = 99)) : l)), [[VerifyCode.RECORD_CHANGED, 4, null, 4]]],
    ['record made unparsable', (ls) => ls.map((l, i) => (i === 5 ? l.slice(0, 40) + '#' + l.slice(41) : l)), [[VerifyCode.RECORD_CHANGED, 6, null, 6]]],
    ['deleted a middle record', (ls) => ls.filter((_, i) => i !== 4), [[VerifyCode.RECORD_DELETED, 5, 5, 5]]],
    ['deleted three records', (ls) => ls.filter((_, i) => i < 3 || i > 5), [[VerifyCode.RECORD_DELETED, 4, 6, 4]]],
    ['deleted the first record', (ls) => ls.slice(1), [[VerifyCode.RECORD_DELETED, 1, 1, 1]]],
    [
      'inserted a forged record that links to its predecessor',
      (ls) => {
        const forged = encodeRecord({ ...(JSON.parse(ls[3]!) as AuditRecord), seq: 5, subject: 'forged', prev: sha256Hex(ls[3]!) })
        return [...ls.slice(0, 4), forged, ...ls.slice(4)]
      },
      [[VerifyCode.RECORD_INSERTED, 5, null, 5]],
    ],
    ['inserted a duplicate of a record', (ls) => [...ls.slice(0, 3), ls[2]!, ...ls.slice(3)], [[VerifyCode.RECORD_INSERTED, 3, null, 4]]],
    ['inserted garbage', (ls) => [...ls.slice(0, 2), 'hello', ...ls.slice(2)], [[VerifyCode.RECORD_MALFORMED, null, null, 3]]],
    ['reordered two records', (ls) => [...ls.slice(0, 3), ls[4]!, ls[3]!, ...ls.slice(5)], [[VerifyCode.RECORDS_REORDERED, 5, null, 4]]],
    ['moved a record to the end', (ls) => [...ls.slice(0, 2), ...ls.slice(3), ls[2]!], [[VerifyCode.RECORDS_REORDERED, 4, null, 3]]],
    ['truncated the tail', (ls) => ls.slice(0, N - 3), [[VerifyCode.TRUNCATED, N - 2, N, N - 2]]],
    ['truncated everything', () => [], [[VerifyCode.TRUNCATED, 1, N, 1]]],
  ]

  it.each(cases)('%s', async (_name, tamper, expected) => {
    const b = await makeBundle()
    await writeLines(b, tamper(await lines(b)))
    const r = await verify(b)
    expect(r.ok).toBe(false)
    expect(summary(r.findings)).toEqual(expected)
    expect(r.signatureValid).toBe(true) // the manifest itself was not touched
  })

  it('truncated mid-line: the torn tail and the missing records', async () => {
    const b = await makeBundle()
    const text = await readFile(join(b, 'records.jsonl'))
    const cut = text.length - 50
    await writeFile(join(b, 'records.jsonl'), text.subarray(0, cut))
    const r = await verify(b)
    expect(summary(r.findings)).toEqual([
      [VerifyCode.TRUNCATED, N, N, N],
      [VerifyCode.TORN_TAIL, null, null, N],
    ])
    expect(r.findings[1]!.offset).toBe(text.lastIndexOf('\n', text.length - 2) + 1)
  })

  it('a chain recomputed after an edit fails at the signed head', async () => {
    const b = await makeBundle()
    const ls = await lines(b)
    let prev = genesisHash('proj')
    const rechained = ls.map((l, i) => {
      const r = JSON.parse(l) as AuditRecord
      if (i === 4) r.reason = 'rewritten'
      r.prev = prev
      const line = encodeRecord(r)
      prev = sha256Hex(line)
      return line
    })
    await writeLines(b, rechained)
    const r = await verify(b)
    expect(summary(r.findings)).toEqual([[VerifyCode.RECORD_CHANGED, N, null, N]])
    expect(r.findings[0]!.message).toContain('signed head')
  })

  it('changed manifest: signature_invalid', async () => {
    const b = await makeBundle()
    const m = await readFile(join(b, 'manifest.json'), 'utf8')
    await writeFile(join(b, 'manifest.json'), m.replace(`"count": ${N}`, `"count": ${N + 1}`))
    const r = await verify(b)
    expect(r.findings[0]).toMatchObject({ code: VerifyCode.SIGNATURE_INVALID, file: 'manifest.sig' })
    expect(r.signatureValid).toBe(false)
  })

  it('missing signature: signature_invalid', async () => {
    const b = await makeBundle()
    await rm(join(b, 'manifest.sig'))
    expect((await verify(b)).findings[0]).toMatchObject({ code: VerifyCode.SIGNATURE_INVALID })
  })

  it('replaced key (re-signed by another key, pubkey.pem swapped): key_mismatch', async () => {
    const b = await makeBundle()
    const attacker = generateKeyPairSync('ed25519')
    // The attacker drops record 5, rewrites the chain and manifest, and signs with their key.
    const dir = await makeLog('proj', N - 1, join(tmp, 'attacker-logs'))
    const forged = join(tmp, 'forged')
    await exportBundle({ dir, project: 'proj', key: attacker.privateKey, out: forged })
    const r = await verify(forged)
    expect(summary(r.findings)).toEqual([[VerifyCode.KEY_MISMATCH, null, null, null]])
    expect(r.findings[0]!.message).toContain('key was replaced')
    // The same with only pubkey.pem swapped in the genuine bundle.
    await writeFile(join(b, 'pubkey.pem'), attacker.publicKey.export({ type: 'spki', format: 'pem' }))
    expect(summary((await verify(b)).findings)).toEqual([[VerifyCode.KEY_MISMATCH, null, null, null]])
  })

  it('re-signed manifest that keeps the victim fingerprint: signature_invalid', async () => {
    const b = await makeBundle()
    const attacker = generateKeyPairSync('ed25519')
    await writeFile(join(b, 'manifest.sig'), signBytes(await readFile(join(b, 'manifest.json')), attacker.privateKey))
    expect((await verify(b)).findings[0]).toMatchObject({ code: VerifyCode.SIGNATURE_INVALID })
  })

  it('manifest missing or malformed: manifest_invalid', async () => {
    const b = await makeBundle()
    await writeFile(join(b, 'manifest.json'), '{')
    const r = await verify(b)
    expect(r.findings.map((f) => f.code)).toEqual([VerifyCode.SIGNATURE_INVALID, VerifyCode.MANIFEST_INVALID])
    await rm(join(b, 'manifest.json'))
    expect((await verify(b)).findings.map((f) => f.code)).toEqual([VerifyCode.MANIFEST_INVALID])
  })

  it('trailing bytes outside any record: torn_tail', async () => {
    const b = await makeBundle()
    await writeFile(join(b, 'records.jsonl'), Buffer.concat([await readFile(join(b, 'records.jsonl')), Buffer.from('xx')]))
    expect(summary((await verify(b)).findings)).toEqual([[VerifyCode.TORN_TAIL, null, null, N + 1]])
  })

  it('records spliced from another project: record 1 reported changed', async () => {
    const b = await makeBundle()
    const other = await makeLog('other', N, join(tmp, 'other-logs'))
    const ls = (await readFile(auditLogPath(other, 'other'), 'utf8')).split('\n').slice(0, -1)
    const mine = await lines(b)
    await writeLines(b, [...ls.slice(0, 2), ...mine.slice(2)])
    const r = await verify(b)
    expect(r.ok).toBe(false)
    expect(r.findings.map((f) => [f.code, f.seq])).toEqual([
      [VerifyCode.RECORD_CHANGED, 1],
      [VerifyCode.RECORD_CHANGED, 2],
    ])
  })
})

describe('checkpoints catch a chain rewritten from scratch', () => {
  it('verifyLog and verifyBundle report checkpoint_mismatch, bracketing the first wrong record', async () => {
    const dir = await makeLog('proj', 30)
    const cps = join(tmp, 'cps')
    // Checkpoints at 10 and 20 and 30, as a Checkpointer would write them.
    const path = auditLogPath(dir, 'proj')
    const original = (await readFile(path, 'utf8')).split('\n').slice(0, -1)
    for (const seq of [10, 20, 30]) {
      await writeCheckpoint({ dir: cps, key: key.privateKey, head: { project: 'proj', seq, hash: sha256Hex(original[seq - 1]!) } })
    }
    expect((await verifyLog({ dir, project: 'proj', checkpointsDir: cps, publicKey: key.publicKey })).ok).toBe(true)

    // Rewrite from scratch: drop record 15 and rebuild a perfect chain of 29 records.
    let prev = genesisHash('proj')
    const rewritten = original
      .filter((_, i) => i !== 14)
      .map((l, i) => {
        const r = JSON.parse(l) as AuditRecord
        r.seq = i + 1
        r.prev = prev
        const line = encodeRecord(r)
        prev = sha256Hex(line)
        return line
      })
    await writeFile(path, rewritten.join('\n') + '\n')

    const live = await verifyLog({ dir, project: 'proj', checkpointsDir: cps, publicKey: key.publicKey })
    expect(live.findings.map((f) => [f.code, f.seq])).toEqual([
      [VerifyCode.CHECKPOINT_MISMATCH, 20],
      [VerifyCode.CHECKPOINT_MISMATCH, 30],
    ])
    expect(live.findings[0]!.message).toContain('from record 11 on (at most 20)')
    expect(live.findings[1]!.message).toContain('ends at record 29')

    // A fresh export of the rewritten log signs fine; the operator's checkpoints catch it.
    const out = join(tmp, 'rewritten-bundle')
    await exportBundle({ dir, project: 'proj', key: key.privateKey, out })
    const withoutCps = await verify(out)
    expect(withoutCps.ok).toBe(true)
    const withCps = await verify(out, { checkpointsDir: cps })
    expect(withCps.findings.map((f) => [f.code, f.seq])).toEqual([
      [VerifyCode.CHECKPOINT_MISMATCH, 20],
      [VerifyCode.CHECKPOINT_MISMATCH, 30],
    ])
    // And export with the checkpoints refuses to sign it at all.
    await expect(exportBundle({ dir, project: 'proj', key: key.privateKey, out: join(tmp, 'b2'), checkpointsDir: cps })).rejects.toMatchObject({
      code: 'ERR_AUDIT_VERIFY',
    })
  })

  it('checkpoints newer than a bundle are out of scope; older ones past its end prove records were left out', async () => {
    const dir = await makeLog('proj', 12)
    const cps = join(tmp, 'cps')
    let now = Date.UTC(2025, 0, 1)
    const clock = () => now
    const out = join(tmp, 'old-bundle')
    await exportBundle({ dir, project: 'proj', key: key.privateKey, out, clock })
    now += 60_000
    const log = openAuditLog({ dir, project: 'proj', fsync: 'never' })
    for (let i = 0; i < 8; i++) await log.append({ event: 'e', reason: 'allowed', actor: 'a', subject: String(i) })
    await writeCheckpoint({ dir: cps, key: key.privateKey, head: await log.head(), clock })
    await log.close()
    const r = await verify(out, { checkpointsDir: cps })
    expect(r.findings).toEqual([])
    expect(r.checkpoints).toMatchObject({ checked: 0, skipped: 1 })

    // Now the other way round: the log reached 20 (checkpointed), then was cut to 15 and exported.
    const path = auditLogPath(dir, 'proj')
    const ls = (await readFile(path, 'utf8')).split('\n').slice(0, -1)
    await writeFile(path, ls.slice(0, 15).join('\n') + '\n')
    now += 60_000
    const cut = join(tmp, 'cut-bundle')
    await exportBundle({ dir, project: 'proj', key: key.privateKey, out: cut, clock })
    const c = await verify(cut, { checkpointsDir: cps })
    expect(c.findings.map((f) => [f.code, f.seq])).toEqual([[VerifyCode.CHECKPOINT_MISMATCH, 20]])
    expect(c.findings[0]!.message).toContain('records were removed before the export')
  })

  it('bundled checkpoints: signature, tampering with the copy, and key', async () => {
    const dir = await makeLog('proj', 12)
    const cps = join(tmp, 'cps')
    const log = openAuditLog({ dir, project: 'proj', fsync: 'never' })
    await writeCheckpoint({ dir: cps, key: key.privateKey, head: await log.head() })
    await log.close()
    const out = join(tmp, 'b')
    const { manifest } = await exportBundle({ dir, project: 'proj', key: key.privateKey, out, checkpointsDir: cps })
    expect(manifest.checkpoints).toHaveLength(1)
    expect((await verify(out)).checkpoints).toMatchObject({ checked: 1, matched: 1 })

    const cpFile = join(out, manifest.checkpoints[0]!.file)
    const text = await readFile(cpFile, 'utf8')
    await writeFile(cpFile, text.replace('"seq": 12', '"seq": 11'))
    expect((await verify(out)).findings.map((f) => f.code)).toEqual([VerifyCode.CHECKPOINT_INVALID])
    await writeFile(cpFile, text)

    const sigFile = join(out, manifest.checkpoints[0]!.signature)
    const sig = await readFile(sigFile)
    sig[0] = sig[0]! ^ 1
    await writeFile(sigFile, sig)
    expect((await verify(out)).findings.map((f) => f.code)).toEqual([VerifyCode.CHECKPOINT_SIGNATURE_INVALID])
  })
})

describe('verifyLog (live log, no manifest)', () => {
  it('finds a changed record and a torn tail', async () => {
    const dir = await makeLog('proj', 8)
    const path = auditLogPath(dir, 'proj')
    const ls = (await readFile(path, 'utf8')).split('\n').slice(0, -1)
    ls[2] = edit(ls[2]!, (r) => (r.event = 'changed'))
    await writeFile(path, ls.join('\n') + '\n{"v":1,"seq":9')
    const r = await verifyLog({ dir, project: 'proj' })
    expect(summary(r.findings)).toEqual([
      [VerifyCode.RECORD_CHANGED, 3, null, 3],
      [VerifyCode.TORN_TAIL, null, null, 9],
    ])
  })

  it('an absent log is an empty, valid chain', async () => {
    const r = await verifyLog({ dir: join(tmp, 'none'), project: 'proj' })
    expect(r).toMatchObject({ ok: true, records: 0 })
  })
})

describe('codes', () => {
  it('are unique snake_case strings', () => {
    expect(new Set(ALL_VERIFY_CODES).size).toBe(ALL_VERIFY_CODES.length)
    for (const c of ALL_VERIFY_CODES) expect(c).toMatch(/^[a-z]+(_[a-z]+)*$/)
  })
})
