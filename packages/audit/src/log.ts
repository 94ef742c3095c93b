/**
 * The append-only, per-project governance log: `<dir>/<project>.jsonl`.
 *
 * Every append runs under two locks: an in-process queue (one writer per file and
 * policy in this process) and the cross-process lock file `<log>.lock`. Under the lock
 * the writer takes the last record from the file itself (another process may have
 * appended), writes the new line(s) with one O_APPEND write, syncs per the policy, and
 * only then releases the lock and resolves the caller's promise. Reading the tail means
 * parsing and hashing the last line; when the file is still the one this writer last
 * wrote (same inode and size, and its last line still the exact bytes this writer wrote)
 * the writer reuses what it knows instead.
 *
 * Fsync policy (`fsync`):
 *  - `always` (default): fdatasync after every record; a resolved append is on disk.
 *  - `batch`: group commit. Appends that queue up while a commit is running go into
 *    the next one, written with one write and one fdatasync. A resolved append is on
 *    disk, exactly as with `always`; only the throughput differs.
 *  - `never`: no fsync (the OS flushes when it likes). For tests and benchmarks only.
 * An append may ask for `durability: 'deferred'` (events nobody waits on, such as the
 * dispatcher's `dispatch.completed`): it is written in its place in the chain at once and
 * its promise resolves once written; the next synced commit, or a sync at most
 * `deferredSyncMs` later, puts it on disk. So only the appends that gate something (the
 * dispatcher's `dispatch.egress_bound`) wait for the disk, and they do not queue behind
 * the syncs of events that gate nothing.
 * When the log file is created, its directory is fsynced too, so the file's name
 * survives a crash along with its bytes.
 *
 * A torn tail (bytes after the last newline, from a crash mid-write) stops appends
 * with {@link AuditTornTailError}. Nothing is dropped or merged silently:
 * {@link repairAuditLog} moves the torn bytes to `<log>.torn-<offset>` and truncates.
 */
