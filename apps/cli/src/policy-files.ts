/** Reading policy files for the commands that take them (policy, run, export). */
import { readFile } from 'node:fs/promises'
import { isKeelError, KeelError, loadPolicy, type CompiledPolicy, type PolicyIssue, type PolicySource } from '@keel/core'
import { EXIT_USAGE } from './exit-codes.js'

/** A PolicyError from any copy of @keel/core: identified by code and shape, not instanceof. */
export function policyIssues(err: unknown): readonly PolicyIssue[] | undefined {
  if (!isKeelError(err) || err.code !== 'ERR_POLICY_INVALID') return undefined
  const issues = (err as { issues?: unknown }).issues
  return Array.isArray(issues) ? (issues as PolicyIssue[]) : undefined
}

export async function readPolicySources(files: readonly string[]): Promise<PolicySource[]> {
  return Promise.all(
    files.map(async (path) => {
      try {
        return { path, text: await readFile(path, 'utf8') }
      } catch (err) {
        const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message
        throw new KeelError('ERR_USAGE', `cannot read policy file ${path}: ${reason}`, { cause: err })
      }
    }),
  )
}

/** Loads the policy, or prints every issue as file:line:col: message and sets exit code 2. */
export async function loadPolicyOrReport(files: readonly string[]): Promise<CompiledPolicy | undefined> {
  const sources = await readPolicySources(files)
  try {
    return loadPolicy(sources)
  } catch (err) {
    const issues = policyIssues(err)
    if (!issues) throw err
    for (const i of issues) process.stderr.write(`${i.file}:${i.line}:${i.column}: ${i.message}\n`)
    process.exitCode = EXIT_USAGE
    return undefined
  }
}

/** `--label k=v` pairs into a label map. */
export function parseLabels(pairs: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {}
  for (const pair of pairs) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new KeelError('ERR_USAGE', `bad --label "${pair}": expected key=value, e.g. --label team=platform`)
    labels[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return labels
}

/** Repeatable option collector for commander. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value]
