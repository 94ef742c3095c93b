/**
 * Files keel writes for the user (`--report`, `--log`), safely, although keel runs as root
 * and the agent may be able to write in the directory the user chose (their project
 * directory, when the agent runs as the invoking user).
 *
 * The attack this stops: during the run the agent replaces `report.json` with a symlink to
 * `/root/.bashrc`; at exit root writes the report there, and the report carries names the
 * agent chose (`$(cmd).example` is a valid DNS query name). Found by test/hostile.
 *
 * - The file is opened **before the agent starts** and written through that descriptor, so
 *   whatever the agent does to the path during the run is never followed.
 * - `O_NOFOLLOW`: a symlink already at the path (left by an earlier run's agent) is refused.
 * - Under sudo, the file is opened with the **invoking user's** file permissions
 *   (SUDO_UID/SUDO_GID as the effective ids, for the open only), so a symlinked directory
 *   cannot lead root's write anywhere that user could not write; the file is theirs.
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs'
import { KeelError } from '@keel/core'

export interface FileOwner {
  uid: number
  gid: number
}

/** The user who ran `sudo keel`, from SUDO_UID/SUDO_GID; undefined when not under sudo (or root). */
export function invokingUser(env: NodeJS.ProcessEnv = process.env): FileOwner | undefined {
  const uid = env.SUDO_UID
  const gid = env.SUDO_GID
  if (uid === undefined || !/^\d+$/.test(uid) || Number(uid) === 0) return undefined
  return { uid: Number(uid), gid: gid !== undefined && /^\d+$/.test(gid) ? Number(gid) : Number(uid) }
}

export interface OpenOutputOptions {
  /** Append (the flow log) rather than truncate (the report). */
  append: boolean
  /** Open with this user's file permissions (effective uid/gid for the open only). */
  owner?: FileOwner
  /** What the file is, for the error message ("the report", "the flow log"). */
  what: string
  mode?: number
}

/**
 * Opens `path` for writing and returns the descriptor. Throws KeelError `ERR_USAGE` with
 * a clear message when it cannot (a symlink at the path, no permission, no directory).
 * Call it before the agent starts; it changes the effective ids for a moment, which is
 * safe only while nothing else runs.
 */
export function openOutputFile(path: string, options: OpenOutputOptions): number {
  const flags =
    constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (options.append ? constants.O_APPEND : constants.O_TRUNC)
  // (libuv opens every file O_CLOEXEC, so the agent never inherits the descriptor.)
  const open = (): number => openSync(path, flags, options.mode ?? 0o644)
  try {
    const owner = options.owner
    if (owner === undefined || process.geteuid?.() !== 0) return open()
    const egid = process.getegid!()
    process.setegid!(owner.gid)
    try {
      process.seteuid!(owner.uid)
      try {
        return open()
      } finally {
        process.seteuid!(0)
      }
    } finally {
      process.setegid!(egid)
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why =
      code === 'ELOOP'
        ? 'it is a symbolic link, and keel does not follow links for files it writes as root'
        : code === 'EACCES' || code === 'EPERM'
          ? `permission denied${options.owner ? ` for the invoking user (uid ${options.owner.uid})` : ''}`
          : (err as Error).message
    throw new KeelError('ERR_USAGE', `cannot write ${options.what} ${path}: ${why}`, { cause: err })
  }
}

/** Writes all of `data` to `fd` (a short write on a regular file is retried). */
export function writeAll(fd: number, data: string): void {
  const buf = Buffer.from(data)
  // Bounded: each iteration writes at least one byte or throws.
  for (let off = 0; off < buf.length; ) {
    const n = writeSync(fd, buf, off, buf.length - off)
    if (n <= 0) throw new Error('write returned 0')
    off += n
  }
}

/** Closes `fd`, ignoring errors (it may already be closed). */
export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return
  try {
    closeSync(fd)
  } catch {
    // already closed
  }
}
