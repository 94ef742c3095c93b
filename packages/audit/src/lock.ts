/**
 * A cross-process advisory lock made of a lock file, in pure Node (Node has no flock).
 *
 * Acquire: write `{pid, start, host, token}` to a private file `<name>.lock.<pid>.<token>`,
 * then `link()` it to `<name>.lock`. link(2) is atomic and fails with EEXIST when the lock
 * exists, so the lock file never appears half-written. Release: unlink it, but only if it
 * is still our file (same inode). A {@link FileLocker} keeps its private file for its whole
 * life, so taking and releasing the lock is three syscalls (link, lstat, unlink): a log
 * writer takes it for every commit.
 *
 * A holder that died leaves its lock behind. A waiter steals it when the holder is on
 * this host and gone: `kill(pid, 0)` gives ESRCH, or `/proc/<pid>/stat` shows a
 * different start time (the pid was reused). Stealing renames the stale file aside
 * (only one waiter can win that rename) and re-checks what it moved; had it moved a
 * fresh lock instead, it links it straight back.
 *
 * The file operations are synchronous on purpose: each is one short local syscall (µs),
 * where the promise API costs a thread-pool round trip (~0.2 ms on a busy 2-core VM) and
 * an append takes the lock, reads the tail and releases: that was most of an append's
 * latency. Only the backoff between tries waits asynchronously.
 *
 * Limits (stated in the README): local filesystems only; a holder on another host is
 * never presumed dead; a waiter gives up with ERR_AUDIT_IO after `timeoutMs`. A process
 * that dies leaves its private file behind; the next locker on that lock removes it.
 */
import { linkSync, lstatSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { KeelError } from '@keel/core'

export interface FileLockOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number
}

export interface FileLock {
  readonly path: string
  release(): Promise<void>
}

interface Holder {
  pid: number
  start?: string
  host: string
  token: string
}

const DEFAULT_TIMEOUT_MS = 10_000
// A holder keeps the lock for about one fdatasync (a few ms): waiting longer than that
// between tries only adds latency.
const MAX_BACKOFF_MS = 4

let selfStart: string | undefined | null = null

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), if readable. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[19]
  } catch {
    return undefined
  }
}

function ownStart(): string | undefined {
  if (selfStart === null) selfStart = processStart(process.pid)
  return selfStart
}

