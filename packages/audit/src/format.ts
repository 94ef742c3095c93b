/**
 * The governance log's record format and hash chain. Pure: no I/O.
 *
 * A log is JSON Lines: one record per line, each line ending in `\n` (0x0a). keel writes
 * the keys in a fixed order, but verification never re-serializes: a record's hash is
 * the SHA-256 of the exact bytes of its line, without the newline. That way what was
 * written is what is hashed, and no JSON canonicalization rules can disagree.
 *
 * Chain: record 1 has `prev` = genesis(project); record n > 1 has `prev` = hash(line n-1).
 * The genesis binds the project name, so a chain cannot be spliced into another project's.
 */
import * as nodeCrypto from 'node:crypto'
import { createHash } from 'node:crypto'
import { KeelError } from '@keel/core'
import type { GovernanceEventInput } from '@keel/core'

/** Record format version written in every record's `v`. */
export const RECORD_VERSION = 1

/** Upper bound on one line's size, so reading a tail is bounded. */
export const MAX_RECORD_BYTES = 1024 * 1024

/** Project names: a path component, never `.`/`..`, never a separator. */
const PROJECT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

const HEX64_RE = /^[0-9a-f]{64}$/

/** One stored record, as parsed from its line. */
export interface AuditRecord {
  v: 1
  /** 1 for the first record, then +1 per record, no gaps. */
  seq: number
  /** ISO 8601 UTC with milliseconds (`Date#toISOString`). */
  time: string
  project: string
  event: string
  reason: string
  actor: string
  subject: string
  data?: Record<string, unknown>
  /** Hex SHA-256 of the previous line's bytes, or the genesis hash for seq 1. */
  prev: string
}

/** A record together with the hash of its own line (what the next record's `prev` holds). */
export interface ChainedRecord extends AuditRecord {
  hash: string
}

/** What a producer appends to one project's log (the project comes from the log). */
export type AuditEventInput = Omit<GovernanceEventInput, 'project'> & { project?: string }

/** Throws ERR_USAGE unless `project` is a safe name: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`. */
export function assertProjectName(project: string): void {
  if (typeof project !== 'string' || !PROJECT_RE.test(project)) {
    throw new KeelError(
      'ERR_USAGE',
      `invalid project name ${JSON.stringify(project)}: use 1-128 of [A-Za-z0-9._-], starting with a letter or digit`,
    )
  }
}

// crypto.hash (Node >= 20.12) is a one-shot digest, several times faster than createHash
// for short inputs such as one log line; fall back where it is missing.
const oneShot = (nodeCrypto as { hash?: (alg: string, data: Uint8Array | string, enc: 'hex') => string }).hash

export function sha256Hex(data: Uint8Array | string): string {
  return oneShot ? oneShot('sha256', data, 'hex') : createHash('sha256').update(data).digest('hex')
}

/** The `prev` of record 1: SHA-256 of the UTF-8 bytes `keel-audit-v1:<project>`. */
export function genesisHash(project: string): string {
  return sha256Hex(`keel-audit-v1:${project}`)
}

/**
 * Serializes one record to its line (without the newline), keys in the documented order.
 * The input is validated: strings where strings belong, `data` a plain JSON object.
 */
export function encodeRecord(record: AuditRecord): string {
  const out: Record<string, unknown> = {
    v: record.v,
    seq: record.seq,
    time: record.time,
    project: record.project,
    event: record.event,
    reason: record.reason,
    actor: record.actor,
    subject: record.subject,
  }
  if (record.data !== undefined) out.data = record.data
  out.prev = record.prev
  return JSON.stringify(out)
}

