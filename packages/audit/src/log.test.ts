import { appendFile, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { isKeelError } from '@keel/core'
import { checkChain } from './chain.js'
import { buildRecord, buildRecordLine, encodeRecord, genesisHash, parseRecordLine, sha256Hex } from './format.js'
import { AuditTornTailError, auditLogPath, createAuditSink, openAuditLog, readAuditRecords, repairAuditLog } from './log.js'
import type { FsyncPolicy } from './log.js'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keel-audit-log-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

const ev = (i: number) => ({ event: 'dispatch.egress_bound', reason: 'allowed', actor: `agent:${i}`, subject: `s${i}` })

async function fileLines(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8')).split('\n').slice(0, -1)
}

describe('openAuditLog: format and chain', () => {
  it('writes one JSON line per record, seq from 1, prev chaining the exact line bytes', async () => {
    const log = openAuditLog({ dir, project: 'acme', clock: () => Date.UTC(2025, 5, 1, 12) })
    const r1 = await log.append({ ...ev(1), data: { model: 'claude', tokens: 12 } })
    const r2 = await log.append({ ...ev(2), time: Date.UTC(2025, 0, 2) })
    await log.close()
    const lines = await fileLines(auditLogPath(dir, 'acme'))
    expect(lines).toHaveLength(2)
    expect(JSON.parse(lines[0]!)).toEqual({
      v: 1,
      seq: 1,
      time: '2025-06-01T12:00:00.000Z',
      project: 'acme',
      event: 'dispatch.egress_bound',
      reason: 'allowed',
      actor: 'agent:1',
      subject: 's1',
      data: { model: 'claude', tokens: 12 },
      prev: genesisHash('acme'),
    })
    expect(Object.keys(JSON.parse(lines[1]!))).toEqual(['v', 'seq', 'time', 'project', 'event', 'reason', 'actor', 'subject', 'prev'])
    expect(r1.hash).toBe(sha256Hex(lines[0]!))
    expect(r2).toMatchObject({ seq: 2, prev: r1.hash, time: '2025-01-02T00:00:00.000Z', hash: sha256Hex(lines[1]!) })
    expect(genesisHash('acme')).toBe(sha256Hex('keel-audit-v1:acme'))
  })

  it('continues the chain of an existing file (state comes from the file, not memory)', async () => {
    const a = openAuditLog({ dir, project: 'p' })
    await a.append(ev(1))
    await a.close()
    const b = openAuditLog({ dir, project: 'p' })
    const r = await b.append(ev(2))
    expect(r.seq).toBe(2)
    expect(await b.head()).toEqual({ project: 'p', seq: 2, hash: r.hash })
    await b.close()
  })

  it('head() of a missing log is seq 0 at the genesis hash', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    expect(await log.head()).toEqual({ project: 'p', seq: 0, hash: genesisHash('p') })
    await log.close()
  })

  it('log file mode 0640, lock file gone after appends', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    await log.append(ev(1))
    await log.close()
    expect((await stat(auditLogPath(dir, 'p'))).mode & 0o777).toBe(0o640)
    expect(await readdir(dir)).toEqual(['p.jsonl'])
  })

  it.each(['always', 'batch', 'never'] as FsyncPolicy[])('fsync %s: 300 concurrent appends in one process make one contiguous chain', async (fsync) => {
    const log = openAuditLog({ dir, project: 'p', fsync })
    const recs = await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(ev(i))))
    await log.close()
    expect(recs.map((r) => r.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
    // Each caller got the record with its own input.
    recs.forEach((r, i) => expect(r.subject).toBe(`s${i}`))
    const chain = await checkChain(auditLogPath(dir, 'p'), 'p')
    expect(chain.findings).toEqual([])
    expect(chain.lastSeq).toBe(300)
  })

  it('two handles on one file in one process interleave safely', async () => {
    const a = openAuditLog({ dir, project: 'p', fsync: 'batch' })
    const b = openAuditLog({ dir, project: 'p', fsync: 'always' })
    await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).append(ev(i))))
    await Promise.all([a.close(), b.close()])
    const chain = await checkChain(auditLogPath(dir, 'p'), 'p')
    expect(chain.findings).toEqual([])
    expect(chain.lines).toBe(100)
  })

  it('rejects bad events without touching the log', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    const bad = [
      { ...ev(1), event: '' },
      { ...ev(1), reason: 7 as unknown as string },
      { ...ev(1), data: [] as unknown as Record<string, unknown> },
      { ...ev(1), data: { big: 'x'.repeat(1024 * 1024) } },
      { ...ev(1), time: Number.NaN },
      { ...ev(1), project: 'other' },
    ]
    for (const e of bad) await expect(log.append(e)).rejects.toMatchObject({ code: 'ERR_USAGE' })
    const ok = await log.append(ev(2))
    expect(ok.seq).toBe(1)
    await log.close()
  })

  it('validates project names (no traversal)', () => {
    for (const p of ['', '..', '.hidden', 'a/b', 'a\\b', 'x'.repeat(129), 'a b']) {
      expect(() => openAuditLog({ dir, project: p })).toThrow(/invalid project name/)
    }
    expect(() => openAuditLog({ dir, project: 'Team_1.prod-2' })).not.toThrow()
  })

  it('record() (GovernanceSink) appends, and refuses another project', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    await log.record({ project: 'p', ...ev(1) })
    await expect(log.record({ project: 'q', ...ev(2) })).rejects.toMatchObject({ code: 'ERR_USAGE' })
    await log.close()
    expect(await fileLines(auditLogPath(dir, 'p'))).toHaveLength(1)
  })

  it('append after close rejects', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    await log.close()
    await expect(log.append(ev(1))).rejects.toMatchObject({ code: 'ERR_AUDIT_IO' })
  })
})

