/**
 * Compiles a Policy once into lookup structures whose cost does not grow with the
 * number of routes: a HostnameIndex for names and a CidrTrie for addresses, both
 * yielding a few entry ids. An entry is one (route, rule, match, pattern or CIDR).
 * What a decision filters on (protocol, ports, selector, deny policy, expiry) is
 * packed into one 32-byte record per entry in a Float64Array, so filtering a
 * candidate costs one cache line instead of a walk through objects; the allow
 * decision each entry makes is prebuilt. Entry ids follow file order, so "first in
 * file order" is "lowest id".
 */
import { CidrTrie } from './match/cidr-trie.js'
import { HostnameIndex } from './match/hostname-index.js'
import { flattenPorts } from './match/ports.js'
import { selectorKey } from './match/selector.js'
import type { DenyPolicy, LabelSelector, Policy, PolicyRoute } from './policy/model.js'
import { allowTemplate } from './decisions.js'
import type { Decision, Protocol, Via } from './types.js'

/** A route with what decisions need precomputed. */
export interface CompiledRoute {
  readonly model: PolicyRoute
  /** The first deny policy (file order) that targets this route. */
  readonly denyPolicy: DenyPolicy | undefined
}

/** The cold half of an entry: what a decision names once the entry has won. */
export interface MatchEntry {
  readonly route: CompiledRoute
  /** e.g. `rules[0].matches[1]`. */
  readonly rule: string
  /** CIDR entries are always dialed directly; hostname entries follow the route. */
  readonly via: Via
  /** The pattern or CIDR this entry was indexed under, for details. */
  readonly matched: string
  /** Deny detail strings, built on first use by decisions.ts. */
  details: { denyPolicy: string; expired: string } | undefined
}

export const PROTOCOL_CODE: Readonly<Record<Protocol, number>> = { TCP: 0, UDP: 1 }

export interface CompiledMatcher {
  readonly hostnames: HostnameIndex
  readonly cidrs: CidrTrie
  readonly selectors: readonly LabelSelector[]
  /** Cold entry data, by entry id. */
  readonly entries: readonly MatchEntry[]
  /**
   * The allow decision each entry makes, by entry id, built at compile time and
   * copied per decision: one compact object to read on the hot path.
   */
  readonly allowTemplates: readonly Decision[]
  /** Hot entry data: ENTRY_FIELDS numbers per entry id (see the E_* field offsets). */
  readonly entryData: Float64Array
  /** Inclusive [start, end] port pairs that entries point into. */
  readonly portRanges: Uint16Array
}

export const ENTRY_FIELDS = 4
/** protocol code (bit 0) | targeted by a deny policy (bit 1) | port range count << 2 */
export const E_FLAGS = 0
/** Offset of the entry's ranges in portRanges; -1 means every port. */
export const E_PORTS = 1
/** Index into selectors; -1 selects every agent. */
export const E_SELECTOR = 2
/** The route's `expires` in ms since the epoch; Infinity when it is not an exception. */
export const E_EXPIRES = 3
export const FLAG_DENIED = 2

export function compileMatcher(policy: Policy): CompiledMatcher {
  const hostnames = new HostnameIndex()
  const cidrs = new CidrTrie()
  const selectors: LabelSelector[] = []
  const selectorIds = new Map<string, number>()
  const selectorId = (selector: LabelSelector | undefined): number => {
    if (selector === undefined) return -1
    const key = selectorKey(selector)
    let id = selectorIds.get(key)
    if (id === undefined) {
      id = selectors.length
      selectors.push(selector)
      selectorIds.set(key, id)
    }
    return id
  }

  const firstDenyPolicy = new Map<string, DenyPolicy>()
  for (const d of policy.denyPolicies) if (!firstDenyPolicy.has(d.targetRef.route)) firstDenyPolicy.set(d.targetRef.route, d)

  const entries: MatchEntry[] = []
  const allowTemplates: Decision[] = []
  const data: number[] = []
  const ports: number[] = []

  for (const model of policy.routes) {
    const route: CompiledRoute = { model, denyPolicy: firstDenyPolicy.get(model.name) }
    const denied = route.denyPolicy === undefined ? 0 : FLAG_DENIED
    model.rules.forEach((rule, r) => {
      rule.matches.forEach((match, m) => {
        const offset = match.ports.length === 0 ? -1 : ports.length
        ports.push(...flattenPorts(match.ports))
        const sel = selectorId(match.sourceAgents)
        const add = (via: Via, matched: string): number => {
          const id = entries.length
          const entry: MatchEntry = { route, rule: `rules[${r}].matches[${m}]`, via, matched, details: undefined }
          entries.push(entry)
          allowTemplates.push(allowTemplate(entry))
          data.push(PROTOCOL_CODE[match.protocol] | denied | (match.ports.length << 2), offset, sel, model.expires ?? Infinity)
          return id
        }
        for (const pattern of match.destinationHostnames) hostnames.add(pattern, add(model.via, pattern.text))
        for (const cidr of match.destinationCIDRs) cidrs.insert(cidr, add('direct', cidr.text))
      })
    })
  }
  // Build the tables now, so that the first decision costs what every other one does.
  hostnames.seal()
  cidrs.seal()
  return {
    hostnames,
    cidrs,
    selectors,
    entries,
    allowTemplates,
    entryData: Float64Array.from(data),
    portRanges: Uint16Array.from(ports),
  }
}
