/**
 * Runs the real `keel run` (apps/cli/bin/keel.js, built) as a child process against the
 * fake world, with a report file, bounded in time, and checks that every sandbox it made
 * is gone afterwards. Shared by the sandbox, hostile and bench suites.
 */
import { spawn } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { World } from '../world/index.js'

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
export const KEEL = join(ROOT, 'apps/cli/bin/keel.js')
export const FAKE_WORLD_POLICY = join(ROOT, 'examples/fake-world.yaml')
export const isRoot = process.getuid?.() === 0

export interface ReportRow {
  name: string | null
  address: string | null
  port: number | null
  protocol: string
  verdict: 'allow' | 'deny'
  reason: string
  count: number
  bytesOut: number
  bytesIn: number
}

export interface KeelRunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  durationMs: number
  report: ReportRow[]
}

/** A scratch directory readable by the unprivileged agent (mkdtemp makes 0700). */
export function scratchDir(prefix = 'keel-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix))
  chmodSync(path, 0o755)
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) }
}

/** The world's CA, copied where the agent (nobody) can read it. */
export function publicCa(world: World, dir: string): string {
  const path = join(dir, 'world-ca.pem')
  if (!existsSync(path)) {
    copyFileSync(world.ca.path, path)
    chmodSync(path, 0o644)
  }
  return path
}

export function writePolicy(dir: string, name: string, yaml: string): string {
  const path = join(dir, name)
  writeFileSync(path, yaml)
  return path
}

export interface KeelRunOptions {
  world: World
  policy?: string | string[]
  agent?: string
  /** Extra `keel run` flags before `--`. */
  flags?: string[]
  /** The agent command. */
  command: string[]
  env?: NodeJS.ProcessEnv
  timeoutMs?: number
  dir: string
  /** Called with the keel process once started (for signal tests). */
  onSpawn?: (pid: number) => void
}

let runCounter = 0

export function keelRun(options: KeelRunOptions): Promise<KeelRunResult> {
  const reportPath = join(options.dir, `report-${process.pid}-${++runCounter}.json`)
  const policies = [options.policy ?? FAKE_WORLD_POLICY].flat()
  const args = [
    KEEL,
    'run',
    ...policies.flatMap((p) => ['--policy', p]),
    '--agent',
    options.agent ?? 'test-agent',
    '--upstream-dns',
    `${options.world.dnsAddress}:${options.world.dnsPort}`,
    '--user',
    'nobody',
    '--report',
    reportPath,
    ...(options.flags ?? []),
    '--',
    ...options.command,
  ]
  const started = performance.now()
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: options.dir,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    options.onSpawn?.(child.pid!)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`keel run did not finish in ${options.timeoutMs ?? 30_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`))
    }, options.timeoutMs ?? 30_000)
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      let report: ReportRow[] = []
      // keel opens the report before the agent starts and writes it at the end: a killed
      // keel leaves it empty.
      try {
        if (existsSync(reportPath)) report = (JSON.parse(readFileSync(reportPath, 'utf8')) as { destinations: ReportRow[] }).destinations
      } catch {
        report = []
      }
      resolvePromise({ code, signal, stdout, stderr, durationMs: performance.now() - started, report })
    })
  })
}

/** Report rows for a name or address. */
export function rowsFor(report: readonly ReportRow[], nameOrAddress: string): ReportRow[] {
  return report.filter((r) => r.name === nameOrAddress || r.address === nameOrAddress)
}

/** keel's sandbox namespaces that exist right now. */
export function keelNamespaces(): string[] {
  try {
    return readdirSync('/run/netns').filter((n) => /^keel-[0-9a-f]{10}$/.test(n))
  } catch {
    return []
  }
}

/** Parses the `name ms rc` lines the timing agent prints. */
export function parseTimings(stdout: string): Map<string, { ms: number; rc: number }> {
  const out = new Map<string, { ms: number; rc: number }>()
  for (const line of stdout.split('\n')) {
    const m = /^ATTEMPT (\S+) (\d+) (-?\d+)$/.exec(line.trim())
    if (m) out.set(m[1]!, { ms: Number(m[2]), rc: Number(m[3]) })
  }
  return out
}

/** A shell agent that runs each `name: command` and prints `ATTEMPT name ms rc`. */
export function timingAgent(attempts: Record<string, string>): string[] {
  const lines = Object.entries(attempts).map(
    ([name, cmd]) =>
      `s=$(date +%s%N); ( ${cmd} ) >/dev/null 2>&1; rc=$?; e=$(date +%s%N); echo "ATTEMPT ${name} $(( (e - s) / 1000000 )) $rc"`,
  )
  return ['sh', '-c', lines.join('\n')]
}