describe('a log that goes backwards under a running writer', () => {
  it('refuses to append after truncation, deletion or replacement', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    for (let i = 0; i < 3; i++) await log.append(ev(i))
    const path = auditLogPath(dir, 'p')
    const lines = await fileLines(path)
    await writeFile(path, lines.slice(0, 2).join('\n') + '\n')
    await expect(log.append(ev(9))).rejects.toMatchObject({ code: 'ERR_AUDIT_IO', message: expect.stringContaining('went backwards') })
    await rm(path)
    await expect(log.append(ev(9))).rejects.toThrow(/went backwards/)
    await expect(log.head()).rejects.toThrow(/went backwards/)
    // Same length, other content: a rewritten record 3.
    await writeFile(path, [...lines.slice(0, 2), lines[2]!.replace('agent:2', 'agent:X')].join('\n') + '\n')
    await expect(log.append(ev(9))).rejects.toThrow(/with another hash/)
    // Restored: appends continue.
    await writeFile(path, lines.join('\n') + '\n')
    await expect(log.append(ev(9))).resolves.toMatchObject({ seq: 4 })
    await log.close()
  })

  it('notices a last record rewritten in place (same inode, same size) since its own append', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    for (let i = 0; i < 3; i++) await log.append(ev(i))
    const path = auditLogPath(dir, 'p')
    const text = await readFile(path, 'utf8')
    const fh = await open(path, 'r+')
    await fh.write(text.replace('agent:2', 'agent:X'), 0)
    await fh.close()
    await expect(log.append(ev(9))).rejects.toThrow(/with another hash/)
    await log.close()
  })

  it('rejects times outside the Date range', async () => {
    const log = openAuditLog({ dir, project: 'p' })
    await expect(log.append({ ...ev(1), time: 1e20 })).rejects.toMatchObject({ code: 'ERR_USAGE' })
    await log.close()
  })
})

describe('buildRecordLine', () => {
  it('makes the same line as encodeRecord(buildRecord(...)), and the same record', () => {
    const inputs = [
      ev(1),
      { ...ev(2), time: 1_700_000_000_123, data: { b: 1, a: 'two', '10': 'ten', '2': 'two', nested: { x: [1, 'é', null, { y: true }] } } },
      { ...ev(3), data: { when: new Date(0), skip: undefined, f: () => 1, arr: [undefined, 1] } },
      { ...ev(4), subject: 'quote " backslash \\ newline \n \u2028', data: {} },
    ]
    for (const input of inputs) {
      const built = buildRecordLine(input, 'p', 7, genesisHash('p'), 1_600_000_000_000)
      const record = buildRecord(input, 'p', 7, genesisHash('p'), 1_600_000_000_000)
      expect(built.line).toBe(encodeRecord(record))
      expect(built.record()).toEqual(record)
      expect(parseRecordLine(built.line)).toEqual({ ok: true, record: JSON.parse(encodeRecord(record)) })
    }
  })
})

