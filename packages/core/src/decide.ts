/**
 * The compiled policy: decisions for connections, DNS names and resolved addresses.
 *
 * Precedence, when several (route, match) pairs match one destination for one
 * agent, port and protocol:
 *   1. any match on a route a deny policy targets     → deny  `deny_policy`
 *   2. else any match on a live route (not expired)    → allow `allowed`
 *   3. else a match on an expired exception             → deny  `exception_expired`
 *   4. else the default: deny-all → deny `policy_default_deny`; allow-all → allow `allowed`
 * Within one step the first match in file order (files in the order given, then
 * routes, rules, matches) is the one the decision names.
 *
 * Guard rails come before all of that: a link-local / metadata address is denied
 * `guard_metadata` whatever the routes say, unless `spec.guardRails.unsafeAllowMetadata`.
 *
 * Every method is pure and synchronous and never throws: bad input is a deny.
 */
import { compileMatcher, E_EXPIRES, E_FLAGS, E_PORTS, E_SELECTOR, ENTRY_FIELDS, FLAG_DENIED, PROTOCOL_CODE, type CompiledMatcher } from './compile.js'
import {
  allowDecision,
  defaultDecision,
  denyPolicyDecision,
  dnsNameDenied,
  expiredDecision,
  guardMetadata,
  guardPrivate,
  internalError,
  invalidDestination,
} from './decisions.js'
import { CidrTrie } from './match/cidr-trie.js'
import { portInRanges } from './match/ports.js'
import { SelectorCache } from './match/selector.js'
import { normalizeHostname } from './net/hostname.js'
import { formatIp, parseIpInto } from './net/ip.js'
import { classifyAddress, isMetadataAddress } from './net/special-ranges.js'
import type { DefaultPolicy, Policy } from './policy/model.js'
import type { AgentIdentity, CheckResolvedArgs, DecideArgs, DecideNameArgs, Decision, Protocol } from './types.js'

/** A policy compiled for fast decisions. Build one with loadPolicy. */
export interface CompiledPolicy {
  /** metadata.name (names of several documents joined with "+"). */
  readonly name: string
  readonly defaultPolicy: DefaultPolicy
  /** The normalized, merged, frozen domain model. */
  readonly model: Policy
  /**
   * The agent listed under that name, with extraLabels added (on a conflicting key
   * the policy's label wins), or an ad-hoc identity with only extraLabels when the
   * policy does not list the name. The result is frozen; reuse it: decisions on the
   * same frozen object skip selector evaluation.
   */
  agent(name: string, extraLabels?: Record<string, string>): AgentIdentity
  /** May this agent connect to this hostname or literal IP, port and protocol? */
  decide(args: DecideArgs): Decision
  /**
   * May this agent resolve this name at all, i.e. is there any port and protocol at
   * which decide() would allow it? Denies with `dns_name_denied`, or with
   * `deny_policy` / `exception_expired` when that is why every port is denied.
   */
  decideName(args: DecideNameArgs): Decision
  /**
   * After keel resolved an allowed hostname upstream: may it dial this address?
   * Returns the hostname's decision when the address passes the guard rails.
   */
  checkResolved(args: CheckResolvedArgs): Decision
}

const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP']

function commonArgsProblem(args: { agent?: unknown; now?: unknown } | null | undefined): Decision | undefined {
  if (args === null || typeof args !== 'object') return internalError('the arguments must be an object')
  const agent = args.agent as AgentIdentity | null | undefined
  if (agent === null || typeof agent !== 'object' || agent.labels === null || typeof agent.labels !== 'object') {
    return internalError('agent must be { name, labels }')
  }
  if (typeof args.now !== 'number' || !Number.isFinite(args.now)) return internalError('now must be ms since the epoch')
  return undefined
}

function portProtocolProblem(port: unknown, protocol: unknown): Decision | undefined {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    return invalidDestination(`port ${String(port)} is not an integer from 1 to 65535`)
  }
  if (protocol !== 'TCP' && protocol !== 'UDP') return invalidDestination(`protocol ${String(protocol)} is not TCP or UDP`)
  return undefined
}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err))

/** Selector results when the policy has no selectors: every entry selects everyone. */
const NO_SELECTORS = new Uint8Array(0)
const NONE = -1

export class PolicyEngine implements CompiledPolicy {
  readonly name: string
  readonly defaultPolicy: DefaultPolicy
  private readonly matcher: CompiledMatcher
  private readonly selectorResults: SelectorCache
  private readonly listedAgents = new Map<string, AgentIdentity>()
  private readonly resolvedRanges = new CidrTrie()

  // Scratch space for the synchronous hot path, so a decision allocates little more
  // than its result. No caller code runs while it is in use (selector results,
  // which read the caller's label object, are fetched before).
  /** Candidate entry ids of the current lookup; each entry appears at most once. */
  private readonly ids: Int32Array
  private readonly ip16 = new Uint8Array(16)
  private readonly ip4 = new Uint8Array(4)
  /** Entry id of the first match (file order) of each precedence step, set by findHits; NONE when none. */
  private hitDeny = NONE
  private hitAllow = NONE
  private hitExpired = NONE

