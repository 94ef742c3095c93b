/**
 * Merges the fragments of every document of every file into one Policy, and runs
 * the checks that need all of them: unique names (reported with both locations),
 * deny-policy targets that exist, and settings that must agree across files.
 */
import type { PolicyIssue } from '../errors.js'
import type { DefaultPolicy, DenyPolicy, Policy, PolicyAgent, PolicyRoute, SourceLocation } from './model.js'
import type { Located, PolicyFragment } from './parse-document.js'

const where = (at: SourceLocation) => `${at.file}:${at.line}:${at.column}`

function issueAt(at: SourceLocation, path: string, message: string, value?: unknown): PolicyIssue {
  const issue: PolicyIssue = { file: at.file, line: at.line, column: at.column, path, message: path === '' ? message : `${path}: ${message}` }
  if (value !== undefined) issue.value = value
  return issue
}

function checkUnique<T extends { name: string; source: SourceLocation }>(
  items: readonly T[],
  what: string,
  paths: ReadonlyMap<object, string>,
  issues: PolicyIssue[],
): void {
  const seen = new Map<string, SourceLocation>()
  for (const item of items) {
    const first = seen.get(item.name)
    if (first) {
      issues.push(issueAt(item.source, paths.get(item) ?? '', `duplicate ${what} name "${item.name}" (first defined at ${where(first)}); ${what} names must be unique across all policy files`, item.name))
    } else {
      seen.set(item.name, item.source)
    }
  }
}

/** One setting written in several documents must say the same thing everywhere. */
function agreed<T>(values: readonly Located<T>[], path: string, issues: PolicyIssue[]): T | undefined {
  const first = values[0]
  for (const other of values.slice(1)) {
    if (first && other.value !== first.value) {
      issues.push(issueAt(other.at, path, `${String(other.value)} conflicts with ${String(first.value)} set at ${where(first.at)}; merged policy files must agree`, other.value))
    }
  }
  return first?.value
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    // Typed arrays with elements cannot be frozen; their contents are never handed out for writing.
    if (ArrayBuffer.isView(value)) return value
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

export function mergeFragments(fragments: readonly PolicyFragment[], issues: PolicyIssue[]): Policy {
  const agents: PolicyAgent[] = fragments.flatMap((f) => f.agents)
  const routes: PolicyRoute[] = fragments.flatMap((f) => f.routes)
  const denyEntries = fragments.flatMap((f) => f.denyPolicies)
  const denyPolicies: DenyPolicy[] = denyEntries.map((d) => d.policy)
  const paths = new Map(fragments.flatMap((f) => [...f.namePaths]))
  checkUnique(agents, 'agent', paths, issues)
  checkUnique(routes, 'route', paths, issues)
  checkUnique(denyPolicies, 'deny policy', paths, issues)

  const routeNames = new Set(routes.map((r) => r.name))
  for (const { policy, targetAt, targetPath } of denyEntries) {
    if (!routeNames.has(policy.targetRef.route)) {
      const known = routes.length > 0 ? `; defined routes: ${[...routeNames].join(', ')}` : '; no routes are defined'
      issues.push(issueAt(targetAt, targetPath, `deny policy "${policy.name}" targets route "${policy.targetRef.route}", which does not exist${known}`, policy.targetRef.route))
    }
  }

  const defaultPolicy: DefaultPolicy =
    agreed(fragments.flatMap((f) => (f.defaultPolicy ? [f.defaultPolicy] : [])), 'spec.defaultPolicy', issues) ?? 'deny-all'
  const unsafeAllowMetadata =
    agreed(fragments.flatMap((f) => (f.unsafeAllowMetadata ? [f.unsafeAllowMetadata] : [])), 'spec.guardRails.unsafeAllowMetadata', issues) ?? false
  const seenRanges = new Set<string>()
  const unsafeAllowResolvedRanges = fragments
    .flatMap((f) => f.unsafeAllowResolvedRanges)
    .filter((c) => !seenRanges.has(c.text) && seenRanges.add(c.text))

  const names = [...new Set(fragments.flatMap((f) => (f.name === undefined ? [] : [f.name])))]
  return deepFreeze({
    name: names.join('+'),
    defaultPolicy,
    agents,
    routes,
    denyPolicies,
    guardRails: { unsafeAllowMetadata, unsafeAllowResolvedRanges },
  })
}