describe('deferred durability', () => {
  // Counts fdatasync calls on every FileHandle (the writer's included).
  async function spyDatasync() {
    const probe = await open(join(dir, 'probe'), 'w')
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }
    await probe.close()
    return vi.spyOn(proto, 'datasync')
  }
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('batch: deferred appends resolve without a sync; the sync follows within deferredSyncMs', async () => {
    const datasync = await spyDatasync()
    const log = openAuditLog({ dir, project: 'p', fsync: 'batch', deferredSyncMs: 30 })
    await log.append(ev(0)) // creates the file (and syncs it)
    datasync.mockClear()
    for (let i = 1; i <= 3; i++) await log.append(ev(i), { durability: 'deferred' })
    expect(datasync).not.toHaveBeenCalled()
    await vi.waitFor(() => expect(datasync).toHaveBeenCalledTimes(1), { timeout: 2000, interval: 10 })
    await log.close()
    const chain = await checkChain(auditLogPath(dir, 'p'), 'p')
    expect(chain.findings).toEqual([])
    expect(chain.lastSeq).toBe(4)
  })

  it('batch: a synced append covers the deferred ones before it (one sync, no timer sync after)', async () => {
    const datasync = await spyDatasync()
    const log = openAuditLog({ dir, project: 'p', fsync: 'batch', deferredSyncMs: 30 })
    await log.append(ev(0))
    datasync.mockClear()
    await log.append(ev(1), { durability: 'deferred' })
    await log.append(ev(2))
    expect(datasync).toHaveBeenCalledTimes(1)
    await new Promise((r) => setTimeout(r, 80))
    expect(datasync).toHaveBeenCalledTimes(1)
    await log.close()
  })

  it('close() syncs deferred records; fsync always still syncs each one', async () => {
    const datasync = await spyDatasync()
    const batch = openAuditLog({ dir, project: 'p', fsync: 'batch', deferredSyncMs: 60_000 })
    await batch.append(ev(0))
    datasync.mockClear()
    await batch.append(ev(1), { durability: 'deferred' })
    expect(datasync).not.toHaveBeenCalled()
    await batch.close()
    expect(datasync).toHaveBeenCalledTimes(1)
    datasync.mockClear()
    const always = openAuditLog({ dir, project: 'q', fsync: 'always' })
    await always.append(ev(0))
    await always.append(ev(1), { durability: 'deferred' })
    expect(datasync).toHaveBeenCalledTimes(2)
    await always.close()
  })

  it('a failed deferred sync fails the next append (fail closed), then appends go on', async () => {
    const datasync = await spyDatasync()
    const log = openAuditLog({ dir, project: 'p', fsync: 'batch', deferredSyncMs: 10 })
    await log.append(ev(0))
    datasync.mockClear()
    datasync.mockImplementationOnce(() => Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })))
    await log.append(ev(1), { durability: 'deferred' })
    await vi.waitFor(() => expect(datasync).toHaveBeenCalled(), { timeout: 2000, interval: 5 })
    await expect(log.append(ev(2))).rejects.toMatchObject({ code: 'ERR_AUDIT_IO', message: expect.stringContaining('earlier sync of this log failed') })
    await expect(log.append(ev(3))).resolves.toMatchObject({ seq: 3 })
    await log.close()
  })

  it('inline: a lone synced append syncs on the loop (no thread-pool datasync); queued ones do not', async () => {
    const datasync = await spyDatasync()
    const log = openAuditLog({ dir, project: 'p', fsync: 'batch' })
    await log.append(ev(0))
    datasync.mockClear()
    await log.append(ev(1), { inline: true })
    expect(datasync).not.toHaveBeenCalled()
    // Two at once: the second queues behind the first, so neither commit may block the loop.
    await Promise.all([log.append(ev(2), { inline: true }), log.append(ev(3))])
    expect(datasync).toHaveBeenCalled()
    await log.close()
    const chain = await checkChain(auditLogPath(dir, 'p'), 'p')
    expect(chain.findings).toEqual([])
    expect(chain.lastSeq).toBe(4)
  })

  it('record() on a sink passes the durability through', async () => {
    const datasync = await spyDatasync()
    const sink = createAuditSink({ dir, fsync: 'batch', deferredSyncMs: 60_000 })
    await sink.record({ project: 'p', ...ev(0) })
    datasync.mockClear()
    await sink.record({ project: 'p', ...ev(1) }, { durability: 'deferred' })
    expect(datasync).not.toHaveBeenCalled()
    await sink.close()
  })
})