  constructor(readonly model: Policy) {
    this.name = model.name
    this.defaultPolicy = model.defaultPolicy
    this.matcher = compileMatcher(model)
    this.ids = new Int32Array(this.matcher.entries.length)
    this.selectorResults = new SelectorCache(this.matcher.selectors)
    for (const a of model.agents) this.listedAgents.set(a.name, Object.freeze({ name: a.name, labels: a.labels }))
    model.guardRails.unsafeAllowResolvedRanges.forEach((c, i) => this.resolvedRanges.insert(c, i))
  }

  agent(name: string, extraLabels?: Record<string, string>): AgentIdentity {
    const listed = this.listedAgents.get(name)
    if (extraLabels === undefined || Object.keys(extraLabels).length === 0) {
      return listed ?? Object.freeze({ name, labels: Object.freeze({}) })
    }
    return Object.freeze({ name, labels: Object.freeze({ ...extraLabels, ...listed?.labels }) })
  }

  decide(args: DecideArgs): Decision {
    try {
      return this.decideUnchecked(args)
    } catch (err) {
      return internalError(errorText(err))
    }
  }

  private decideUnchecked(args: DecideArgs): Decision {
    const problem = commonArgsProblem(args) ?? portProtocolProblem(args.port, args.protocol)
    if (problem) return problem
    const { agent, hostname, address, port, protocol, now } = args
    if ((hostname === undefined) === (address === undefined)) {
      return invalidDestination('set exactly one of hostname or address')
    }
    const selected = this.selectorsFor(agent)
    if (hostname !== undefined) {
      const name = normalizeHostname(hostname)
      if (name !== undefined) {
        const count = this.matcher.hostnames.collect(name, this.ids, 0)
        this.findHits(this.ids, count, selected, port, PROTOCOL_CODE[protocol], now)
        return this.conclude(false)
      }
      // An IP literal where a name was expected (e.g. a Host header): CIDR rules only.
      const bytes = this.parseAddress(hostname)
      if (bytes) return this.decideAddress(bytes, selected, port, protocol, now)
      return invalidDestination(`${JSON.stringify(hostname)} is not a valid hostname`)
    }
    const bytes = this.parseAddress(address)
    if (!bytes) return invalidDestination(`${JSON.stringify(address)} is not an IPv4 or IPv6 address`)
    return this.decideAddress(bytes, selected, port, protocol, now)
  }

  private selectorsFor(agent: AgentIdentity): Uint8Array {
    return this.matcher.selectors.length === 0 ? NO_SELECTORS : this.selectorResults.resultsFor(agent)
  }

  /** Parses into scratch: the result is only valid until the next call. */
  private parseAddress(text: unknown): Uint8Array | undefined {
    const length = typeof text === 'string' ? parseIpInto(text, this.ip16) : 0
    if (length === 0) return undefined
    if (length === 16) return this.ip16
    this.ip4[0] = this.ip16[0]!
    this.ip4[1] = this.ip16[1]!
    this.ip4[2] = this.ip16[2]!
    this.ip4[3] = this.ip16[3]!
    return this.ip4
  }

  private decideAddress(bytes: Uint8Array, selected: Uint8Array, port: number, protocol: Protocol, now: number): Decision {
    if (!this.model.guardRails.unsafeAllowMetadata && isMetadataAddress(bytes)) {
      return guardMetadata(formatIp(bytes), classifyAddress(bytes) ?? { kind: 'metadata', label: 'link-local / cloud metadata' })
    }
    const count = this.matcher.cidrs.collect(bytes, this.ids, 0)
    this.findHits(this.ids, count, selected, port, PROTOCOL_CODE[protocol], now)
    return this.conclude(true)
  }

  /**
   * Filters candidate entries by protocol, ports and selector, and keeps the first
   * (lowest id = first in file order) of each precedence step in hitDeny / hitAllow / hitExpired.
   */
  private findHits(ids: Int32Array, count: number, selected: Uint8Array, port: number, protocol: number, now: number): void {
    const data = this.matcher.entryData
    const ranges = this.matcher.portRanges
    let deny = NONE
    let allow = NONE
    let expired = NONE
    for (let i = 0; i < count; i++) {
      const id = ids[i]!
      const at = id * ENTRY_FIELDS
      const flags = data[at + E_FLAGS]!
      if ((flags & 1) !== protocol) continue
      const offset = data[at + E_PORTS]!
      if (offset >= 0 && !portInRanges(ranges, offset, flags >>> 2, port)) continue
      const selector = data[at + E_SELECTOR]!
      if (selector >= 0 && selected[selector] !== 1) continue
      if ((flags & FLAG_DENIED) !== 0) {
        if (deny === NONE || id < deny) deny = id
      } else if (now >= data[at + E_EXPIRES]!) {
        if (expired === NONE || id < expired) expired = id
      } else if (allow === NONE || id < allow) {
        allow = id
      }
    }
    this.hitDeny = deny
    this.hitAllow = allow
    this.hitExpired = expired
  }

