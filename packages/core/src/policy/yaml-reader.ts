/**
 * A small typed reader over the `yaml` AST that records every problem as a
 * PolicyIssue with file, line and column, instead of stopping at the first one.
 * The policy parser is written against this reader; it never sees raw yaml nodes'
 * positions itself.
 */
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node, type Scalar, type YAMLMap } from 'yaml'
import type { PolicyIssue } from '../errors.js'
import type { SourceLocation } from './model.js'
import { didYouMean } from './suggest.js'

/** A key/value pair of a mapping, with the path of the value. */
export interface Field {
  readonly key: Scalar
  readonly value: Node | null
  readonly path: string
}

type AnyNode = Node | null | undefined

export function joinPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`
  return parent === '' ? key : `${parent}.${key}`
}

/** A short, quoted rendering of a value for messages. */
export function describe(node: AnyNode): string {
  if (node === null || node === undefined) return 'nothing'
  if (isMap(node)) return 'a mapping'
  if (isSeq(node)) return 'a list'
  if (isScalar(node)) {
    if (node.value === null) return 'nothing (null)'
    const text = typeof node.value === 'string' ? JSON.stringify(node.value) : String(node.value)
    return text.length > 80 ? `${text.slice(0, 77)}...` : text
  }
  return 'an unsupported value'
}

/** Like the yaml package's own maxAliasCount: nested aliases can make a tiny file enormous. */
const MAX_ALIASES = 100

/** Thrown (after recording its issue) to stop reading a document that uses too many aliases. */
export class AliasLimitExceeded extends Error {}

export class YamlReader {
  private aliases = 0

  constructor(
    readonly file: string,
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
    private readonly issues: PolicyIssue[],
  ) {}

  /** 1-based position of a node (or of the document start). */
  location(node: AnyNode): SourceLocation {
    const offset = node?.range?.[0] ?? this.doc.range[0]
    const { line, col } = this.lines.linePos(offset)
    return { file: this.file, line, column: col }
  }

  issue(at: AnyNode, path: string, message: string, value?: unknown): void {
    const { file, line, column } = this.location(at)
    const issue: PolicyIssue = { file, line, column, path, message: path === '' ? message : `${path}: ${message}` }
    if (value !== undefined) issue.value = value
    this.issues.push(issue)
  }

  /** Where to point for a field's problem: the value when it was written, else the key. */
  private at(field: Field): Node {
    const v = field.value
    return v === null || (isScalar(v) && v.value === null && v.source === '') ? field.key : v
  }

  private deref(node: AnyNode): Node | null {
    if (node === null || node === undefined) return null
    if (!isAlias(node)) return node
    if (++this.aliases > MAX_ALIASES) {
      this.issue(node, '', `more than ${MAX_ALIASES} YAML aliases (*name) in one document; write the values out instead`)
      throw new AliasLimitExceeded()
    }
    return (node.resolve(this.doc) as Node | undefined) ?? null
  }

  /** The mapping at `node`, or an issue naming what was found instead. */
  map(node: AnyNode, path: string, what: string, at: AnyNode = node): YAMLMap | undefined {
    const resolved = this.deref(node)
    if (isMap(resolved)) return resolved
    this.issue(isScalar(resolved) && resolved.value === null ? at : (resolved ?? at), path, `${what} must be a mapping, got ${describe(resolved)}`)
    return undefined
  }

  /**
   * The fields of a mapping. Unknown keys are issues (with a did-you-mean hint):
   * a typo must never silently widen or narrow a policy.
   */
  fields(map: YAMLMap, path: string, what: string, allowed: readonly string[]): Map<string, Field> {
    const out = new Map<string, Field>()
    for (const pair of map.items) {
      const key = this.deref(pair.key as AnyNode)
      if (!isScalar(key) || typeof key.value !== 'string') {
        this.issue(key ?? map, path, `keys of ${what} must be strings, got ${describe(key)}`)
        continue
      }
      const name = key.value
      if (!allowed.includes(name)) {
        this.issue(
          key,
          joinPath(path, name),
          `unknown field "${name}" in ${what}${didYouMean(name, allowed)} (valid fields: ${allowed.join(', ')})`,
          name,
        )
        continue
      }
      out.set(name, { key, value: this.deref(pair.value as AnyNode), path: joinPath(path, name) })
    }
    return out
  }

  /** Reports a missing required field at its parent mapping. */
  required(fields: Map<string, Field>, name: string, parent: Node, path: string, what: string): Field | undefined {
    const field = fields.get(name)
    if (field === undefined) this.issue(parent, path, `${what} is missing required field "${name}"`)
    return field
  }

  /** The items of a list, or an issue. With `emptyHint`, an empty list is an issue too. */
  list(field: Field, what: string, emptyHint?: string): (Node | null)[] | undefined {
    const v = field.value
    if (!isSeq(v)) {
      this.issue(this.at(field), field.path, `${what} must be a list, got ${describe(v)}`, scalarValue(v))
      return undefined
    }
    if (emptyHint !== undefined && v.items.length === 0) {
      this.issue(v, field.path, `${what} is an empty list; ${emptyHint}`)
      return undefined
    }
    return v.items.map((item) => this.deref(item as AnyNode))
  }

  /** A non-empty string. */
  string(field: Field, what: string): string | undefined {
    const v = field.value
    if (isScalar(v) && typeof v.value === 'string' && v.value.length > 0) return v.value
    const hint = isScalar(v) && (typeof v.value === 'number' || typeof v.value === 'boolean') ? `; quote it: "${String(v.value)}"` : ''
    this.issue(this.at(field), field.path, `${what} must be a non-empty string, got ${describe(v)}${hint}`, scalarValue(v))
    return undefined
  }

  /** A string list item (same rules as `string`). */
  stringItem(node: Node | null, path: string, what: string): string | undefined {
    if (isScalar(node) && typeof node.value === 'string' && node.value.length > 0) return node.value
    this.issue(node, path, `${what} must be a non-empty string, got ${describe(node)}`, scalarValue(node))
    return undefined
  }

  /** An integer in [min, max]. */
  integer(field: Field, what: string, min: number, max: number): number | undefined {
    const v = field.value
    if (isScalar(v) && typeof v.value === 'number' && Number.isInteger(v.value) && v.value >= min && v.value <= max) {
      return v.value
    }
    this.issue(this.at(field), field.path, `${what} ${describe(v)} is not valid; use an integer from ${min} to ${max}`, scalarValue(v))
    return undefined
  }

  boolean(field: Field, what: string): boolean | undefined {
    const v = field.value
    if (isScalar(v) && typeof v.value === 'boolean') return v.value
    this.issue(this.at(field), field.path, `${what} must be true or false, got ${describe(v)}`, scalarValue(v))
    return undefined
  }

  /** One of a fixed set of strings (exact spelling; the hint offers the closest). */
  oneOf<T extends string>(field: Field, what: string, values: readonly T[]): T | undefined {
    const v = field.value
    if (isScalar(v) && typeof v.value === 'string' && (values as readonly string[]).includes(v.value)) return v.value as T
    const hint = isScalar(v) && typeof v.value === 'string' ? didYouMean(v.value, values) : ''
    this.issue(this.at(field), field.path, `${what} ${describe(v)} is not valid; use one of: ${values.join(', ')}${hint}`, scalarValue(v))
    return undefined
  }

  /** A mapping of string keys to string values (labels, matchLabels). */
  stringMap(field: Field, what: string, checkKey: (k: string) => string | undefined, checkValue: (v: string) => string | undefined): Record<string, string> | undefined {
    const map = this.map(field.value, field.path, what, field.key)
    if (!map) return undefined
    const out: Record<string, string> = {}
    let ok = true
    for (const pair of map.items) {
      const key = this.deref(pair.key as AnyNode)
      const value = this.deref(pair.value as AnyNode)
      if (!isScalar(key) || typeof key.value !== 'string') {
        this.issue(key ?? map, field.path, `keys of ${what} must be strings, got ${describe(key)}`)
        ok = false
        continue
      }
      const path = joinPath(field.path, key.value)
      const keyProblem = checkKey(key.value)
      if (keyProblem !== undefined) {
        this.issue(key, path, `key "${key.value}" ${keyProblem}`, key.value)
        ok = false
      }
      if (!isScalar(value) || typeof value.value !== 'string') {
        const quote = isScalar(value) && value.value !== null && typeof value.value !== 'object' ? `; quote it: "${String(value.value)}"` : ''
        this.issue(value ?? key, path, `value must be a string, got ${describe(value)}${quote}`, scalarValue(value))
        ok = false
        continue
      }
      const valueProblem = checkValue(value.value)
      if (valueProblem !== undefined) {
        this.issue(value, path, `value "${value.value}" ${valueProblem}`, value.value)
        ok = false
        continue
      }
      out[key.value] = value.value
    }
    return ok ? out : undefined
  }
}

/** The plain JS value of a scalar node, for PolicyIssue.value. */
export function scalarValue(node: AnyNode): unknown {
  return isScalar(node) ? node.value : undefined
}
