/**
 * The budget ledger: reserve the worst case before a call, settle the actual cost after.
 *
 * Atomic in-process: `reserve` checks every bucket and books the amount in one synchronous
 * step, so concurrent calls on the one event loop can never overspend (spent + reserved
 * never exceeds a limit). Amounts are integer micro-dollars.
 *
 * Persisted to an embedded JSONL file (DESIGN.md: "embedded files by default"): one line per
 * reserve / settle / release, appended in order. On open the file is replayed and compacted
 * to a single snapshot line. A reservation that was never settled (the process died mid
 * call) is counted as spent at its worst case: the ledger errs towards denying.
 * Several replicas sharing one ledger need PostgreSQL (out of scope here).
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import { open, readFile, rename } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import { KeelError } from '@keel/core'
import type { BudgetLimit } from '../types.js'

export interface BudgetKey {
  scope: 'project' | 'agent'
  id: string
  limit: BudgetLimit
}

export interface Reservation {
  id: string
  buckets: readonly string[]
  amountMicroUsd: number
}

export interface BucketState {
  spentMicroUsd: number
  reservedMicroUsd: number
}

export type ReserveResult =
  | { ok: true; reservation: Reservation }
  | {
      ok: false
      scope: 'project' | 'agent'
      id: string
      bucket: string
      limitMicroUsd: number
      spentMicroUsd: number
      reservedMicroUsd: number
    }

export interface LedgerOptions {
  /** JSONL file; in-memory when absent. */
  path?: string
  /** Called once if writing the file fails; accounting in memory goes on. */
  onError?: (err: Error) => void
}

type LedgerLine =
  | { op: 'snapshot'; t: number; buckets: Record<string, number> }
  | { op: 'reserve'; t: number; id: string; b: string[]; a: number }
  | { op: 'settle'; t: number; id: string; a: number }
  | { op: 'release'; t: number; id: string }

/** The bucket a limit falls into at `now`: all time, the UTC day or the UTC month. */
export function bucketKey(key: BudgetKey, now: number): string {
  if (key.limit.period === 'total') return `${key.scope}:${key.id}:total`
  const iso = new Date(now).toISOString()
  return `${key.scope}:${key.id}:${key.limit.period === 'day' ? iso.slice(0, 10) : iso.slice(0, 7)}`
}

export class BudgetLedger {
  private readonly buckets = new Map<string, BucketState>()
  private readonly open = new Map<string, Reservation>()
  private fd: number | undefined
  private failed = false

  private constructor(private readonly options: LedgerOptions) {}

  /** An in-memory ledger (tests, or budgets without `ledger:`). */
  static inMemory(): BudgetLedger {
    return new BudgetLedger({})
  }

