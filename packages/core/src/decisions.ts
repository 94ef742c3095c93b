/**
 * Builds Decision values. One place for the wording of every detail, so
 * `keel policy explain`, 403 bodies and logs say the same thing. Details that
 * depend only on the matched entry are built once per entry and reused.
 */
import type { MatchEntry } from './compile.js'
import type { GuardClass } from './net/special-ranges.js'
import type { DefaultPolicy } from './policy/model.js'
import { Reason } from './reasons.js'
import type { Decision } from './types.js'

const routeText = (e: MatchEntry) => `route "${e.route.model.name}" ${e.rule} (${e.matched})`

/** The per-entry deny details, built on first use (denies by route are rare). */
function details(e: MatchEntry): NonNullable<MatchEntry['details']> {
  if (e.details !== undefined) return e.details
  const m = e.route.model
  const policy = e.route.denyPolicy
  e.details = {
    denyPolicy: policy ? `${routeText(e)} matches, but deny policy "${policy.name}" targets it: ${policy.denyResponse.message}` : '',
    expired: `${routeText(e)} is an exception that expired at ${m.expiresText} (owner: ${m.owner}); renew or remove it`,
  }
  return e.details
}

/** What every allow by this entry says, built once at compile time (see allowDecision). */
export function allowTemplate(e: MatchEntry): Decision {
  const m = e.route.model
  const t: Decision = { verdict: 'allow', reason: Reason.ALLOWED, route: m.name, rule: e.rule, via: e.via, detail: `allowed by ${routeText(e)}` }
  if (m.registry !== undefined) t.registry = m.registry
  return Object.freeze(t)
}

/**
 * A fresh copy of an entry's allow template, in one of two fixed literal shapes
 * so the allocation stays cheap. Callers may change the copy freely.
 */
export function allowDecision(t: Decision): Decision {
  return t.registry === undefined
    ? { verdict: 'allow', reason: Reason.ALLOWED, route: t.route!, rule: t.rule!, via: t.via!, detail: t.detail! }
    : { verdict: 'allow', reason: Reason.ALLOWED, route: t.route!, rule: t.rule!, via: t.via!, registry: t.registry, detail: t.detail! }
}

export function denyPolicyDecision(e: MatchEntry): Decision {
  const m = e.route.model
  const policy = e.route.denyPolicy!
  const d: Decision = { verdict: 'deny', reason: Reason.DENY_POLICY, route: m.name, rule: e.rule, denyPolicy: policy.name, denyResponse: policy.denyResponse, detail: details(e).denyPolicy }
  if (m.registry !== undefined) d.registry = m.registry
  return d
}

export function expiredDecision(e: MatchEntry): Decision {
  const m = e.route.model
  const d: Decision = { verdict: 'deny', reason: Reason.EXCEPTION_EXPIRED, route: m.name, rule: e.rule, detail: details(e).expired }
  if (m.registry !== undefined) d.registry = m.registry
  return d
}

const DEFAULT_ALLOW = 'no route matches; allowed by default (defaultPolicy: allow-all)'
const DEFAULT_DENY_NAME = 'no route matches this hostname, port and protocol for this agent; defaultPolicy is deny-all'
const DEFAULT_DENY_IP =
  'no CIDR rule matches this address, port and protocol for this agent (IP literals are checked against destinationCIDRs only); defaultPolicy is deny-all'

/**
 * No route decided. `literalIp` adds the reminder that IP literals are checked
 * against CIDR rules only, the usual surprise behind such a deny.
 */
export function defaultDecision(defaultPolicy: DefaultPolicy, literalIp: boolean): Decision {
  if (defaultPolicy === 'allow-all') return { verdict: 'allow', reason: Reason.ALLOWED, via: 'direct', detail: DEFAULT_ALLOW }
  return { verdict: 'deny', reason: Reason.POLICY_DEFAULT_DENY, detail: literalIp ? DEFAULT_DENY_IP : DEFAULT_DENY_NAME }
}

export function dnsNameDenied(name: string): Decision {
  return { verdict: 'deny', reason: Reason.DNS_NAME_DENIED, detail: `no route lets this agent connect to ${name} on any port or protocol, so the name is not resolved` }
}

export function invalidDestination(problem: string): Decision {
  return { verdict: 'deny', reason: Reason.INVALID_DESTINATION, detail: problem }
}

export function internalError(problem: string): Decision {
  return { verdict: 'deny', reason: Reason.INTERNAL_ERROR, detail: `keel could not decide (${problem}); failing closed` }
}

export function guardMetadata(address: string, guard: GuardClass): Decision {
  return {
    verdict: 'deny',
    reason: Reason.GUARD_METADATA,
    detail: `${address} is ${guard.label}; keel never dials it (named opt-in: spec.guardRails.unsafeAllowMetadata)`,
  }
}

export function guardPrivate(allowed: Decision, hostname: string, address: string, guard: GuardClass): Decision {
  const d: Decision = {
    verdict: 'deny',
    reason: Reason.GUARD_PRIVATE_ADDRESS,
    detail: `${hostname} resolved to ${address} (${guard.label}); no CIDR rule allows that address for this agent, port and protocol, and spec.guardRails.unsafeAllowResolvedRanges does not cover it (DNS rebinding guard)`,
  }
  if (allowed.route !== undefined) d.route = allowed.route
  if (allowed.rule !== undefined) d.rule = allowed.rule
  if (allowed.registry !== undefined) d.registry = allowed.registry
  return d
}
