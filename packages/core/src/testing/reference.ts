/**
 * A deliberately naive reference implementation of the decision semantics, used
 * only by tests: it loops over every route, rule and match for every question and
 * shares no matching code with the compiled matcher (only the parsers that produce
 * normalized names and address bytes). The property test checks the two agree.
 */
import { normalizeHostname } from '../net/hostname.js'
import { parseIp } from '../net/ip.js'
import { classifyAddress } from '../net/special-ranges.js'
import type { CidrBlock } from '../net/cidr.js'
import type { HostnamePattern } from '../net/hostname.js'
import type { LabelSelector, Policy, PolicyRoute } from '../policy/model.js'
import type { Protocol } from '../types.js'

export interface ReferenceDecision {
  verdict: 'allow' | 'deny'
  reason: string
  route?: string
  rule?: string
}

type Labels = Readonly<Record<string, string>>

interface Hit {
  order: number
  route: PolicyRoute
  rule: string
}

function hostnameMatches(pattern: HostnamePattern, name: string): boolean {
  const nameLabels = name.split('.')
  const suffixLabels = pattern.name.split('.')
  if (pattern.kind === 'exact') return name === pattern.name
  const extra = nameLabels.length - suffixLabels.length
  if (extra < 1 || (pattern.kind === 'one-label' && extra !== 1)) return false
  return nameLabels.slice(extra).join('.') === pattern.name
}

function toBigInt(bytes: Uint8Array): bigint {
  let value = 0n
  for (const b of bytes) value = (value << 8n) | BigInt(b)
  return value
}

function cidrMatches(cidr: CidrBlock, address: Uint8Array): boolean {
  if (cidr.bytes.length !== address.length) return false
  const bits = BigInt(address.length * 8)
  const hostBits = bits - BigInt(cidr.prefixLength)
  return toBigInt(address) >> hostBits === toBigInt(cidr.bytes) >> hostBits
}

function selects(selector: LabelSelector | undefined, labels: Labels): boolean {
  if (!selector) return true
  const has = (k: string) => Object.keys(labels).includes(k)
  const labelsOk = Object.entries(selector.matchLabels).every(([k, v]) => has(k) && labels[k] === v)
  const expressionsOk = selector.matchExpressions.every((e) => {
    if (e.operator === 'In') return has(e.key) && e.values.includes(labels[e.key]!)
    if (e.operator === 'NotIn') return !has(e.key) || !e.values.includes(labels[e.key]!)
    if (e.operator === 'Exists') return has(e.key)
    return !has(e.key)
  })
  return labelsOk && expressionsOk
}

type Target = { name: string } | { address: Uint8Array }

interface Candidate extends Hit {
  ports: readonly { start: number; end: number }[]
}

/** Every match for this target, agent and protocol, ports not yet considered. */
function candidates(policy: Policy, labels: Labels, target: Target, protocol: Protocol): Candidate[] {
  const out: Candidate[] = []
  let order = 0
  for (const route of policy.routes) {
    route.rules.forEach((rule, r) => {
      rule.matches.forEach((match, m) => {
        const o = order++
        if (match.protocol !== protocol) return
        if (!selects(match.sourceAgents, labels)) return
        const destinationOk =
          'name' in target
            ? match.destinationHostnames.some((p) => hostnameMatches(p, target.name))
            : match.destinationCIDRs.some((c) => cidrMatches(c, target.address))
        if (destinationOk) out.push({ order: o, route, rule: `rules[${r}].matches[${m}]`, ports: match.ports })
      })
    })
  }
  return out
}

/** A route without ports allows every port of its protocol. */
const onPort = (all: Candidate[], port: number) => all.filter((c) => c.ports.length === 0 || c.ports.some((p) => port >= p.start && port <= p.end))

function findHits(policy: Policy, labels: Labels, target: Target, port: number, protocol: Protocol): Hit[] {
  return onPort(candidates(policy, labels, target, protocol), port)
}

const targeted = (policy: Policy, route: PolicyRoute) => policy.denyPolicies.some((d) => d.targetRef.route === route.name)
const expired = (route: PolicyRoute, now: number) => route.expires !== undefined && now >= route.expires

type Outcome = { kind: 'deny_policy' | 'allow' | 'expired'; hit: Hit } | { kind: 'default' }

function outcome(policy: Policy, hits: Hit[], now: number): Outcome {
  const denied = hits.find((h) => targeted(policy, h.route))
  if (denied) return { kind: 'deny_policy', hit: denied }
  const live = hits.find((h) => !expired(h.route, now))
  if (live) return { kind: 'allow', hit: live }
  const dead = hits.find((h) => expired(h.route, now))
  if (dead) return { kind: 'expired', hit: dead }
  return { kind: 'default' }
}