import { fdatasyncSync, readSync, statSync, writeSync } from 'node:fs'
import { mkdir, open, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { KeelError } from '@keel/core'
import type { GovernanceEventInput, GovernanceSink, RecordOptions } from '@keel/core'
import {
  MAX_RECORD_BYTES,
  assertProjectName,
  buildRecordLine,
  genesisHash,
  parseRecordLine,
  sha256Hex,
} from './format.js'
import type { AuditEventInput, AuditRecord, ChainedRecord } from './format.js'
import { acquireFileLock, createFileLocker } from './lock.js'
import type { FileLocker } from './lock.js'
import { readTail, scanLines } from './lines.js'
import { withCheckpoints } from './checkpoint.js'
import type { CheckpointerOptions } from './checkpoint.js'
import type { Tail, TornTail } from './lines.js'

export type FsyncPolicy = 'always' | 'batch' | 'never'

export interface AuditLogOptions {
  /** Directory holding `<project>.jsonl` (created if missing, mode 0750). */
  dir: string
  project: string
  /** Durability policy; default `always`. */
  fsync?: FsyncPolicy
  /** Milliseconds since the epoch, for records without `time`. Default `Date.now`. */
  clock?: () => number
  /** How long to wait for another process's lock before failing (default 10 s). */
  lockTimeoutMs?: number
  /** Most records in one group commit (`batch`/`never`; default 1000). */
  maxBatch?: number
  /** Longest a `deferred` append waits for its sync (`batch`; default 100 ms). */
  deferredSyncMs?: number
}

/**
 * Per-append options: core's RecordOptions. `deferred` resolves once written and is synced
 * with the next synced commit or within `deferredSyncMs` (policy `batch`; `always` still
 * syncs each record). `inline` runs a needed sync on the event loop when no other append
 * is queued.
 */
export type AppendOptions = RecordOptions

/** The head of a chain: seq 0 and the genesis hash for an empty log. */
export interface ChainHead {
  project: string
  seq: number
  hash: string
}

/** Thrown by appends when the log ends in a torn line. Code ERR_AUDIT_IO. */
export class AuditTornTailError extends KeelError {
  constructor(
    readonly path: string,
    readonly offset: number,
    readonly length: number,
    readonly detail: string,
  ) {
    super(
      'ERR_AUDIT_IO',
      `${path}: ${detail} at byte ${offset} (${length} bytes); refusing to append. ` +
        `Inspect it, then run \`keel audit repair\` to move those bytes to a quarantine file.`,
    )
  }
}

/** Path of a project's log inside `dir`. Validates the project name. */
export function auditLogPath(dir: string, project: string): string {
  assertProjectName(project)
  return join(resolve(dir), `${project}.jsonl`)
}

interface Pending {
  input: AuditEventInput
  deferred: boolean
  inline: boolean
  /** False for GovernanceSink.record(), which discards the record: it is not built then. */
  wantRecord: boolean
  resolve: (r: ChainedRecord | undefined) => void
  reject: (e: unknown) => void
}

/** What this writer last wrote: enough to trust the file's tail without parsing it again. */
interface KnownTail {
  ino: number
  size: number
  hash: string
  seq: number
  /** The exact bytes of the last line, newline included. */
  line: Buffer
}

type Job = { kind: 'append'; items: Pending[] } | { kind: 'fn'; run: () => Promise<void> }

/** Where a chain ends: the last record's seq and hash (0 and genesis when empty), and the file size. */
interface ChainEnd {
  seq: number
  hash: string
  size: number
}

/** The chain end a tail shows; throws {@link AuditTornTailError} for a torn or malformed tail. */
function endOf(path: string, project: string, tail: Tail): ChainEnd {
  const bad = tailError(path, tail)
  if (bad) throw bad
  return tail.kind === 'record' ? { seq: tail.record.seq, hash: tail.hash, size: tail.size } : { seq: 0, hash: genesisHash(project), size: 0 }
}

function tailError(path: string, tail: Tail): AuditTornTailError | undefined {
  if (tail.kind === 'torn') return new AuditTornTailError(path, tail.torn.offset, tail.torn.length, 'torn last line (no newline)')
  if (tail.kind === 'malformed') return new AuditTornTailError(path, tail.offset, tail.length, `malformed last record (${tail.problem})`)
  return undefined
}

/** One writer per (file, policy) in this process; appends are serialized through it. */
class Writer {
  readonly lockPath: string
  private readonly locker: FileLocker
  /** FIFO of appends and exclusive functions; consecutive appends form one group commit. */
  private jobs: Array<Pending | { run: () => Promise<void> }> = []
  private running = false
  private fh: FileHandle | undefined
  private ino = -1
  private size = 0
  private dirReady = false
  private known: KnownTail | undefined
  /** Deferred records written but not yet synced, and the timer that will sync them. */
  private unsynced = false
  private syncTimer: NodeJS.Timeout | undefined
  /** A failed deferred sync, reported to the next commit (fail closed). */
  private syncError: Error | undefined
  /** The furthest head this writer has seen. A log never shrinks: a tail below it means truncation or replacement. */
  private seen: { seq: number; hash: string } | undefined
  refs = 0

  constructor(
    readonly path: string,
    readonly dir: string,
    readonly project: string,
    readonly fsync: FsyncPolicy,
    readonly clock: () => number,
    readonly lockTimeoutMs: number,
    readonly maxBatch: number,
    readonly deferredSyncMs: number,
  ) {
    this.lockPath = `${path}.lock`
    this.locker = createFileLocker(this.lockPath, { timeoutMs: lockTimeoutMs })
  }

  append(input: AuditEventInput, opts: AppendOptions | undefined, wantRecord: boolean): Promise<ChainedRecord | undefined> {
    return new Promise((resolve, reject) => {
      this.jobs.push({ input, deferred: opts?.durability === 'deferred', inline: opts?.inline === true, wantRecord, resolve, reject })
      this.kick()
    })
  }

  /** Resolves once everything queued before it has finished (no file lock taken). */
  drain(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.jobs.push({ run: async () => resolve() })
      this.kick()
    })
  }

  /** Runs `fn` under the in-process queue and the file lock, between commits. */
  exclusive<T>(fn: (fh: FileHandle | undefined) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.jobs.push({
        run: async () => {
          try {
            resolve(await this.locked(async () => fn(await this.handle(false))))
          } catch (err) {
            reject(err)
          }
        },
      })
      this.kick()
    })
  }

  private kick(): void {
    if (this.running) return
    this.running = true
    void this.pump()
  }

  private next(): Job | undefined {
    const first = this.jobs[0]
    if (first === undefined) return undefined
    if ('run' in first) {
      this.jobs.shift()
      return { kind: 'fn', run: first.run }
    }
    const limit = this.fsync === 'always' ? 1 : this.maxBatch
    let n = 0
    while (n < limit && n < this.jobs.length && !('run' in this.jobs[n]!)) n++
    return { kind: 'append', items: this.jobs.splice(0, n) as Pending[] }
  }

  private async pump(): Promise<void> {
    // Bounded by the queue: every iteration removes at least one job.
    for (let job = this.next(); job !== undefined; job = this.next()) {
      if (job.kind === 'fn') {
        await job.run()
        continue
      }
      const items = job.items
      try {
        const results = await this.locked(() => this.commit(items))
        items.forEach((p, i) => {
          const r = results[i]!
          if (r instanceof Error) p.reject(r)
          else p.resolve(r)
        })
      } catch (err) {
        for (const p of items) p.reject(err)
      }
    }
    this.running = false
  }

  /** Syncs deferred records soon, unless a synced commit does it first. */
  private scheduleDeferredSync(): void {
    this.unsynced = true
    if (this.syncTimer !== undefined) return
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined
      this.jobs.push({ run: () => this.syncDeferred() })
      this.kick()
    }, this.deferredSyncMs)
    // A pending sync never keeps the process alive: the bytes are in the page cache already.
    this.syncTimer.unref()
  }

  private async syncDeferred(): Promise<void> {
    if (!this.unsynced || !this.fh) return
    this.unsynced = false
    try {
      await this.fh.datasync()
    } catch (err) {
      this.syncError = err as Error
    }
  }

  /** Syncs deferred records now (best effort: the file is being let go) and stops the timer. */
  private async flushDeferred(): Promise<void> {
    if (this.unsynced) await this.fh?.datasync().catch(() => {})
    this.clearDeferred()
  }

  private clearDeferred(): void {
    this.unsynced = false
    if (this.syncTimer !== undefined) clearTimeout(this.syncTimer)
    this.syncTimer = undefined
  }

  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    // Once made, the directory stays (mkdir -p on every append was a thread-pool round trip).
    if (!this.dirReady) {
      await mkdir(this.dir, { recursive: true, mode: 0o750 })
      this.dirReady = true
    }
    const lock = await this.locker.acquire()
    try {
      return await fn()
    } finally {
      await lock.release()
    }
  }

  /** The open log file, reopened if it was replaced; created (with a directory fsync) when `create`. */
  private async handle(create: boolean): Promise<FileHandle | undefined> {
    let st: { ino: number; size: number } | undefined
    try {
      // Synchronous: one local syscall, on every append (a replaced file must be noticed).
      st = statSync(this.path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    if (this.fh && st && st.ino === this.ino) {
      this.size = st.size
      return this.fh
    }
    if (this.fh) {
      // Replaced or removed: sync what we wrote to the old file, then let it go.
      await this.flushDeferred()
      await this.fh.close().catch(() => {})
      this.fh = undefined
      this.ino = -1
    }
    if (!st && !create) return undefined
    const fh = await open(this.path, 'a+', 0o640)
    this.fh = fh
    const opened = await fh.stat()
    this.ino = opened.ino
    this.size = opened.size
    if (!st) await syncDir(this.dir)
    return fh
  }

  /** The end of the chain: what this writer wrote last if the file still ends with exactly it, else read from the file. */
  private async chainEnd(fh: FileHandle): Promise<ChainEnd> {
    const k = this.known
    if (k && k.ino === this.ino && k.size === this.size) {
      const now = Buffer.allocUnsafe(k.line.length)
      if (readSync(fh.fd, now, 0, now.length, k.size - now.length) === now.length && now.equals(k.line)) return { seq: k.seq, hash: k.hash, size: k.size }
    }
    return endOf(this.path, this.project, await readTail(fh))
  }

  /** Writes the items that make valid records; returns each item's record or its own error. */
  private async commit(items: readonly Pending[]): Promise<Array<ChainedRecord | Error | undefined>> {
    if (this.syncError) {
      const err = this.syncError
      this.syncError = undefined
      throw new KeelError('ERR_AUDIT_IO', `${this.path}: an earlier sync of this log failed (${err.message}); records written since may not be on disk`, { cause: err })
    }
    const fh = (await this.handle(true))!
    const end = await this.chainEnd(fh)
    this.checkNotBehind(end)
    let seq = end.seq
    let prev = end.hash
    const size = end.size
    const results: Array<ChainedRecord | Error | undefined> = []
    const lines: string[] = []
    let last: { record: () => AuditRecord; line: string } | undefined
    let needsSync = false
    for (const item of items) {
      let built: { line: string; record: () => AuditRecord }
      try {
        // Checked here, per item, so one bad event cannot fail the rest of its group.
        built = buildRecordLine(item.input, this.project, seq + 1, prev, this.clock())
        const bytes = Buffer.byteLength(built.line)
        if (bytes > MAX_RECORD_BYTES) throw new KeelError('ERR_USAGE', `audit event too large (${bytes} bytes; limit ${MAX_RECORD_BYTES})`)
      } catch (err) {
        results.push(err as Error)
        continue
      }
      seq++
      prev = sha256Hex(built.line)
      lines.push(built.line, '\n')
      last = built
      results.push(item.wantRecord ? { ...built.record(), hash: prev } : undefined)
      if (!item.deferred) needsSync = true
    }
    if (last === undefined) return results
    const bytes = Buffer.from(lines.join(''), 'utf8')
    try {
      let written = 0
      // One local write to the page cache: synchronous (a promise write is a thread-pool
      // round trip). A regular-file write normally completes in one call; loop in case not.
      for (let i = 0; written < bytes.length && i < 1000; i++) written += writeSync(fh.fd, bytes, written, bytes.length - written, null)
      if (written < bytes.length) throw new Error(`short write (${written} of ${bytes.length} bytes)`)
      if (this.fsync === 'always' || (this.fsync === 'batch' && needsSync)) {
        // Inline only when every caller said nothing else waits and nobody queued behind.
        if (this.jobs.length === 0 && items.some((i) => i.inline) && items.every((i) => i.inline || i.deferred)) fdatasyncSync(fh.fd)
        else await fh.datasync()
        this.clearDeferred() // that sync covered every deferred record before it too
      } else if (this.fsync === 'batch') {
        this.scheduleDeferredSync()
      }
    } catch (err) {
      // Undo a partial write so the log does not end torn; if that fails too, the torn
      // tail stays and the next append reports it.
      this.known = undefined
      await fh.truncate(size).catch(() => {})
      throw new KeelError('ERR_AUDIT_IO', `${this.path}: append failed: ${(err as Error).message}`, { cause: err })
    }
    this.seen = { seq, hash: prev }
    this.known = { ino: this.ino, size: size + bytes.length, hash: prev, seq, line: Buffer.from(last.line + '\n', 'utf8') }
    return results
  }

  /**
   * Refuses to build on a log that went backwards since we last saw it (fewer records, or
   * a different record at the seq we saw): someone truncated or replaced it, and appending
   * would start a new, innocent-looking chain on top.
   */
  checkNotBehind(end: { seq: number; hash: string }): void {
    const seen = this.seen
    if (!seen) {
      if (end.seq > 0) this.seen = { seq: end.seq, hash: end.hash }
      return
    }
    const { seq, hash } = end
    if (seq < seen.seq || (seq === seen.seq && hash !== seen.hash)) {
      throw new KeelError(
        'ERR_AUDIT_IO',
        `${this.path}: the log went backwards (this writer saw record ${seen.seq}, the file now ends at record ${seq}${seq === seen.seq ? ' with another hash' : ''}): ` +
          'it was truncated or replaced; refusing to append. Verify it against its checkpoints.',
      )
    }
    this.seen = { seq, hash }
  }

  async close(): Promise<void> {
    await this.drain()
    await this.flushDeferred()
    await this.fh?.close().catch(() => {})
    this.fh = undefined
    this.known = undefined
    this.locker.close()
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

const writers = new Map<string, Writer>()

/** One project's log. Implements {@link GovernanceSink} for events of that project. */
export interface AuditLog extends GovernanceSink {
  readonly path: string
  readonly project: string
  readonly fsync: FsyncPolicy
  /** Appends one record; resolves once it is durable per the fsync policy (or written, when deferred). */
  append(input: AuditEventInput, options?: AppendOptions): Promise<ChainedRecord>
  /** {@link GovernanceSink}: append, discarding the record. Rejects for another project. */
  record(event: GovernanceEventInput, options?: RecordOptions): Promise<void>
  /** The current last record's seq and hash, read from the file under the lock. */
  head(): Promise<ChainHead>
  /** Waits for pending appends, then releases the file when no other handle uses it. */
  close(): Promise<void>
}

/**
 * Opens (lazily: the file appears on the first append) the log of one project.
 * Handles on the same file and policy in one process share one writer (and its queue);
 * the first opener's `clock`, `lockTimeoutMs` and `maxBatch` apply.
 *
 * @example
 * const log = openAuditLog({ dir: '/var/lib/keel/audit', project: 'acme', fsync: 'batch' })
 * const rec = await log.append({ event: 'dispatch.egress_bound', reason: 'allowed', actor: 'agent:coder', subject: 'api.anthropic.com:443' })
 */
export function openAuditLog(options: AuditLogOptions): AuditLog {
  const path = auditLogPath(options.dir, options.project)
  const fsync = options.fsync ?? 'always'
  if (fsync !== 'always' && fsync !== 'batch' && fsync !== 'never') {
    throw new KeelError('ERR_USAGE', `unknown fsync policy ${JSON.stringify(fsync)}`)
  }
  const key = `${path}\0${fsync}`
  let writer = writers.get(key)
  if (!writer) {
    writer = new Writer(
      path,
      resolve(options.dir),
      options.project,
      fsync,
      options.clock ?? Date.now,
      options.lockTimeoutMs ?? 10_000,
      Math.max(1, options.maxBatch ?? 1000),
      Math.max(1, options.deferredSyncMs ?? 100),
    )
    writers.set(key, writer)
  }
  writer.refs++
  const w = writer
  const project = options.project
  let closed = false
  const enqueue = (input: AuditEventInput, opts: AppendOptions | undefined, wantRecord: boolean): Promise<ChainedRecord | undefined> => {
    if (closed) return Promise.reject(new KeelError('ERR_AUDIT_IO', `${path}: log is closed`))
    return w.append(input, opts, wantRecord)
  }
  return {
    path,
    project,
    fsync,
    append: async (input, opts) => (await enqueue(input, opts, true))!,
    async record(event, opts) {
      await enqueue(event, opts, false)
    },
    head() {
      return w.exclusive(async (fh) => {
        const end = fh ? endOf(path, project, await readTail(fh)) : { seq: 0, hash: genesisHash(project) }
        w.checkNotBehind(end)
        return { project, seq: end.seq, hash: end.hash }
      })
    },
    async close() {
      if (closed) return
      closed = true
      if (--w.refs === 0) {
        writers.delete(key)
        await w.close()
      } else {
        await w.drain()
      }
    },
  }
}

export interface AuditSinkOptions extends Omit<AuditLogOptions, 'project'> {
  /** Checkpoint every project's chain on this cadence (see {@link withCheckpoints}). */
  checkpoints?: CheckpointerOptions
}

/** A {@link GovernanceSink} over many projects: each event goes to its own project's chain. */
export interface AuditSink extends GovernanceSink {
  append(event: GovernanceEventInput, options?: AppendOptions): Promise<ChainedRecord>
  /** The log of one project (opened on first use, kept open until `close`). */
  log(project: string): AuditLog
  close(): Promise<void>
}

/**
 * The dispatcher's and launcher's entry point: `record(event)` appends to
 * `<dir>/<event.project>.jsonl` and resolves once durable.
 */
export function createAuditSink(options: AuditSinkOptions): AuditSink {
  const logs = new Map<string, AuditLog>()
  const log = (project: string): AuditLog => {
    let l = logs.get(project)
    if (!l) {
      const { checkpoints, ...logOptions } = options
      const opened = openAuditLog({ ...logOptions, project })
      l = checkpoints ? withCheckpoints(opened, checkpoints) : opened
      logs.set(project, l)
    }
    return l
  }
  return {
    log,
    append: (event, opts) => log(event.project).append(event, opts),
    async record(event, opts) {
      await log(event.project).record(event, opts)
    },
    async close() {
      const all = [...logs.values()]
      logs.clear()
      await Promise.all(all.map((l) => l.close()))
    },
  }
}

export interface RepairResult {
  path: string
  /** False when the log ended cleanly and nothing was moved. */
  repaired: boolean
  offset?: number
  length?: number
  /** Where the removed bytes were saved. */
  quarantine?: string
  detail?: string
}

/**
 * Moves a torn or malformed last line out of the log, under the lock: the bytes go to
 * `<log>.torn-<offset>` (fsynced), then the log is truncated to the end of its last
 * good record (fsynced). Nothing else is touched.
 */
export async function repairAuditLog(options: { dir: string; project: string; lockTimeoutMs?: number }): Promise<RepairResult> {
  const path = auditLogPath(options.dir, options.project)
  const lock = await acquireFileLock(`${path}.lock`, { timeoutMs: options.lockTimeoutMs ?? 10_000 })
  try {
    let fh: FileHandle
    try {
      fh = await open(path, 'r+')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path, repaired: false }
      throw err
    }
    try {
      const tail = await readTail(fh)
      const bad = tailError(path, tail)
      if (!bad) return { path, repaired: false }
      const bytes = Buffer.alloc(bad.length)
      await fh.read(bytes, 0, bytes.length, bad.offset)
      let quarantine = `${path}.torn-${bad.offset}`
      for (let i = 1; i < 100; i++) {
        try {
          await writeFile(quarantine, bytes, { flag: 'wx', mode: 0o640, flush: true })
          break
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || i === 99) throw err
          quarantine = `${path}.torn-${bad.offset}.${i}`
        }
      }
      await syncDir(resolve(options.dir))
      await fh.truncate(bad.offset)
      await fh.sync()
      return { path, repaired: true, offset: bad.offset, length: bad.length, quarantine, detail: bad.detail }
    } finally {
      await fh.close()
    }
  } finally {
    await lock.release()
  }
}

export type { AuditRecord }

/**
 * Reads a project's records (the last `tail` of them when given) for display.
 * Malformed lines are counted and skipped; use the verifier to judge the chain.
 */
export async function readAuditRecords(options: { dir: string; project: string; tail?: number }): Promise<{
  records: ChainedRecord[]
  malformed: number
  torn?: TornTail
}> {
  const path = auditLogPath(options.dir, options.project)
  const keep = options.tail ?? Infinity
  const records: ChainedRecord[] = []
  let malformed = 0
  let scan
  try {
    scan = await scanLines(path, (line) => {
      const parsed = parseRecordLine(line)
      if (!parsed.ok) {
        malformed++
        return
      }
      records.push({ ...parsed.record, hash: sha256Hex(line) })
      if (records.length > keep) records.shift()
    })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], malformed: 0 }
    throw err
  }
  return scan.torn ? { records, malformed, torn: scan.torn } : { records, malformed }
}