/** True unless the holder is on this host and provably gone. */
export function holderAlive(holder: Holder): boolean {
  if (holder.host !== hostname()) return true
  if (holder.pid === process.pid) return holder.start === undefined || holder.start === ownStart()
  try {
    process.kill(holder.pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    // EPERM: it exists, owned by someone else.
  }
  if (holder.start !== undefined) {
    const start = processStart(holder.pid)
    if (start !== undefined && start !== holder.start) return false
  }
  return true
}

function parseHolder(text: string): Holder | undefined {
  try {
    const h = JSON.parse(text) as Partial<Holder>
    if (typeof h.pid === 'number' && typeof h.host === 'string' && typeof h.token === 'string') {
      return { pid: h.pid, host: h.host, token: h.token, ...(typeof h.start === 'string' ? { start: h.start } : {}) }
    }
  } catch {
    // fall through
  }
  return undefined
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

function steal(lockPath: string, staleText: string): void {
  const aside = `${lockPath}.stale.${process.pid}.${randomBytes(4).toString('hex')}`
  try {
    renameSync(lockPath, aside)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return // someone else stole it first
    throw err
  }
  const moved = readText(aside)
  if (moved !== staleText) {
    // We moved a fresh lock that replaced the stale one between our read and rename: put it back.
    try {
      linkSync(aside, lockPath)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
  unlinkQuietly(aside)
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // already gone
  }
}

/** Takes and releases one lock file, again and again. */
export interface FileLocker {
  /** Waits (bounded backoff, up to `timeoutMs`) for the lock. Throws ERR_AUDIT_IO on timeout, naming the holder. */
  acquire(): Promise<FileLock>
  /** Removes the private file (release any held lock first). */
  close(): void
}

const PRIVATE_SUFFIX_RE = /^\.(\d+)\.[0-9a-f]{24}$/

/** Removes private files of lockers on this host whose process is gone. */
function removeOrphans(lockPath: string): void {
  const base = basename(lockPath)
  let names: string[]
  try {
    names = readdirSync(dirname(lockPath))
  } catch {
    return
  }
  for (const name of names) {
    if (!name.startsWith(base) || !PRIVATE_SUFFIX_RE.test(name.slice(base.length))) continue
    const path = join(dirname(lockPath), name)
    const text = readText(path)
    const holder = text === undefined ? undefined : parseHolder(text)
    if (holder !== undefined && !holderAlive(holder)) unlinkQuietly(path)
  }
}

export function createFileLocker(lockPath: string, options: FileLockOptions = {}): FileLocker {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  /** Our private file: its path, and its inode (the lock file is a hard link to it while we hold it). */
  let mine: { path: string; ino: number } | undefined
  let cleaned = false

  const prepare = (): { path: string; ino: number } => {
    if (mine) return mine
    if (!cleaned) {
      cleaned = true
      removeOrphans(lockPath)
    }
    const start = ownStart()
    const me: Holder = { pid: process.pid, ...(start !== undefined ? { start } : {}), host: hostname(), token: randomBytes(12).toString('hex') }
    const path = `${lockPath}.${process.pid}.${me.token}`
    try {
      writeFileSync(path, JSON.stringify(me), { mode: 0o644, flag: 'wx' })
      mine = { path, ino: lstatSync(path).ino }
    } catch (err) {
      unlinkQuietly(path)
      throw new KeelError('ERR_AUDIT_IO', `cannot create lock ${lockPath}: ${(err as Error).message}`, { cause: err })
    }
    return mine
  }

  const release = (ino: number): Promise<void> => {
    try {
      if (lstatSync(lockPath).ino === ino) unlinkSync(lockPath)
    } catch {
      // already gone
    }
    return Promise.resolve()
  }

  return {
    async acquire() {
      const deadline = Date.now() + timeoutMs
      let backoff = 1
      let lastHolder: Holder | undefined
      for (let attempt = 0; attempt < 1_000_000; attempt++) {
        const own = prepare()
        try {
          linkSync(own.path, lockPath)
          return { path: lockPath, release: () => release(own.ino) }
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          if (code === 'ENOENT' && attempt < 3) {
            // Our private file was removed under us: make a new one.
            mine = undefined
            continue
          }
          if (code !== 'EEXIST') {
            throw new KeelError('ERR_AUDIT_IO', `cannot create lock ${lockPath}: ${(err as Error).message}`, { cause: err })
          }
        }
        const held = readText(lockPath)
        if (held === undefined) continue // released between our link and read: try again now
        const holder = parseHolder(held)
        lastHolder = holder
        // Content is written before link(), so an unparsable lock is not ours: treat as stale.
        if (holder === undefined || !holderAlive(holder)) {
          steal(lockPath, held)
          continue
        }
        if (Date.now() >= deadline) break
        await sleep(backoff * (0.5 + Math.random()))
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
      }
      throw new KeelError(
        'ERR_AUDIT_IO',
        `timed out after ${timeoutMs} ms waiting for ${lockPath}` + (lastHolder ? ` (held by pid ${lastHolder.pid} on ${lastHolder.host})` : ''),
      )
    },
    close() {
      if (mine) unlinkQuietly(mine.path)
      mine = undefined
    },
  }
}

/**
 * Takes the lock at `lockPath` once, waiting with bounded backoff up to `timeoutMs`.
 * Throws KeelError ERR_AUDIT_IO on timeout, naming the holder.
 */
export async function acquireFileLock(lockPath: string, options: FileLockOptions = {}): Promise<FileLock> {
  const locker = createFileLocker(lockPath, options)
  try {
    return await locker.acquire()
  } finally {
    // Held, the lock file is a hard link to our private file, so its name can go either way.
    locker.close()
  }
}