describe('createAuditSink', () => {
  it('routes each event to its project chain', async () => {
    const sink = createAuditSink({ dir, fsync: 'batch' })
    await Promise.all([
      sink.record({ project: 'a', ...ev(1) }),
      sink.record({ project: 'b', ...ev(2) }),
      sink.record({ project: 'a', ...ev(3) }),
    ])
    const rec = await sink.append({ project: 'b', ...ev(4) })
    expect(rec).toMatchObject({ project: 'b', seq: 2 })
    await sink.close()
    expect((await fileLines(auditLogPath(dir, 'a'))).map((l) => JSON.parse(l).seq)).toEqual([1, 2])
    expect((await checkChain(auditLogPath(dir, 'b'), 'b')).findings).toEqual([])
    await expect(createAuditSink({ dir }).record({ project: '../x', ...ev(1) })).rejects.toThrow(/invalid project name/)
  })
})

describe('torn tail', () => {
  async function seeded(n: number) {
    const log = openAuditLog({ dir, project: 'p' })
    for (let i = 0; i < n; i++) await log.append(ev(i))
    return log
  }

  it('an append refuses a log whose last line has no newline, and says where', async () => {
    const log = await seeded(3)
    const path = auditLogPath(dir, 'p')
    const before = (await stat(path)).size
    await appendFile(path, '{"v":1,"seq":4,"ti')
    const err = await log.append(ev(9)).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AuditTornTailError)
    expect(isKeelError(err) && err.code).toBe('ERR_AUDIT_IO')
    expect(err).toMatchObject({ offset: before, length: 18 })
    expect((err as Error).message).toMatch(/torn last line.*keel audit repair/)
    await expect(log.head()).rejects.toBeInstanceOf(AuditTornTailError)
    // Nothing was merged: the torn bytes are still the file's last bytes.
    expect((await readFile(path, 'utf8')).endsWith('"ti')).toBe(true)
    await log.close()
  })

  it('an append refuses a complete but malformed last line', async () => {
    const log = await seeded(2)
    await appendFile(auditLogPath(dir, 'p'), 'garbage\n')
    await expect(log.append(ev(9))).rejects.toThrow(/malformed last record/)
    await log.close()
  })

  it('repair moves the torn bytes to a quarantine file, then appends continue the chain', async () => {
    const log = await seeded(3)
    const path = auditLogPath(dir, 'p')
    const size = (await stat(path)).size
    await appendFile(path, Buffer.from([0x7b, 0x00, 0x00]))
    const res = await repairAuditLog({ dir, project: 'p' })
    expect(res).toMatchObject({ repaired: true, offset: size, length: 3, quarantine: `${path}.torn-${size}` })
    expect(await readFile(res.quarantine!)).toEqual(Buffer.from([0x7b, 0x00, 0x00]))
    expect((await stat(path)).size).toBe(size)
    expect((await log.append(ev(4))).seq).toBe(4)
    expect(await repairAuditLog({ dir, project: 'p' })).toMatchObject({ repaired: false })
    await log.close()
    expect((await checkChain(path, 'p')).findings).toEqual([])
  })

  it('repair of a missing log does nothing', async () => {
    expect(await repairAuditLog({ dir, project: 'nope' })).toMatchObject({ repaired: false })
  })
})

describe('readAuditRecords', () => {
  it('returns the last N records with their hashes', async () => {
    const log = openAuditLog({ dir, project: 'p', fsync: 'never' })
    for (let i = 0; i < 5; i++) await log.append(ev(i))
    await log.close()
    const { records, malformed } = await readAuditRecords({ dir, project: 'p', tail: 2 })
    expect(records.map((r) => r.seq)).toEqual([4, 5])
    expect(malformed).toBe(0)
    const lines = await fileLines(auditLogPath(dir, 'p'))
    expect(records[1]!.hash).toBe(sha256Hex(lines[4]!))
    expect(parseRecordLine(lines[4]!).ok).toBe(true)
  })
})

describe('durability across a simulated crash', () => {
  it('a fresh writer after an interrupted one sees only complete records', async () => {
    const log = openAuditLog({ dir, project: 'p', fsync: 'always' })
    await log.append(ev(1))
    await log.close()
    const path = auditLogPath(dir, 'p')
    // A crash mid-write leaves a prefix of the next line; the writer must not build on it.
    const full = await readFile(path)
    await writeFile(path, Buffer.concat([full, Buffer.from('{"v":1,"seq":2,"time":"2025')]))
    const again = openAuditLog({ dir, project: 'p' })
    await expect(again.append(ev(2))).rejects.toBeInstanceOf(AuditTornTailError)
    await again.close()
  })
})