  /** Opens (replaying and compacting) a JSONL ledger file, creating it 0600 if absent. */
  static async open(options: LedgerOptions): Promise<BudgetLedger> {
    const ledger = new BudgetLedger(options)
    if (options.path === undefined) return ledger
    const path = options.path
    let text = ''
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new KeelError('ERR_CONFIG_INVALID', `cannot read budget ledger ${path}: ${(err as NodeJS.ErrnoException).code}`, { cause: err })
      }
    }
    ledger.replay(text, path)
    // Compact: one snapshot line, written to a temp file and renamed over the old one.
    const snapshot: LedgerLine = { op: 'snapshot', t: Date.now(), buckets: ledger.spentByBucket() }
    const tmp = `${path}.${process.pid}.tmp`
    const fh = await open(tmp, 'w', 0o600)
    try {
      await fh.writeFile(JSON.stringify(snapshot) + '\n')
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, path)
    ledger.fd = openSync(path, 'a', 0o600)
    return ledger
  }

  private replay(text: string, path: string): void {
    const lines = text.split('\n')
    const pending = new Map<string, { b: string[]; a: number }>()
    lines.forEach((raw, i) => {
      if (raw.trim() === '') return
      let line: LedgerLine
      try {
        line = JSON.parse(raw) as LedgerLine
      } catch (err) {
        // A torn last line is what a crash mid-append leaves; anything else is corruption.
        if (i >= lines.length - 2) return
        throw new KeelError('ERR_CONFIG_INVALID', `budget ledger ${path}:${i + 1} is corrupt`, { cause: err })
      }
      switch (line.op) {
        case 'snapshot':
          for (const [b, spent] of Object.entries(line.buckets)) this.bucket(b).spentMicroUsd = spent
          break
        case 'reserve':
          pending.set(line.id, { b: line.b, a: line.a })
          break
        case 'settle': {
          const r = pending.get(line.id)
          if (r) for (const b of r.b) this.bucket(b).spentMicroUsd += line.a
          pending.delete(line.id)
          break
        }
        case 'release':
          pending.delete(line.id)
          break
      }
    })
    // Unsettled reservations: the call may have run; count the worst case as spent.
    for (const r of pending.values()) for (const b of r.b) this.bucket(b).spentMicroUsd += r.a
  }

  private bucket(key: string): BucketState {
    let s = this.buckets.get(key)
    if (!s) {
      s = { spentMicroUsd: 0, reservedMicroUsd: 0 }
      this.buckets.set(key, s)
    }
    return s
  }

  private spentByBucket(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [k, v] of this.buckets) out[k] = v.spentMicroUsd + v.reservedMicroUsd
    return out
  }

  private fail(err: Error): void {
    if (this.failed) return
    this.failed = true
    this.options.onError?.(err)
  }

  /** One synchronous append per operation (microseconds; never half-queued at exit). */
  private write(line: LedgerLine): void {
    if (this.fd === undefined || this.failed) return
    try {
      writeSync(this.fd, JSON.stringify(line) + '\n')
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)))
    }
  }

  /** Would `amount` fit in every bucket right now? Nothing is booked. */
  check(keys: readonly BudgetKey[], amountMicroUsd: number, now: number): ReserveResult {
    for (const key of keys) {
      const b = bucketKey(key, now)
      const s = this.buckets.get(b) ?? { spentMicroUsd: 0, reservedMicroUsd: 0 }
      if (s.spentMicroUsd + s.reservedMicroUsd + amountMicroUsd > key.limit.limitMicroUsd) {
        return { ok: false, scope: key.scope, id: key.id, bucket: b, limitMicroUsd: key.limit.limitMicroUsd, ...s }
      }
    }
    return { ok: true, reservation: { id: '', buckets: keys.map((k) => bucketKey(k, now)), amountMicroUsd } }
  }

  /**
   * Books `amount` against every key's bucket, or none of them. Synchronous on purpose:
   * check and book happen in one turn of the event loop.
   */
  reserve(keys: readonly BudgetKey[], amountMicroUsd: number, now: number): ReserveResult {
    const checked = this.check(keys, amountMicroUsd, now)
    if (!checked.ok) return checked
    const reservation: Reservation = { id: randomUUID({ disableEntropyCache: false }), buckets: checked.reservation.buckets, amountMicroUsd }
    for (const b of reservation.buckets) this.bucket(b).reservedMicroUsd += amountMicroUsd
    this.open.set(reservation.id, reservation)
    this.write({ op: 'reserve', t: now, id: reservation.id, b: [...reservation.buckets], a: amountMicroUsd })
    return { ok: true, reservation }
  }

  /** Replaces a reservation with the actual cost. Idempotent: a second settle is ignored. */
  settle(reservationId: string, actualMicroUsd: number, now: number): void {
    const r = this.open.get(reservationId)
    if (!r) return
    this.open.delete(reservationId)
    const actual = Math.max(0, Math.ceil(actualMicroUsd))
    for (const b of r.buckets) {
      const s = this.bucket(b)
      s.reservedMicroUsd -= r.amountMicroUsd
      s.spentMicroUsd += actual
    }
    this.write({ op: 'settle', t: now, id: reservationId, a: actual })
  }

  /** Drops a reservation without spending (the call never reached the provider). */
  release(reservationId: string, now: number): void {
    const r = this.open.get(reservationId)
    if (!r) return
    this.open.delete(reservationId)
    for (const b of r.buckets) this.bucket(b).reservedMicroUsd -= r.amountMicroUsd
    this.write({ op: 'release', t: now, id: reservationId })
  }

  /** Current state of a bucket (zeros when unknown). */
  state(bucket: string): BucketState {
    const s = this.buckets.get(bucket)
    return s ? { ...s } : { spentMicroUsd: 0, reservedMicroUsd: 0 }
  }

  snapshot(): Record<string, BucketState> {
    const out: Record<string, BucketState> = {}
    for (const [k, v] of this.buckets) out[k] = { ...v }
    return out
  }

  /** Open reservations (calls in flight). */
  inFlight(): number {
    return this.open.size
  }

  close(): Promise<void> {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
    return Promise.resolve()
  }
}
