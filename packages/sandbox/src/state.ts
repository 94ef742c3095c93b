/**
 * Run-time state of live sandboxes, so `keel gc` can tell a sandbox whose launcher was
 * killed (SIGKILL leaves no chance to tear down) from one that is running.
 *
 * /run/keel/<id>/state.json holds the launcher's pid and its start time (field 22 of
 * /proc/<pid>/stat), because a bare pid may have been reused by an unrelated process.
 */
import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const STATE_ROOT = process.env.KEEL_STATE_DIR ?? '/run/keel'

export interface SandboxState {
  id: string
  netns: string
  launcherPid: number
  launcherStart: string
  createdAt: string
  policy: string[]
  agent: string
}

export const stateDir = (id: string, root = STATE_ROOT): string => join(root, id)

/** Start time of a process in clock ticks since boot, or undefined if it does not exist. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parens: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[19]
  } catch {
    return undefined
  }
}

export function writeState(state: SandboxState, root = STATE_ROOT): string {
  const dir = stateDir(state.id, root)
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  writeFileSync(join(dir, 'state.json'), JSON.stringify(state, null, 2) + '\n', { mode: 0o644 })
  return dir
}

export function readStates(root = STATE_ROOT): { dir: string; state?: SandboxState; error?: string }[] {
  let names: string[]
  try {
    names = readdirSync(root)
  } catch {
    return []
  }
  return names.map((name) => {
    const dir = join(root, name)
    try {
      return { dir, state: JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as SandboxState }
    } catch (err) {
      return { dir, error: (err as Error).message }
    }
  })
}

/** True when the launcher that wrote this state is still the same live process. */
export function isLauncherAlive(state: SandboxState): boolean {
  const start = processStartTime(state.launcherPid)
  return start !== undefined && start === state.launcherStart
}

export function removeStateDir(dir: string): void {
  // The common case, a flat directory, without rmSync's recursive machinery (loading and
  // running it is a few ms of every `keel run`'s exit); anything else falls back to it.
  try {
    for (const entry of readdirSync(dir)) unlinkSync(join(dir, entry))
    rmdirSync(dir)
  } catch {
    rmSync(dir, { recursive: true, force: true })
  }
}
