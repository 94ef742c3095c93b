import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { BudgetLedger, bucketKey, type BudgetKey } from './ledger.js'
import { costMicroUsd, worstCaseMicroUsd } from './pricing.js'

const NOW = Date.UTC(2026, 0, 5, 12)
const project = (limit: number, period: 'total' | 'day' | 'month' = 'total'): BudgetKey => ({ scope: 'project', id: 'p', limit: { limitMicroUsd: limit, period } })
const agent = (limit: number): BudgetKey => ({ scope: 'agent', id: 'a', limit: { limitMicroUsd: limit, period: 'total' } })

describe('BudgetLedger', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })

  it('reserves atomically across keys, settles actual and releases', () => {
    const l = BudgetLedger.inMemory()
    const r1 = l.reserve([project(100), agent(50)], 40, NOW)
    expect(r1.ok).toBe(true)
    const r2 = l.reserve([project(100), agent(50)], 20, NOW)
    expect(r2).toMatchObject({ ok: false, scope: 'agent', id: 'a', reservedMicroUsd: 40 })
    // The failed reservation booked nothing on the project either.
    expect(l.state('project:p:total')).toEqual({ spentMicroUsd: 0, reservedMicroUsd: 40 })
    if (!r1.ok) throw new Error()
    l.settle(r1.reservation.id, 12, NOW)
    l.settle(r1.reservation.id, 99, NOW) // idempotent
    expect(l.state('agent:a:total')).toEqual({ spentMicroUsd: 12, reservedMicroUsd: 0 })
    const r3 = l.reserve([agent(50)], 38, NOW)
    expect(r3.ok).toBe(true)
    if (r3.ok) l.release(r3.reservation.id, NOW)
    expect(l.state('agent:a:total')).toEqual({ spentMicroUsd: 12, reservedMicroUsd: 0 })
  })

  it('N racing reservations admit exactly floor(limit / amount)', async () => {
    const l = BudgetLedger.inMemory()
    const results = await Promise.all(Array.from({ length: 50 }, async () => {
      await Promise.resolve()
      return l.reserve([project(1000)], 70, NOW)
    }))
    expect(results.filter((r) => r.ok)).toHaveLength(14)
    expect(l.state('project:p:total').reservedMicroUsd).toBe(980)
  })

  it('buckets by period', () => {
    expect(bucketKey(project(1, 'day'), NOW)).toBe('project:p:2026-01-05')
    expect(bucketKey(project(1, 'month'), NOW)).toBe('project:p:2026-01')
    expect(bucketKey(project(1), NOW)).toBe('project:p:total')
  })

  it('persists to a 0600 JSONL file; unsettled reservations replay as spent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-ledger-'))
    dirs.push(dir)
    const path = join(dir, 'ledger.jsonl')
    const l = await BudgetLedger.open({ path })
    const a = l.reserve([project(1000)], 100, NOW)
    const b = l.reserve([project(1000)], 200, NOW)
    if (!a.ok || !b.ok) throw new Error()
    l.settle(a.reservation.id, 30, NOW)
    await l.close()
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const l2 = await BudgetLedger.open({ path })
    expect(l2.state('project:p:total')).toEqual({ spentMicroUsd: 230, reservedMicroUsd: 0 })
    await l2.close()
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(1)
  })

  it('ignores a torn last line but refuses a corrupt file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-ledger-'))
    dirs.push(dir)
    const path = join(dir, 'ledger.jsonl')
    writeFileSync(path, '{"op":"snapshot","t":1,"buckets":{"project:p:total":5}}\n{"op":"reser')
    const l = await BudgetLedger.open({ path })
    expect(l.state('project:p:total').spentMicroUsd).toBe(5)
    await l.close()
    writeFileSync(path, 'garbage\n{"op":"snapshot","t":1,"buckets":{}}\n\n')
    await expect(BudgetLedger.open({ path })).rejects.toThrow(/corrupt/)
  })
})

describe('pricing', () => {
  const price = { model: '*', match: () => true, inputPerMTok: 0.15, outputPerMTok: 0.6, maxOutputTokens: 1000 }
  it('prices in micro-dollars, rounding up', () => {
    expect(costMicroUsd(price, 1_000_000, 0)).toBe(150_000)
    expect(costMicroUsd(price, 1, 1)).toBe(1)
    expect(worstCaseMicroUsd(price, 100, undefined)).toBe(Math.ceil(100 * 0.15 + 1000 * 0.6))
  })
})
