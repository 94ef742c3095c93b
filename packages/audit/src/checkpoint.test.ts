import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { encodeCheckpoint, listCheckpoints, parseCheckpoint, withCheckpoints } from './checkpoint.js'
import { verifyLog } from './bundle.js'
import { keyFingerprint, verifyBytes } from './keys.js'
import { createAuditSink, openAuditLog } from './log.js'

let tmp: string
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'keel-audit-cp-'))
})
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true })
})
const key = generateKeyPairSync('ed25519')
const ev = (i: number) => ({ event: 'e', reason: 'allowed', actor: 'a', subject: String(i) })

describe('withCheckpoints', () => {
  it('writes a signed checkpoint at every multiple of everyRecords', async () => {
    const cps = join(tmp, 'cps')
    const log = withCheckpoints(openAuditLog({ dir: join(tmp, 'logs'), project: 'p', fsync: 'never' }), {
      dir: cps,
      key: key.privateKey,
      everyRecords: 4,
      clock: () => Date.UTC(2025, 0, 1),
    })
    const recs = []
    for (let i = 0; i < 10; i++) recs.push(await log.append(ev(i)))
    await log.close()
    const files = await listCheckpoints(cps, 'p')
    expect(files.map((f) => f.seq)).toEqual([4, 8])
    const bytes = await readFile(files[1]!.path)
    expect(bytes.toString()).toBe(
      encodeCheckpoint({
        format: 'keel.audit.checkpoint/v1',
        project: 'p',
        seq: 8,
        headHash: recs[7]!.hash,
        time: '2025-01-01T00:00:00.000Z',
        publicKeyFingerprint: keyFingerprint(key.publicKey),
      }),
    )
    expect(files[1]!.path.endsWith('/p/000000000008.json')).toBe(true)
    expect(verifyBytes(bytes, await readFile(files[1]!.signaturePath), key.publicKey)).toBe(true)
    expect(parseCheckpoint(bytes)).toMatchObject({ seq: 8 })
    expect(parseCheckpoint(Buffer.from('{}'))).toBe('unknown format undefined')
  })

  it('also on a timer (everyMs), only when the head moved, including other writers\' records', async () => {
    const cps = join(tmp, 'cps')
    const dir = join(tmp, 'logs')
    const log = withCheckpoints(openAuditLog({ dir, project: 'p', fsync: 'never' }), { dir: cps, key: key.privateKey, everyMs: 30 })
    await log.append(ev(1))
    // Another handle (as another process would) appends too.
    const other = openAuditLog({ dir, project: 'p', fsync: 'always' })
    await other.append(ev(2))
    await other.close()
    for (let i = 0; i < 100 && (await listCheckpoints(cps, 'p')).length === 0; i++) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 100))
    await log.close()
    expect((await listCheckpoints(cps, 'p')).map((f) => f.seq)).toEqual([2])
    const r = await verifyLog({ dir, project: 'p', checkpointsDir: cps, publicKey: key.publicKey })
    expect(r.ok).toBe(true)
  })

  it('a failing checkpoint never fails the append; the error goes to onError', async () => {
    const errors: unknown[] = []
    await writeFile(join(tmp, 'a-file'), '')
    const log = withCheckpoints(openAuditLog({ dir: join(tmp, 'logs'), project: 'p', fsync: 'never' }), {
      dir: join(tmp, 'a-file', 'cps'), // ENOTDIR
      key: key.privateKey,
      everyRecords: 1,
      onError: (e) => errors.push(e),
    })
    await expect(log.append(ev(1))).resolves.toMatchObject({ seq: 1 })
    await log.idle()
    await log.close()
    expect(errors).toHaveLength(1)
  })

  it('createAuditSink({ checkpoints }) checkpoints each project', async () => {
    const cps = join(tmp, 'cps')
    const sink = createAuditSink({ dir: join(tmp, 'logs'), fsync: 'batch', checkpoints: { dir: cps, key: key.privateKey, everyRecords: 2 } })
    for (let i = 0; i < 4; i++) await sink.record({ project: i % 2 ? 'a' : 'b', ...ev(i) })
    await sink.record({ project: 'a', ...ev(9) })
    await sink.close()
    expect((await listCheckpoints(cps, 'a')).map((f) => f.seq)).toEqual([2])
    expect((await listCheckpoints(cps, 'b')).map((f) => f.seq)).toEqual([2])
  })

  it('rejects a bad cadence and a non-Ed25519 key up front', () => {
    const log = openAuditLog({ dir: join(tmp, 'logs'), project: 'p' })
    expect(() => withCheckpoints(log, { dir: tmp, key: key.privateKey, everyRecords: 0 })).toThrow(/positive integer/)
    expect(() => withCheckpoints(log, { dir: tmp, key: generateKeyPairSync('x25519').privateKey })).toThrow(/Ed25519/)
  })
})