  /** Applies the precedence to the last findHits. */
  private conclude(literalIp: boolean): Decision {
    const entries = this.matcher.entries
    if (this.hitDeny !== NONE) return denyPolicyDecision(entries[this.hitDeny]!)
    if (this.hitAllow !== NONE) return allowDecision(this.matcher.allowTemplates[this.hitAllow]!)
    if (this.hitExpired !== NONE) return expiredDecision(entries[this.hitExpired]!)
    return defaultDecision(this.defaultPolicy, literalIp)
  }

  decideName(args: DecideNameArgs): Decision {
    try {
      const problem = commonArgsProblem(args)
      if (problem) return problem
      const name = normalizeHostname(args.hostname)
      if (name === undefined) {
        const d = dnsNameDenied(String(args.hostname))
        d.detail = `${JSON.stringify(args.hostname)} is not a valid hostname, so it is not resolved`
        return d
      }
      const selected = this.selectorsFor(args.agent)
      const ids = new Int32Array(this.matcher.entries.length)
      const count = this.matcher.hostnames.collect(name, ids, 0)
      return this.nameDecision(name, ids, count, selected, args.now)
    } catch (err) {
      return internalError(errorText(err))
    }
  }

  /**
   * Runs decide()'s precedence on every distinct stretch of ports: the candidates'
   * range boundaries cut 1-65535 into pieces that all decide alike, so one port per
   * piece answers "is any port allowed?" exactly, in a handful of evaluations.
   */
  private nameDecision(name: string, ids: Int32Array, count: number, selected: Uint8Array, now: number): Decision {
    const m = this.matcher
    const data = m.entryData
    let allow = NONE
    let allowedByDefault = false
    let denyPolicy = NONE
    let expired = NONE
    const first = (a: number, b: number) => (a === NONE || b < a ? b : a)
    for (const protocol of PROTOCOLS) {
      const code = PROTOCOL_CODE[protocol]
      const cuts = new Set<number>([1])
      for (let i = 0; i < count; i++) {
        const at = ids[i]! * ENTRY_FIELDS
        const flags = data[at + E_FLAGS]!
        const offset = data[at + E_PORTS]!
        if ((flags & 1) !== code || offset < 0) continue
        for (let k = 0; k < flags >>> 2; k++) {
          cuts.add(m.portRanges[offset + k * 2]!)
          const end = m.portRanges[offset + k * 2 + 1]!
          if (end < 65535) cuts.add(end + 1)
        }
      }
      for (const port of cuts) {
        this.findHits(ids, count, selected, port, code, now)
        if (this.hitDeny !== NONE) denyPolicy = first(denyPolicy, this.hitDeny)
        else if (this.hitAllow !== NONE) allow = first(allow, this.hitAllow)
        else if (this.hitExpired !== NONE) expired = first(expired, this.hitExpired)
        else if (this.defaultPolicy === 'allow-all') allowedByDefault = true
      }
    }
    if (allow !== NONE) return allowDecision(m.allowTemplates[allow]!)
    if (allowedByDefault) return defaultDecision('allow-all', false)
    if (denyPolicy !== NONE) return denyPolicyDecision(m.entries[denyPolicy]!)
    if (expired !== NONE) return expiredDecision(m.entries[expired]!)
    return dnsNameDenied(name)
  }

  checkResolved(args: CheckResolvedArgs): Decision {
    try {
      const problem = commonArgsProblem(args)
      if (problem) return problem
      const { agent, hostname, address, port, protocol, now } = args
      const named = this.decideUnchecked({ agent, hostname, port, protocol, now })
      if (named.verdict === 'deny') return named
      const selected = this.selectorsFor(agent)
      const bytes = this.parseAddress(address)
      if (!bytes) return invalidDestination(`${JSON.stringify(address)} is not an IPv4 or IPv6 address`)
      const guard = classifyAddress(bytes)
      if (guard === undefined) return named
      const text = formatIp(bytes)
      if (guard.kind === 'metadata') return this.model.guardRails.unsafeAllowMetadata ? named : guardMetadata(text, guard)
      // A private address is fine when a CIDR route (not the default) allows it for this agent/port/protocol…
      const count = this.matcher.cidrs.collect(bytes, this.ids, 0)
      this.findHits(this.ids, count, selected, port, PROTOCOL_CODE[protocol], now)
      if (this.hitDeny === NONE && this.hitAllow !== NONE) return named
      // …or when the policy names the range in its opt-in.
      if (this.resolvedRanges.collect(bytes, new Int32Array(this.model.guardRails.unsafeAllowResolvedRanges.length), 0) > 0) return named
      return guardPrivate(named, normalizeHostname(hostname) ?? String(hostname), text, guard)
    } catch (err) {
      return internalError(errorText(err))
    }
  }
}
