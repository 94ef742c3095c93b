/** Where logs live when nobody says: root gets the system location, others their state dir. */
import { homedir } from 'node:os'
import { join } from 'node:path'

/**
 * `$KEEL_AUDIT_DIR`, else `/var/lib/keel/audit` for root, else
 * `$XDG_STATE_HOME/keel/audit` (default `~/.local/state/keel/audit`).
 */
export function defaultAuditDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KEEL_AUDIT_DIR) return env.KEEL_AUDIT_DIR
  if (typeof process.getuid === 'function' && process.getuid() === 0) return '/var/lib/keel/audit'
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'keel', 'audit')
}