/** The validated fields of a record before `data` and `prev`, in line order. */
function recordHead(input: AuditEventInput, project: string, seq: number, now: number): Omit<AuditRecord, 'data' | 'prev'> {
  for (const key of ['event', 'reason', 'actor', 'subject'] as const) {
    const value = input[key]
    if (typeof value !== 'string') throw new KeelError('ERR_USAGE', `audit event: ${key} must be a string`)
  }
  if (input.event.length === 0) throw new KeelError('ERR_USAGE', 'audit event: event must not be empty')
  if (input.reason.length === 0) throw new KeelError('ERR_USAGE', 'audit event: reason must not be empty')
  if (input.project !== undefined && input.project !== project) {
    throw new KeelError('ERR_USAGE', `audit event for project ${input.project} sent to the log of ${project}`)
  }
  const time = input.time ?? now
  if (typeof time !== 'number' || !Number.isFinite(time) || Math.abs(time) > 8.64e15) {
    throw new KeelError('ERR_USAGE', 'audit event: time must be milliseconds since the epoch')
  }
  return {
    v: RECORD_VERSION,
    seq,
    time: new Date(time).toISOString(),
    project,
    event: input.event,
    reason: input.reason,
    actor: input.actor,
    subject: input.subject,
  }
}

/** `data` as the JSON that will be stored (no undefined, functions or cycles), if any. */
function dataJson(input: AuditEventInput): string | undefined {
  if (input.data === undefined) return undefined
  if (input.data === null || typeof input.data !== 'object' || Array.isArray(input.data)) {
    throw new KeelError('ERR_USAGE', 'audit event: data must be a plain object')
  }
  try {
    return JSON.stringify(input.data)
  } catch (err) {
    throw new KeelError('ERR_USAGE', 'audit event: data is not JSON-serializable', { cause: err })
  }
}

/**
 * Builds the record that follows `prev` (seq and hash of the last line, or 0/genesis).
 * Throws ERR_USAGE on an event that cannot be stored.
 */
export function buildRecord(
  input: AuditEventInput,
  project: string,
  seq: number,
  prev: string,
  now: number,
): AuditRecord {
  return buildRecordLine(input, project, seq, prev, now).record()
}

/**
 * `encodeRecord(buildRecord(...))` in one pass, for the log writer: `data` is serialized
 * once and never parsed back unless the caller asks for the record.
 */
export function buildRecordLine(
  input: AuditEventInput,
  project: string,
  seq: number,
  prev: string,
  now: number,
): { line: string; record: () => AuditRecord } {
  const head = recordHead(input, project, seq, now)
  const json = dataJson(input)
  const headJson = JSON.stringify(head)
  const line = `${headJson.slice(0, -1)}${json === undefined ? '' : `,"data":${json}`},"prev":${JSON.stringify(prev)}}`
  return {
    line,
    record() {
      const record: AuditRecord = { ...head, prev }
      // Parsed back so what is returned is exactly what JSON carries.
      if (json !== undefined) record.data = JSON.parse(json) as Record<string, unknown>
      return record
    },
  }
}

/** Why a line is not a record; `undefined` when it is one. */
export type ParseResult = { ok: true; record: AuditRecord } | { ok: false; problem: string }

/**
 * Parses and checks one line (bytes without the newline). Checks shape and types only;
 * chain and sequence checks belong to the verifier.
 */
export function parseRecordLine(line: Uint8Array | string): ParseResult {
  let value: unknown
  try {
    value = JSON.parse(typeof line === 'string' ? line : Buffer.from(line.buffer, line.byteOffset, line.byteLength).toString('utf8'))
  } catch {
    return { ok: false, problem: 'not valid JSON' }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, problem: 'not a JSON object' }
  const r = value as Record<string, unknown>
  if (r.v !== RECORD_VERSION) return { ok: false, problem: `unknown record version ${JSON.stringify(r.v)}` }
  if (typeof r.seq !== 'number' || !Number.isSafeInteger(r.seq) || r.seq < 1) return { ok: false, problem: 'seq is not a positive integer' }
  if (typeof r.prev !== 'string' || !HEX64_RE.test(r.prev)) return { ok: false, problem: 'prev is not a hex SHA-256' }
  for (const key of ['time', 'project', 'event', 'reason', 'actor', 'subject']) {
    if (typeof r[key] !== 'string') return { ok: false, problem: `${key} is not a string` }
  }
  if (r.data !== undefined && (r.data === null || typeof r.data !== 'object' || Array.isArray(r.data))) {
    return { ok: false, problem: 'data is not an object' }
  }
  return { ok: true, record: r as unknown as AuditRecord }
}

export function isHex64(s: unknown): s is string {
  return typeof s === 'string' && HEX64_RE.test(s)
}
