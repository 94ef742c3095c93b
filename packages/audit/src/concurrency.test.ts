/**
 * Cross-process safety: real child processes append to one log at once, through the
 * built package (dist), which is rebuilt first if it is older than the sources.
 */
import { execFile, spawn } from 'node:child_process'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { checkChain } from './chain.js'
import { auditLogPath, openAuditLog } from './log.js'

const run = promisify(execFile)
const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const WORKER = join(PKG, 'dist', 'testing', 'append-worker.js')

async function newestMtime(d: string): Promise<number> {
  let max = 0
  for (const e of await readdir(d, { withFileTypes: true })) {
    const p = join(d, e.name)
    if (e.isDirectory()) max = Math.max(max, await newestMtime(p))
    else if (!e.name.endsWith('.test.ts')) max = Math.max(max, (await stat(p)).mtimeMs)
  }
  return max
}

beforeAll(async () => {
  const built = await stat(WORKER).then((s) => s.mtimeMs, () => 0)
  if (built < (await newestMtime(join(PKG, 'src')))) {
    const tsc = join(PKG, '..', '..', 'node_modules', 'typescript', 'bin', 'tsc')
    await run(process.execPath, [tsc, '-p', join(PKG, 'tsconfig.json')], { timeout: 120_000 })
  }
}, 130_000)

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keel-audit-procs-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

function worker(id: number, count: number, fsync: string, concurrency = 1, goFile?: string) {
  return run(process.execPath, [WORKER, dir, 'p', String(id), String(count), fsync, String(concurrency), ...(goFile ? [goFile] : [])], { timeout: 60_000 })
}

describe('concurrent writers in separate processes', () => {
  it('4 processes × 150 appends (always and batch mixed): no lost record, seqs contiguous, chain intact', async () => {
    const per = 150
    // Appends are fast enough that one worker could finish before the next has started:
    // every worker waits for the go file, written once all four are ready.
    const go = join(tmpdir(), `keel-audit-go-${process.pid}-${Date.now()}`)
    const running = Promise.all([worker(0, per, 'always', 1, go), worker(1, per, 'batch', 8, go), worker(2, per, 'always', 1, go), worker(3, per, 'batch', 8, go)])
    for (let i = 0; i < 2000 && [0, 1, 2, 3].some((id) => !existsSync(`${go}.ready-${id}`)); i++) await new Promise((r) => setTimeout(r, 10))
    writeFileSync(go, '')
    const outs = await running.finally(() => {
      for (const f of [go, ...[0, 1, 2, 3].map((id) => `${go}.ready-${id}`)]) rmSync(f, { force: true })
    })
    for (const o of outs) expect(JSON.parse(o.stdout)).toMatchObject({ count: per })
    const path = auditLogPath(dir, 'p')
    const chain = await checkChain(path, 'p')
    expect(chain.findings).toEqual([])
    expect(chain.lines).toBe(4 * per)
    expect(chain.lastSeq).toBe(4 * per)
    const recs = (await readFile(path, 'utf8')).split('\n').slice(0, -1).map((l) => JSON.parse(l) as { actor: string; subject: string })
    for (let id = 0; id < 4; id++) {
      const mine = recs.filter((r) => r.actor === `worker:${id}`).map((r) => Number(r.subject)).sort((a, b) => a - b)
      expect(mine).toEqual(Array.from({ length: per }, (_, i) => i))
    }
    // Writers were really interleaved, not one after another.
    const switches = recs.filter((r, i) => i > 0 && r.actor !== recs[i - 1]!.actor).length
    expect(switches).toBeGreaterThan(3)
    expect((await readdir(dir)).sort()).toEqual(['p.jsonl'])
  }, 90_000)

  it('a writer killed while appending does not wedge the log', async () => {
    const child = spawn(process.execPath, [WORKER, dir, 'p', '9', '100000', 'always'], { stdio: 'ignore' })
    const path = auditLogPath(dir, 'p')
    // Wait (bounded) until it has written something, then kill it mid-stream.
    for (let i = 0; i < 200; i++) {
      const size = await stat(path).then((s) => s.size, () => 0)
      if (size > 2000) break
      await new Promise((r) => setTimeout(r, 25))
    }
    child.kill('SIGKILL')
    await new Promise((r) => child.once('exit', r))
    const log = openAuditLog({ dir, project: 'p', lockTimeoutMs: 5000 })
    const rec = await log.append({ event: 'after.kill', reason: 'allowed', actor: 'parent', subject: 'x' })
    await log.close()
    const chain = await checkChain(path, 'p')
    expect(chain.findings).toEqual([])
    expect(chain.lastSeq).toBe(rec.seq)
  }, 30_000)
})

