/**
 * Shared by the hostile suites: run the hostile agent (agents/escape.py) under the real
 * `keel run` and read back what each attempt saw, how long it took, and the report.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'vitest'
import type { World } from '../world/index.js'
import { KEEL, keelNamespaces, keelRun, parseTimings, ROOT, type KeelRunOptions, type KeelRunResult, type ReportRow } from '../sandbox/harness.js'

export const ESCAPE_AGENT = join(ROOT, 'test/hostile/agents/escape.py')
/** The system python3: the agent runs as nobody, who cannot read /root/.pyenv shims. */
export const PYTHON = '/usr/bin/python3'
export const NODE = '/usr/bin/node'

/** An attempt that is over in this time "failed fast" (DESIGN.md: reject, don't hang). */
export const FAST_MS = 2000

export interface AttemptResult {
  ms: number
  /** 0 = the attempt got through (an escape); 1 = blocked. */
  rc: number
  result: Record<string, unknown> & { outcome: string; escaped: boolean }
}

export interface EscapeRun extends KeelRunResult {
  attempts: Map<string, AttemptResult>
  /** The result of one attempt; fails the test if the agent did not run it. */
  get(name: string): AttemptResult['result']
}

export interface EscapeOptions extends Omit<KeelRunOptions, 'command'> {
  /** Passed to the agent as JSON (ca, worldDnsPort, marker, ...). */
  config?: Record<string, unknown>
}

export async function runEscape(names: readonly string[], options: EscapeOptions): Promise<EscapeRun> {
  const config = JSON.stringify({ worldDnsPort: options.world.dnsPort, ...options.config })
  const r = await keelRun({ ...options, command: [PYTHON, ESCAPE_AGENT, config, ...names] })
  const timings = parseTimings(r.stdout)
  const attempts = new Map<string, AttemptResult>()
  for (const line of r.stdout.split('\n')) {
    const m = /^RESULT (\S+) (.*)$/.exec(line.trim())
    if (!m) continue
    const t = timings.get(m[1]!)
    attempts.set(m[1]!, { ms: t?.ms ?? -1, rc: t?.rc ?? -1, result: JSON.parse(m[2]!) as AttemptResult['result'] })
  }
  return Object.assign(r, {
    attempts,
    get(name: string) {
      const a = attempts.get(name)
      if (!a) throw new Error(`the agent did not report attempt ${name}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
      return a.result
    },
  })
}

/** Every named attempt ran, was blocked, and (unless listed in `slow`) was over within FAST_MS. */
export function expectAllBlocked(run: EscapeRun, names: readonly string[], slow: Record<string, number> = {}): void {
  expect(run.code, `keel exit code\nstderr: ${run.stderr}`).toBe(0)
  for (const name of names) {
    const a = run.attempts.get(name)
    expect(a, `attempt ${name} did not run\nstdout: ${run.stdout}\nstderr: ${run.stderr}`).toBeDefined()
    expect(a!.rc, `${name} got through: ${JSON.stringify(a!.result)}`).toBe(1)
    expect(a!.result.outcome, `${name}: ${JSON.stringify(a!.result)}`).not.toBe('agent-error')
    expect(a!.ms, `${name} should fail fast: ${JSON.stringify(a!.result)}`).toBeLessThan(slow[name] ?? FAST_MS)
  }
}

/** Report rows matching all the given fields. */
export function rows(report: readonly ReportRow[], match: Partial<ReportRow>): ReportRow[] {
  return report.filter((row) => Object.entries(match).every(([k, v]) => row[k as keyof ReportRow] === v))
}

/** The reasons recorded for a name or address, sorted. */
export function reasonsFor(report: readonly ReportRow[], nameOrAddress: string): string[] {
  return report
    .filter((r) => r.name === nameOrAddress || r.address === nameOrAddress)
    .map((r) => r.reason)
    .sort()
}

/** What the world saw, to prove later that nothing new reached it. */
export function worldSnapshot(world: World): { http: number; echo: number; dns: string[] } {
  return { http: world.http.requests.length, echo: world.echo.connections.length, dns: world.dns.queries.map((q) => q.name) }
}

/**
 * Starts the fake world, waiting (bounded) while another suite on this machine holds its
 * fixed ports (443/80/7 on 127.0.0.x): two worlds cannot run at once.
 */
export async function startWorldWhenFree(timeoutMs = 120_000): Promise<World> {
  const { startWorld } = await import('../world/index.js')
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await startWorld()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() > deadline) throw err
      await new Promise((r) => setTimeout(r, 1000))
    }
  }
}

export interface SandboxState {
  id: string
  netns: string
  launcherPid: number
}

/** keel's state files (/run/keel/<id>/state.json) that can be read now. */
export function sandboxStates(root = '/run/keel'): SandboxState[] {
  let ids: string[] = []
  try {
    ids = readdirSync(root)
  } catch {
    return []
  }
  const out: SandboxState[] = []
  for (const id of ids) {
    try {
      out.push(JSON.parse(readFileSync(join(root, id, 'state.json'), 'utf8')) as SandboxState)
    } catch {
      // being written or removed right now
    }
  }
  return out
}

/**
 * Sandboxes left behind: a keel namespace with no state, or whose launcher is gone. Live
 * sandboxes of other suites running on this machine at the same time are not counted (the
 * launcher writes its state before it makes the namespace and removes it after).
 */
export function leftoverSandboxes(): string[] {
  const live = new Set(sandboxStates().filter((s) => isAlive(s.launcherPid)).map((s) => s.netns))
  return keelNamespaces().filter((ns) => !live.has(ns))
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Asserts no sandbox was left behind; if one was, removes it first (`keel gc`, which
 * never touches a live sandbox), so that one failure does not cascade into later suites.
 */
export function expectNoLeftovers(): void {
  const left = leftoverSandboxes()
  if (left.length > 0) {
    try {
      execFileSync(process.execPath, [KEEL, 'gc', '--json'], { encoding: 'utf8', timeout: 30_000 })
    } catch {
      // the assertion below reports the leftovers either way
    }
  }
  expect(left, 'sandboxes left behind (removed now with keel gc)').toEqual([])
}
