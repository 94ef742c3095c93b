/**
 * `keel gc`: removes what a killed launcher left behind (its namespace and state), and
 * never touches a live sandbox: a state whose launcher still runs (same pid, same start
 * time) is kept.
 */
import { readdirSync, readlinkSync, statSync } from 'node:fs'
import { deleteNetns, listKeelNetns, netnsPath } from './netns.js'
import { isLauncherAlive, readStates, removeStateDir, STATE_ROOT } from './state.js'

export interface GcResult {
  removed: { netns?: string; dir?: string; why: string }[]
  kept: { id: string; pid: number }[]
  /** Pids of processes (orphaned agents) that were still inside a removed namespace. */
  killed: number[]
  errors: string[]
}

/** keel's own sandbox namespaces: `keel-` and a 10-hex id (other keel-* names are not ours to delete). */
const SANDBOX_NETNS = /^keel-[0-9a-f]{10}$/

export async function collectGarbage(root = STATE_ROOT): Promise<GcResult> {
  const result: GcResult = { removed: [], kept: [], killed: [], errors: [] }
  const owned = new Set<string>()
  for (const entry of readStates(root)) {
    if (!entry.state) {
      removeStateDir(entry.dir)
      result.removed.push({ dir: entry.dir, why: `unreadable state (${entry.error ?? 'unknown'})` })
      continue
    }
    const { state } = entry
    owned.add(state.netns)
    if (isLauncherAlive(state)) {
      result.kept.push({ id: state.id, pid: state.launcherPid })
      continue
    }
    try {
      result.killed.push(...killProcessesIn(state.netns))
      await deleteNetns(state.netns)
      removeStateDir(entry.dir)
      result.removed.push({ netns: state.netns, dir: entry.dir, why: `launcher pid ${state.launcherPid} is gone` })
    } catch (err) {
      result.errors.push(`${state.netns}: ${(err as Error).message}`)
    }
  }
  // A namespace with no state at all: the launcher writes its state before it creates the
  // namespace, so this can only be left over from a launcher that died mid-teardown.
  for (const name of listKeelNetns()) {
    if (owned.has(name) || !SANDBOX_NETNS.test(name)) continue
    try {
      result.killed.push(...killProcessesIn(name))
      await deleteNetns(name)
      result.removed.push({ netns: name, why: 'no state: its launcher is gone' })
    } catch (err) {
      result.errors.push(`${name}: ${(err as Error).message}`)
    }
  }
  return result
}

/**
 * An agent outlives a SIGKILLed launcher and would keep the (unnamed) namespace alive.
 * Its processes are the ones whose network namespace is this one (same inode): SIGKILL
 * them by pid. Nothing outside the namespace can match.
 */
function killProcessesIn(name: string): number[] {
  let inode: number
  try {
    inode = statSync(netnsPath(name)).ino
  } catch {
    return []
  }
  const killed: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    try {
      if (readlinkSync(`/proc/${pid}/ns/net`) !== `net:[${inode}]`) continue
      process.kill(pid, 'SIGKILL')
      killed.push(pid)
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return killed
}
