/**
 * loadPolicy: YAML text → validated, normalized, merged, compiled policy. Pure: the
 * caller reads the files. Every problem in every file is collected and thrown at
 * once as a PolicyError, sorted by file (in the order given), line and column.
 */
import { LineCounter, parseAllDocuments, type YAMLError } from 'yaml'
import { KeelError, PolicyError, type PolicyIssue } from '../errors.js'
import { PolicyEngine, type CompiledPolicy } from '../decide.js'
import { mergeFragments } from './merge.js'
import { POLICY_KIND, SUPPORTED_API_VERSION } from './model.js'
import { isEmptyDocument, parseDocument, type PolicyFragment } from './parse-document.js'

export interface PolicySource {
  /** Shown in issues as `path:line:col`. */
  path: string
  text: string
}

function yamlIssue(file: string, lines: LineCounter, error: YAMLError): PolicyIssue {
  const { line, col } = lines.linePos(error.pos[0])
  const message =
    error.code === 'DUPLICATE_KEY'
      ? 'duplicate key: each field may appear only once in a mapping'
      : error.code === 'TAG_RESOLVE_FAILED'
        ? `${error.message}; policy files use plain YAML without custom tags`
        : `YAML syntax error: ${error.message}`
  return { file, line, column: col, path: '', message }
}

/**
 * Parses, validates, normalizes, merges and compiles policy sources. Several YAML
 * documents in one file, or several files, merge into one policy.
 * @throws PolicyError (code ERR_POLICY_INVALID) listing every issue found
 * @example
 * const policy = loadPolicy([{ path: 'keel.yaml', text }])
 * policy.decide({ agent: policy.agent('coder'), hostname: 'api.anthropic.com', port: 443, protocol: 'TCP', now: Date.now() })
 */
export function loadPolicy(sources: PolicySource[]): CompiledPolicy {
  if (!Array.isArray(sources) || sources.length === 0) {
    throw new KeelError('ERR_USAGE', 'loadPolicy needs at least one policy source')
  }
  const issues: PolicyIssue[] = []
  const fragments: PolicyFragment[] = []
  sources.forEach((source) => {
    const fileIssues: PolicyIssue[] = []
    const lines = new LineCounter()
    const docs = parseAllDocuments(source.text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, strict: true, version: '1.2' })
    let documents = 0
    for (const doc of docs) {
      const problems = [...doc.errors, ...doc.warnings]
      for (const e of problems) fileIssues.push(yamlIssue(source.path, lines, e))
      // Positions and meaning are unreliable in a document YAML could not parse.
      if (doc.errors.length > 0 || isEmptyDocument(doc)) continue
      documents++
      const fragment = parseDocument(source.path, doc, lines, fileIssues)
      if (fragment) fragments.push(fragment)
    }
    if (documents === 0 && fileIssues.length === 0) {
      fileIssues.push({
        file: source.path,
        line: 1,
        column: 1,
        path: '',
        message: `no policy document found; a policy starts with "apiVersion: ${SUPPORTED_API_VERSION}" and "kind: ${POLICY_KIND}"`,
      })
    }
    fileIssues.sort((a, b) => a.line - b.line || a.column - b.column)
    issues.push(...fileIssues)
  })
  const mergeIssues: PolicyIssue[] = []
  const model = mergeFragments(fragments, mergeIssues)
  if (issues.length + mergeIssues.length > 0) {
    const order = new Map(sources.map((s, i) => [s.path, i]))
    const all = [...issues, ...mergeIssues].sort(
      (a, b) => (order.get(a.file) ?? 0) - (order.get(b.file) ?? 0) || a.line - b.line || a.column - b.column,
    )
    throw new PolicyError(all)
  }
  return new PolicyEngine(model)
}
