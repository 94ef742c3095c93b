/**
 * Reading a log file as exact line bytes: forward in large chunks (verify, export, show)
 * and backward from the end (the tail an append continues from).
 */
import { fstatSync, readSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { open } from 'node:fs/promises'
import { MAX_RECORD_BYTES, parseRecordLine, sha256Hex } from './format.js'
import type { AuditRecord } from './format.js'

const NL = 0x0a
const CHUNK = 4 * 1024 * 1024

/** Bytes after the last newline: a write that did not finish. */
export interface TornTail {
  /** Byte offset where the torn bytes start (the end of the last complete line). */
  offset: number
  length: number
  /** 1-based line number the torn bytes would have been. */
  line: number
}

export interface ScanResult {
  /** Complete lines seen. */
  lines: number
  /** Bytes read (the whole range). */
  bytes: number
  torn?: TornTail
}

/**
 * Calls `onLine(bytes, offset, lineNo)` for each complete line in `[0, end)` (without
 * its newline; the buffer is only valid during the call), and `onChunk` with every
 * chunk read, in order, so a caller can hash the whole range in the same pass.
 */
export async function scanLines(
  path: string,
  onLine: (line: Buffer, offset: number, lineNo: number) => void,
  options: { end?: number; onChunk?: (chunk: Buffer) => void } = {},
): Promise<ScanResult> {
  const fh = await open(path, 'r')
  try {
    const end = options.end ?? (await fh.stat()).size
    let pos = 0
    let carry: Buffer | undefined
    let carryOffset = 0
    let lineNo = 0
    const buf = Buffer.allocUnsafe(CHUNK)
    while (pos < end) {
      const want = Math.min(CHUNK, end - pos)
      const { bytesRead } = await fh.read(buf, 0, want, pos)
      if (bytesRead === 0) break
      const chunk = buf.subarray(0, bytesRead)
      options.onChunk?.(chunk)
      let start = 0
      let nl = chunk.indexOf(NL, 0)
      if (carry !== undefined && nl !== -1) {
        const line = Buffer.concat([carry, chunk.subarray(0, nl)])
        onLine(line, carryOffset, ++lineNo)
        carry = undefined
        start = nl + 1
        nl = chunk.indexOf(NL, start)
      }
      while (nl !== -1) {
        onLine(chunk.subarray(start, nl), pos + start, ++lineNo)
        start = nl + 1
        nl = chunk.indexOf(NL, start)
      }
      if (start < bytesRead) {
        const rest = Buffer.from(chunk.subarray(start, bytesRead)) // copy: buf is reused
        if (carry === undefined) {
          carry = rest
          carryOffset = pos + start
        } else {
          carry = Buffer.concat([carry, rest])
        }
      }
      pos += bytesRead
    }
    const result: ScanResult = { lines: lineNo, bytes: pos }
    if (carry !== undefined) result.torn = { offset: carryOffset, length: carry.length, line: lineNo + 1 }
    return result
  } finally {
    await fh.close()
  }
}

/** What the end of a log looks like. */
export type Tail =
  | { kind: 'empty' }
  | { kind: 'record'; record: AuditRecord; hash: string; offset: number; size: number }
  | { kind: 'torn'; torn: TornTail; size: number }
  | { kind: 'malformed'; offset: number; length: number; problem: string; size: number }

/** Finds the last newline strictly before `before`, reading backwards; -1 if none within `limit` bytes. */
function lastNewlineBefore(fd: number, before: number, limit: number): number {
  const step = 64 * 1024
  const buf = Buffer.allocUnsafe(step)
  let end = before
  const floor = Math.max(0, before - limit)
  while (end > floor) {
    const start = Math.max(floor, end - step)
    const bytesRead = readSync(fd, buf, 0, end - start, start)
    const i = buf.subarray(0, bytesRead).lastIndexOf(NL)
    if (i !== -1) return start + i
    end = start
  }
  return -1
}

/**
 * Reads the last record of an open log (size from fstat), or says why there is none.
 * Line numbers in a torn tail are not known without a full scan, so `line` is 0 there.
 * Every append reads the tail under the lock, so the reads are synchronous: a few short
 * local syscalls, where each promise-API call costs a thread-pool round trip.
 */
export async function readTail(fh: FileHandle): Promise<Tail> {
  const fd = fh.fd
  const size = fstatSync(fd).size
  if (size === 0) return { kind: 'empty' }
  const last = Buffer.alloc(1)
  readSync(fd, last, 0, 1, size - 1)
  if (last[0] !== NL) {
    const nl = lastNewlineBefore(fd, size, Math.max(size, 0))
    const offset = nl + 1
    return { kind: 'torn', torn: { offset, length: size - offset, line: 0 }, size }
  }
  const nl = lastNewlineBefore(fd, size - 1, MAX_RECORD_BYTES + 1)
  const offset = nl + 1
  if (nl === -1 && size - 1 > MAX_RECORD_BYTES) {
    return { kind: 'malformed', offset: size - 1 - MAX_RECORD_BYTES, length: MAX_RECORD_BYTES, problem: 'last line is longer than the record limit', size }
  }
  const line = Buffer.alloc(size - 1 - offset)
  readSync(fd, line, 0, line.length, offset)
  const parsed = parseRecordLine(line)
  if (!parsed.ok) return { kind: 'malformed', offset, length: size - offset, problem: parsed.problem, size }
  return { kind: 'record', record: parsed.record, hash: sha256Hex(line), offset, size }
}