function toDecision(policy: Policy, o: Outcome): ReferenceDecision {
  if (o.kind === 'default') {
    return policy.defaultPolicy === 'allow-all' ? { verdict: 'allow', reason: 'allowed' } : { verdict: 'deny', reason: 'policy_default_deny' }
  }
  const where = { route: o.hit.route.name, rule: o.hit.rule }
  if (o.kind === 'deny_policy') return { verdict: 'deny', reason: 'deny_policy', ...where }
  if (o.kind === 'expired') return { verdict: 'deny', reason: 'exception_expired', ...where }
  return { verdict: 'allow', reason: 'allowed', ...where }
}

export interface ReferenceArgs {
  labels: Labels
  hostname?: string
  address?: string
  port: number
  protocol: Protocol
  now: number
}

export function referenceDecide(policy: Policy, args: ReferenceArgs): ReferenceDecision {
  if (args.hostname !== undefined) {
    const name = normalizeHostname(args.hostname)
    if (name !== undefined) return toDecision(policy, outcome(policy, findHits(policy, args.labels, { name }, args.port, args.protocol), args.now))
    return referenceDecide(policy, { ...args, hostname: undefined, address: args.hostname })
  }
  const ip = parseIp(args.address ?? '')
  if (!ip) return { verdict: 'deny', reason: 'invalid_destination' }
  if (!policy.guardRails.unsafeAllowMetadata && classifyAddress(ip.bytes)?.kind === 'metadata') {
    return { verdict: 'deny', reason: 'guard_metadata' }
  }
  return toDecision(policy, outcome(policy, findHits(policy, args.labels, { address: ip.bytes }, args.port, args.protocol), args.now))
}

/** Brute force: tries every port of both protocols. */
export function referenceDecideName(policy: Policy, labels: Labels, hostname: string, now: number): ReferenceDecision {
  const name = normalizeHostname(hostname)
  if (name === undefined) return { verdict: 'deny', reason: 'dns_name_denied' }
  const best: Partial<Record<Outcome['kind'], Hit>> = {}
  let allowedByDefault = false
  for (const protocol of ['TCP', 'UDP'] as const) {
    const all = candidates(policy, labels, { name }, protocol)
    for (let port = 1; port <= 65535; port++) {
      const o = outcome(policy, onPort(all, port), now)
      if (o.kind === 'default') {
        if (policy.defaultPolicy === 'allow-all') allowedByDefault = true
        continue
      }
      const current = best[o.kind]
      if (!current || o.hit.order < current.order) best[o.kind] = o.hit
    }
  }
  if (best.allow) return { verdict: 'allow', reason: 'allowed', route: best.allow.route.name, rule: best.allow.rule }
  if (allowedByDefault) return { verdict: 'allow', reason: 'allowed' }
  if (best.deny_policy) return { verdict: 'deny', reason: 'deny_policy', route: best.deny_policy.route.name, rule: best.deny_policy.rule }
  if (best.expired) return { verdict: 'deny', reason: 'exception_expired', route: best.expired.route.name, rule: best.expired.rule }
  return { verdict: 'deny', reason: 'dns_name_denied' }
}

export function referenceCheckResolved(policy: Policy, args: ReferenceArgs & { hostname: string; address: string }): ReferenceDecision {
  const named = referenceDecide(policy, { ...args, address: undefined })
  if (named.verdict === 'deny') return named
  const ip = parseIp(args.address)
  if (!ip) return { verdict: 'deny', reason: 'invalid_destination' }
  const guard = classifyAddress(ip.bytes)
  if (!guard) return named
  if (guard.kind === 'metadata') return policy.guardRails.unsafeAllowMetadata ? named : { verdict: 'deny', reason: 'guard_metadata' }
  const byCidr = toDecision(policy, outcome(policy, findHits(policy, args.labels, { address: ip.bytes }, args.port, args.protocol), args.now))
  if (byCidr.verdict === 'allow' && byCidr.route !== undefined) return named
  if (policy.guardRails.unsafeAllowResolvedRanges.some((c) => cidrMatches(c, ip.bytes))) return named
  const denied: ReferenceDecision = { verdict: 'deny', reason: 'guard_private_address' }
  if (named.route !== undefined) denied.route = named.route
  if (named.rule !== undefined) denied.rule = named.rule
  return denied
}
