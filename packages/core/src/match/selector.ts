/**
 * Label selectors (Kubernetes semantics) and a per-agent cache of their results, so
 * a decision tests a selector with one array read instead of walking labels.
 */
import type { AgentIdentity } from '../types.js'
import type { LabelSelector } from '../policy/model.js'

const hasOwn = (labels: Readonly<Record<string, string>>, key: string) => Object.prototype.hasOwnProperty.call(labels, key)

/** Every matchLabels pair and every expression must hold; an empty selector selects everyone. */
export function selectorMatches(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const key of Object.keys(selector.matchLabels)) {
    if (!hasOwn(labels, key) || labels[key] !== selector.matchLabels[key]) return false
  }
  for (const e of selector.matchExpressions) {
    const present = hasOwn(labels, e.key)
    switch (e.operator) {
      case 'In':
        if (!present || !e.values.includes(labels[e.key]!)) return false
        break
      case 'NotIn':
        // Kubernetes: NotIn also selects objects that lack the key.
        if (present && e.values.includes(labels[e.key]!)) return false
        break
      case 'Exists':
        if (!present) return false
        break
      case 'DoesNotExist':
        if (present) return false
        break
      default: {
        const exhaustive: never = e.operator
        return exhaustive
      }
    }
  }
  return true
}

/** Canonical text of a selector, so identical selectors share one cache slot. */
export function selectorKey(selector: LabelSelector): string {
  const labels = Object.keys(selector.matchLabels)
    .sort()
    .map((k) => [k, selector.matchLabels[k]])
  const expressions = selector.matchExpressions
    .map((e) => [e.key, e.operator, [...e.values].sort()])
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))
  return JSON.stringify([labels, expressions])
}

function labelsKey(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort()
  let key = ''
  for (const k of keys) key += `${k}\u0000${labels[k]}\u0001`
  return key
}

/** Bounds memory when callers invent many ad-hoc agents; the cache simply starts over. */
const MAX_CACHED_LABEL_SETS = 4096

/**
 * Results of every distinct selector for an agent's labels, cached first by the
 * identity object (callers keep one per sandbox) and then by the label set.
 */
export class SelectorCache {
  private readonly byObject = new WeakMap<object, Uint8Array>()
  private byLabels = new Map<string, Uint8Array>()

  constructor(private readonly selectors: readonly LabelSelector[]) {}

  /** `result[i] === 1` when selector i selects this agent. Precondition: `agent.labels` is an object. */
  resultsFor(agent: AgentIdentity): Uint8Array {
    const cached = this.byObject.get(agent)
    if (cached) return cached
    const key = labelsKey(agent.labels)
    let results = this.byLabels.get(key)
    if (!results) {
      results = new Uint8Array(this.selectors.length)
      this.selectors.forEach((s, i) => (results![i] = selectorMatches(s, agent.labels) ? 1 : 0))
      if (this.byLabels.size >= MAX_CACHED_LABEL_SETS) this.byLabels = new Map()
      this.byLabels.set(key, results)
    }
    // Only frozen identities are cached by object: a caller could mutate the labels of any other.
    if (Object.isFrozen(agent) && Object.isFrozen(agent.labels)) this.byObject.set(agent, results)
    return results
  }
}
