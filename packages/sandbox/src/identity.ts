/**
 * Who the agent runs as. keel itself must be root (namespaces, nftables), but the agent
 * runs as the invoking user: `--user`, else SUDO_UID/SUDO_GID, and root only when asked.
 */
import { execFile } from 'node:child_process'
import { KeelError } from '@keel/core'

export interface RunAs {
  uid: number
  gid: number
  /** Present when the uid has a passwd entry (then supplementary groups are initialized). */
  user?: string
  home?: string
}

interface PasswdEntry {
  name: string
  uid: number
  gid: number
  home: string
}

/** Looks a user up by name or uid through NSS (`getent passwd`), so LDAP/sssd users work too. */
export function lookupUser(nameOrUid: string): Promise<PasswdEntry | undefined> {
  return new Promise((resolve) => {
    execFile('getent', ['passwd', nameOrUid], { timeout: 5000, encoding: 'utf8' }, (err, stdout) => {
      if (err) return resolve(undefined)
      const [name, , uid, gid, , home] = stdout.trim().split('\n')[0]?.split(':') ?? []
      if (name === undefined || uid === undefined || gid === undefined) return resolve(undefined)
      resolve({ name, uid: Number(uid), gid: Number(gid), home: home ?? '/' })
    })
  })
}

const isId = (s: string | undefined): s is string => s !== undefined && /^\d+$/.test(s)

export interface ResolveRunAsOptions {
  /** `--user <name|uid>` */
  user?: string
  /** `--as-root`: run the agent as root on purpose. */
  asRoot?: boolean
  env?: NodeJS.ProcessEnv
}

export async function resolveRunAs(options: ResolveRunAsOptions): Promise<RunAs> {
  const env = options.env ?? process.env
  if (options.asRoot) return { uid: 0, gid: 0, user: 'root', home: '/root' }
  if (options.user !== undefined) {
    const entry = await lookupUser(options.user)
    if (entry) return { uid: entry.uid, gid: entry.gid, user: entry.name, home: entry.home }
    if (isId(options.user)) return { uid: Number(options.user), gid: Number(options.user) }
    throw new KeelError('ERR_USAGE', `--user ${options.user}: no such user (give a user name or a numeric uid)`)
  }
  if (isId(env.SUDO_UID)) {
    const uid = Number(env.SUDO_UID)
    const entry = await lookupUser(env.SUDO_UID)
    const gid = isId(env.SUDO_GID) ? Number(env.SUDO_GID) : (entry?.gid ?? uid)
    return { uid, gid, ...(entry ? { user: entry.name, home: entry.home } : {}) }
  }
  throw new KeelError(
    'ERR_USAGE',
    'keel runs the agent as the invoking user, but there is none: run it with sudo, or pass --user <name|uid>, or --as-root to run the agent as root',
  )
}
