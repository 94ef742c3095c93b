/**
 * Checkpoints: signed snapshots of a chain head, written to a directory the operator
 * names, outside the runtime's reach. A chain rewritten from scratch is internally
 * consistent, and a new export of it signs fine; but its hash at a checkpointed seq
 * differs from the checkpoint, and that is how the verifier catches it.
 *
 * Layout: `<dir>/<project>/<seq, 12 digits>.json` (the checkpoint, JSON + newline),
 * `.sig` (raw Ed25519 over the .json bytes) and, with a TSA, `.tsr` (the RFC 3161
 * response over the .json bytes). Files are written to a temp name, fsynced and renamed,
 * so a checkpoint is all there or not there.
 */
import { mkdir, open, readFile, readdir, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { KeelError } from '@keel/core'
import type { GovernanceEventInput, RecordOptions } from '@keel/core'
import { assertProjectName, genesisHash, isHex64 } from './format.js'
import type { AuditEventInput, ChainedRecord } from './format.js'
import { keyFingerprint, signBytes, toPublicKey, verifyBytes } from './keys.js'
import type { PrivateKeyInput, PublicKeyInput } from './keys.js'
import type { AppendOptions, AuditLog, ChainHead } from './log.js'
import { requestTimestamp, verifyTimestampResponse } from './tsa.js'
import type { TimestampRequestOptions } from './tsa.js'
import { VerifyCode } from './codes.js'
import type { Finding } from './codes.js'

export const CHECKPOINT_FORMAT = 'keel.audit.checkpoint/v1'

export interface Checkpoint {
  format: typeof CHECKPOINT_FORMAT
  project: string
  seq: number
  headHash: string
  /** ISO 8601 UTC: when the checkpoint was taken (the TSA's genTime is the trusted one). */
  time: string
  publicKeyFingerprint: string
}

export interface CheckpointFiles {
  seq: number
  path: string
  signaturePath: string
  receiptPath?: string
}

export interface WrittenCheckpoint extends CheckpointFiles {
  checkpoint: Checkpoint
  /** False when a checkpoint for this seq was already there (it is left as it was). */
  created: boolean
}

/** `000000001000` for seq 1000: names sort in seq order. */
export const checkpointBaseName = (seq: number): string => String(seq).padStart(12, '0')

export function encodeCheckpoint(cp: Checkpoint): string {
  return `${JSON.stringify(
    {
      format: cp.format,
      project: cp.project,
      seq: cp.seq,
      headHash: cp.headHash,
      time: cp.time,
      publicKeyFingerprint: cp.publicKeyFingerprint,
    },
    null,
    2,
  )}\n`
}

export function parseCheckpoint(bytes: Buffer): Checkpoint | string {
  let v: unknown
  try {
    v = JSON.parse(bytes.toString('utf8'))
  } catch {
    return 'not valid JSON'
  }
  const c = v as Partial<Checkpoint>
  if (c === null || typeof c !== 'object') return 'not a JSON object'
  if (c.format !== CHECKPOINT_FORMAT) return `unknown format ${JSON.stringify(c.format)}`
  if (typeof c.project !== 'string') return 'project missing'
  if (typeof c.seq !== 'number' || !Number.isSafeInteger(c.seq) || c.seq < 0) return 'seq is not a non-negative integer'
  if (!isHex64(c.headHash)) return 'headHash is not a hex SHA-256'
  if (typeof c.time !== 'string' || typeof c.publicKeyFingerprint !== 'string') return 'time or publicKeyFingerprint missing'
  return c as Checkpoint
}

async function writeAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`
  const fh = await open(tmp, 'wx', 0o644)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fh.close()
  await rename(tmp, path)
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

export interface WriteCheckpointOptions {
  /** The operator's checkpoint directory; files go to `<dir>/<project>/`. */
  dir: string
  head: ChainHead
  key: PrivateKeyInput
  clock?: () => number
  /** Also get an RFC 3161 receipt from this TSA. */
  tsa?: TimestampRequestOptions
}

/**
 * Signs and writes a checkpoint of `head` (and fetches a receipt when `tsa` is set).
 * If one for that seq exists, it is kept and only a missing receipt is added.
 */
export async function writeCheckpoint(options: WriteCheckpointOptions): Promise<WrittenCheckpoint> {
  const { head } = options
  assertProjectName(head.project)
  const dir = join(options.dir, head.project)
  await mkdir(dir, { recursive: true, mode: 0o750 })
  const base = join(dir, checkpointBaseName(head.seq))
  const files: CheckpointFiles = { seq: head.seq, path: `${base}.json`, signaturePath: `${base}.sig` }
  let created = false
  let bytes: Buffer
  if (await exists(files.path)) {
    bytes = await readFile(files.path)
  } else {
    const checkpoint: Checkpoint = {
      format: CHECKPOINT_FORMAT,
      project: head.project,
      seq: head.seq,
      headHash: head.hash,
      time: new Date((options.clock ?? Date.now)()).toISOString(),
      publicKeyFingerprint: keyFingerprint(options.key),
    }
    bytes = Buffer.from(encodeCheckpoint(checkpoint))
    // Signature first: a .json without its .sig would read as a failed checkpoint.
    await writeAtomic(files.signaturePath, signBytes(bytes, options.key))
    await writeAtomic(files.path, bytes)
    await syncDir(dir)
    created = true
  }
  const parsed = parseCheckpoint(bytes)
  if (typeof parsed === 'string') throw new KeelError('ERR_AUDIT_IO', `${files.path}: ${parsed}`)
  if (options.tsa) {
    const receiptPath = `${base}.tsr`
    if (!(await exists(receiptPath))) {
      const receipt = await requestTimestamp(bytes, options.tsa)
      await writeAtomic(receiptPath, receipt.response)
      await syncDir(dir)
    }
    files.receiptPath = receiptPath
  } else if (await exists(`${base}.tsr`)) {
    files.receiptPath = `${base}.tsr`
  }
  return { ...files, checkpoint: parsed, created }
}

/** Adds an RFC 3161 receipt to an existing checkpoint file (`<seq>.json` → `<seq>.tsr`). */
export async function timestampCheckpoint(path: string, tsa: TimestampRequestOptions): Promise<string> {
  const bytes = await readFile(path)
  const receipt = await requestTimestamp(bytes, tsa)
  const receiptPath = path.replace(/\.json$/, '') + '.tsr'
  await writeAtomic(receiptPath, receipt.response)
  return receiptPath
}

/** The checkpoints of one project in `dir`, ascending by seq. Missing directory → []. */
export async function listCheckpoints(dir: string, project: string): Promise<CheckpointFiles[]> {
  assertProjectName(project)
  const pdir = join(dir, project)
  let names: string[]
  try {
    names = await readdir(pdir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw new KeelError('ERR_AUDIT_IO', `cannot read ${pdir}: ${(err as Error).message}`, { cause: err })
  }
  const set = new Set(names)
  const out: CheckpointFiles[] = []
  for (const name of names) {
    const m = /^(\d{12})\.json$/.exec(name)
    if (!m) continue
    const base = join(pdir, m[1]!)
    const files: CheckpointFiles = { seq: Number(m[1]), path: `${base}.json`, signaturePath: `${base}.sig` }
    if (set.has(`${m[1]}.tsr`)) files.receiptPath = `${base}.tsr`
    out.push(files)
  }
  return out.sort((a, b) => a.seq - b.seq)
}

export interface CheckpointCheckContext {
  project: string
  /** Key the checkpoints must be signed with. */
  publicKey: PublicKeyInput
  /** The chain's last seq. */
  lastSeq: number
  /** Hash of the record with this seq in the chain, if the chain holds it. */
  hashAt: (seq: number) => string | undefined
  /** PEM of trusted TSA certificates; without it receipts are checked but not anchored. */
  tsaCa?: string
  /**
   * For a snapshot (an export bundle): when it was taken (ISO 8601). A checkpoint past
   * the snapshot's last record is then out of scope if it was taken later (skipped), and
   * proof of removed records if it was taken earlier.
   */
  snapshotTime?: string
}

export interface CheckpointCheckResult {
  findings: Finding[]
  checked: number
  matched: number
  /** Checkpoints taken after the snapshot, past its last record: out of scope. */
  skipped: number
  timestamps: number
  /** Receipts whose TSA chained to `tsaCa`. */
  anchoredTimestamps: number
}

/** Reads, authenticates and compares checkpoints with a chain. Never throws for bad content. */
export async function checkCheckpoints(files: CheckpointFiles[], ctx: CheckpointCheckContext): Promise<CheckpointCheckResult> {
  const res: CheckpointCheckResult = { findings: [], checked: 0, matched: 0, skipped: 0, timestamps: 0, anchoredTimestamps: 0 }
  const pub = toPublicKey(ctx.publicKey)
  const fp = keyFingerprint(pub)
  let lastGood = 0
  let bracketed = false
  for (const f of files) {
    res.checked++
    const bad = (code: Finding['code'], message: string, file = f.path) =>
      res.findings.push({ code, seq: f.seq, file, message: `checkpoint ${f.seq}: ${message}` })
    let bytes: Buffer
    try {
      bytes = await readFile(f.path)
    } catch (err) {
      bad(VerifyCode.CHECKPOINT_INVALID, `cannot read: ${(err as Error).message}`)
      continue
    }
    const cp = parseCheckpoint(bytes)
    if (typeof cp === 'string') {
      bad(VerifyCode.CHECKPOINT_INVALID, cp)
      continue
    }
    if (cp.project !== ctx.project || cp.seq !== f.seq) {
      bad(VerifyCode.CHECKPOINT_INVALID, `file is for project ${cp.project} seq ${cp.seq}`)
      continue
    }
    let sig: Buffer | undefined
    try {
      sig = await readFile(f.signaturePath)
    } catch {
      sig = undefined
    }
    if (!sig) {
      bad(VerifyCode.CHECKPOINT_SIGNATURE_INVALID, 'signature file missing', f.signaturePath)
      continue
    }
    if (!verifyBytes(bytes, sig, pub)) {
      bad(
        VerifyCode.CHECKPOINT_SIGNATURE_INVALID,
        cp.publicKeyFingerprint !== fp
          ? `signed by another key (${cp.publicKeyFingerprint}, expected ${fp})`
          : 'signature does not verify',
        f.signaturePath,
      )
      continue
    }
    if (ctx.snapshotTime !== undefined && cp.seq > ctx.lastSeq && !(Date.parse(cp.time) <= Date.parse(ctx.snapshotTime))) {
      res.checked--
      res.skipped++
      continue
    }
    if (f.receiptPath) {
      res.timestamps++
      try {
        const tsr = await readFile(f.receiptPath)
        const t = verifyTimestampResponse(tsr, { data: bytes, ...(ctx.tsaCa ? { trustedCa: ctx.tsaCa } : {}) })
        if (!t.ok) bad(VerifyCode.TIMESTAMP_INVALID, `receipt: ${t.problem}`, f.receiptPath)
        else if (t.anchored) res.anchoredTimestamps++
      } catch (err) {
        bad(VerifyCode.TIMESTAMP_INVALID, `receipt unreadable: ${(err as Error).message}`, f.receiptPath)
      }
    }
    const actual = cp.seq === 0 ? genesisHash(ctx.project) : cp.seq <= ctx.lastSeq ? ctx.hashAt(cp.seq) : undefined
    if (actual === cp.headHash) {
      res.matched++
      if (!bracketed) lastGood = cp.seq
      continue
    }
    const where = bracketed ? '' : `; the chain agrees with the checkpoints up to record ${lastGood}, so it differs from record ${lastGood + 1} on (at most ${cp.seq})`
    bracketed = true
    res.findings.push({
      code: VerifyCode.CHECKPOINT_MISMATCH,
      seq: cp.seq,
      file: f.path,
      message:
        cp.seq > ctx.lastSeq
          ? ctx.snapshotTime !== undefined
            ? `checkpoint ${cp.seq}: taken at ${cp.time}, before the export at ${ctx.snapshotTime}, yet the export ends at record ${ctx.lastSeq}: records were removed before the export${where}`
            : `checkpoint ${cp.seq}: the log ends at record ${ctx.lastSeq}, but the checkpoint shows it reached ${cp.seq}: records were removed or the chain rewritten${where}`
          : actual === undefined
            ? `checkpoint ${cp.seq}: record ${cp.seq} is not in the chain${where}`
            : `checkpoint ${cp.seq}: record ${cp.seq} hashes to ${actual.slice(0, 16)}…, the checkpoint says ${cp.headHash.slice(0, 16)}…: the chain was rewritten${where}`,
    })
  }
  return res
}

export interface CheckpointerOptions {
  /** The operator's checkpoint directory (outside the runtime's). */
  dir: string
  key: PrivateKeyInput
  /** Checkpoint each record whose seq is a multiple of this (works across processes). */
  everyRecords?: number
  /** Also checkpoint the head every this many ms, if it moved. */
  everyMs?: number
  tsa?: TimestampRequestOptions
  clock?: () => number
  /** Checkpoint failures never fail an append; they come here. */
  onError?: (err: unknown) => void
}

/** An audit log that writes checkpoints on a cadence. */
export interface CheckpointedLog extends AuditLog {
  /** Checkpoints the current head now (no-op on an empty log). */
  checkpointNow(): Promise<WrittenCheckpoint | undefined>
  /** Resolves when no checkpoint is being written. */
  idle(): Promise<void>
}

/**
 * Wraps a log so that checkpoints are written every `everyRecords` records and/or every
 * `everyMs` milliseconds. Appends never wait for a checkpoint, and a failed checkpoint
 * (full disk, TSA down) is reported to `onError`, not to the producer.
 */
export function withCheckpoints(log: AuditLog, options: CheckpointerOptions): CheckpointedLog {
  toPublicKey(options.key) // fail fast on a bad key
  const every = options.everyRecords
  if (every !== undefined && (!Number.isSafeInteger(every) || every < 1)) {
    throw new KeelError('ERR_USAGE', 'everyRecords must be a positive integer')
  }
  let lastSeq = 0
  let wanted: ChainHead | undefined
  let running: Promise<void> | undefined
  const onError = options.onError ?? (() => {})

  const write = async (head: ChainHead): Promise<WrittenCheckpoint> => {
    const w = await writeCheckpoint({
      dir: options.dir,
      head,
      key: options.key,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.tsa ? { tsa: options.tsa } : {}),
    })
    lastSeq = Math.max(lastSeq, head.seq)
    return w
  }
  const schedule = (head: ChainHead) => {
    if (!wanted || head.seq > wanted.seq) wanted = head
    if (running) return
    running = (async () => {
      // Bounded: each pass consumes `wanted`; new ones only arrive from appends.
      for (let i = 0; wanted && i < 1_000_000; i++) {
        const h = wanted
        wanted = undefined
        if (h.seq <= lastSeq) continue
        try {
          await write(h)
        } catch (err) {
          onError(err)
        }
      }
      running = undefined
    })()
  }
  const timer =
    options.everyMs !== undefined
      ? setInterval(() => {
          log.head().then(
            (h) => {
              if (h.seq > lastSeq) schedule(h)
            },
            (err: unknown) => onError(err),
          )
        }, options.everyMs)
      : undefined
  timer?.unref()

  const append = async (input: AuditEventInput, opts?: AppendOptions): Promise<ChainedRecord> => {
    const rec = await log.append(input, opts)
    if (every !== undefined && rec.seq % every === 0) schedule({ project: log.project, seq: rec.seq, hash: rec.hash })
    return rec
  }
  const idle = async () => {
    for (let i = 0; running && i < 1000; i++) await running
  }
  return {
    path: log.path,
    project: log.project,
    fsync: log.fsync,
    append,
    async record(event: GovernanceEventInput, opts?: RecordOptions) {
      await append(event, opts)
    },
    head: () => log.head(),
    async checkpointNow() {
      await idle()
      const head = await log.head()
      if (head.seq === 0) return undefined
      return write(head)
    },
    idle,
    async close() {
      if (timer) clearInterval(timer)
      await idle()
      await log.close()
    },
  }
}