describe('lock file', () => {
  const lockOf = () => `${auditLogPath(dir, 'p')}.lock`

  it('steals a lock left by a dead process', async () => {
    const { stdout } = await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
    await writeFile(lockOf(), JSON.stringify({ pid: Number(stdout), host: hostname(), token: 'dead' }))
    const log = openAuditLog({ dir, project: 'p', lockTimeoutMs: 2000 })
    expect((await log.append({ event: 'e', reason: 'r', actor: 'a', subject: 's' })).seq).toBe(1)
    await log.close()
    expect(await readdir(dir)).toEqual(['p.jsonl'])
  })

  it('steals a lock whose pid was reused (start time differs)', async () => {
    await writeFile(lockOf(), JSON.stringify({ pid: process.pid, start: '1', host: hostname(), token: 'old' }))
    const log = openAuditLog({ dir, project: 'p', lockTimeoutMs: 2000 })
    await expect(log.append({ event: 'e', reason: 'r', actor: 'a', subject: 's' })).resolves.toMatchObject({ seq: 1 })
    await log.close()
  })

  it('waits for a live holder, then times out with ERR_AUDIT_IO naming it', async () => {
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' })
    try {
      await writeFile(lockOf(), JSON.stringify({ pid: sleeper.pid, host: hostname(), token: 'live' }))
      const log = openAuditLog({ dir, project: 'p', lockTimeoutMs: 300 })
      const t0 = Date.now()
      await expect(log.append({ event: 'e', reason: 'r', actor: 'a', subject: 's' })).rejects.toMatchObject({
        code: 'ERR_AUDIT_IO',
        message: expect.stringContaining(`held by pid ${sleeper.pid}`),
      })
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250)
      // The live holder's lock is untouched.
      expect(JSON.parse(await readFile(lockOf(), 'utf8'))).toMatchObject({ token: 'live' })
      await log.close()
    } finally {
      sleeper.kill('SIGKILL')
    }
  })

  it('removes the private lock file a dead process left behind, keeps a live one', async () => {
    const { stdout } = await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
    const dead = `${lockOf()}.${stdout}.${'a'.repeat(24)}`
    await writeFile(dead, JSON.stringify({ pid: Number(stdout), host: hostname(), token: 'a'.repeat(24) }))
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' })
    try {
      const live = `${lockOf()}.${sleeper.pid}.${'b'.repeat(24)}`
      await writeFile(live, JSON.stringify({ pid: sleeper.pid, host: hostname(), token: 'b'.repeat(24) }))
      const log = openAuditLog({ dir, project: 'p', lockTimeoutMs: 2000 })
      await log.append({ event: 'e', reason: 'r', actor: 'a', subject: 's' })
      await log.close()
      expect((await readdir(dir)).sort()).toEqual(['p.jsonl', `p.jsonl.lock.${sleeper.pid}.${'b'.repeat(24)}`])
    } finally {
      sleeper.kill('SIGKILL')
    }
  })

  it('a holder on another host is never presumed dead', async () => {
    await writeFile(lockOf(), JSON.stringify({ pid: 1, host: `not-${hostname()}`, token: 'remote' }))
    const log = openAuditLog({ dir, project: 'p', lockTimeoutMs: 200 })
    await expect(log.append({ event: 'e', reason: 'r', actor: 'a', subject: 's' })).rejects.toMatchObject({ code: 'ERR_AUDIT_IO' })
    await log.close()
  })
})
