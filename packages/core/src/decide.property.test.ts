/**
 * Property test: the compiled matcher (maps, wildcard maps, CIDR trie, selector
 * cache, port sweep) agrees with the naive reference in testing/reference.ts on
 * random policies and destinations.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { stringify } from 'yaml'
import { maskBytes } from './net/cidr.js'
import { formatIp } from './net/ip.js'
import { loadPolicy } from './policy/load.js'
import { referenceCheckResolved, referenceDecide, referenceDecideName, type ReferenceDecision } from './testing/reference.js'
import type { Decision, Protocol } from './types.js'

const NOW = Date.parse('2026-06-01T00:00:00Z')
const LABELS = ['a', 'b', 'api', 'www']
const BASES = ['example.com', 'test.org', 'x.example.com']
const PORTS = [1, 22, 53, 80, 443, 444, 8000, 8099, 65535]

const name = fc
  .tuple(fc.array(fc.constantFrom(...LABELS), { maxLength: 3 }), fc.constantFrom(...BASES))
  .map(([labels, base]) => [...labels, base].join('.'))

const pattern = fc.oneof(name, name.map((n) => `*.${n}`), name.map((n) => `**.${n}`))

/** Spellings the normalizer must fold: upper case and a trailing dot. */
const querySpelling = (n: string) => fc.constantFrom(n, n.toUpperCase(), `${n}.`)

const V4_PREFIXES = [[10, 0], [10, 1], [169, 254], [127, 0], [192, 168], [8, 8], [198, 18]]
const V6_PREFIXES = ['2001:db8::', 'fe80::', 'fd00:ec2::', '64:ff9b::', 'fc00::', '2606:4700::']

const v4Bytes = fc
  .tuple(fc.constantFrom(...V4_PREFIXES), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 250, max: 255 }))
  .map(([[a, b], c, d]) => Uint8Array.of(a!, b!, c, d))
const v6Bytes = fc.tuple(fc.constantFrom(...V6_PREFIXES), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0x2ff })).map(([prefix, mid, last]) => {
  const text = `${prefix}${mid}:${last.toString(16)}`.replace('::', `:${'0:'.repeat(8 - prefix.split(':').filter(Boolean).length - 2)}`)
  const groups = text.split(':').filter((g) => g !== '')
  const bytes = new Uint8Array(16)
  groups.forEach((g, i) => {
    const v = parseInt(g, 16)
    bytes[i * 2] = v >> 8
    bytes[i * 2 + 1] = v & 0xff
  })
  return bytes
})

const cidr = fc.oneof(
  fc.tuple(v4Bytes, fc.integer({ min: 0, max: 32 })).map(([b, p]) => `${formatIp(maskBytes(b, p))}/${p}`),
  fc.tuple(v6Bytes, fc.integer({ min: 0, max: 128 })).map(([b, p]) => `${formatIp(maskBytes(b, p))}/${p}`),
)

const address = fc.oneof(
  v4Bytes.map(formatIp),
  v6Bytes.map(formatIp),
  v4Bytes.map((b) => `::ffff:${formatIp(b)}`), // IPv4-mapped
)

const portEntry = fc.oneof(
  fc.constantFrom(...PORTS).map((port) => ({ port })),
  fc.tuple(fc.constantFrom(...PORTS), fc.constantFrom(...PORTS)).map(([x, y]) => ({ startPort: Math.min(x, y), endPort: Math.max(x, y) })),
)

const labelSet = fc.record({ team: fc.constantFrom('a', 'b'), tier: fc.constantFrom('x', 'y') }, { requiredKeys: [] })

const selector = fc.oneof(
  fc.constant(undefined),
  labelSet.map((matchLabels) => ({ matchLabels })),
  fc.record({
    matchExpressions: fc.array(
      fc.oneof(
        fc.record({ key: fc.constantFrom('team', 'tier'), operator: fc.constantFrom('In', 'NotIn'), values: fc.uniqueArray(fc.constantFrom('a', 'b', 'x'), { minLength: 1, maxLength: 2 }) }),
        fc.record({ key: fc.constantFrom('team', 'tier'), operator: fc.constantFrom('Exists', 'DoesNotExist') }),
      ),
      { minLength: 1, maxLength: 2 },
    ),
  }),
)

const match = fc
  .record({
    destinationHostnames: fc.array(pattern, { maxLength: 3 }),
    destinationCIDRs: fc.array(cidr, { maxLength: 2 }),
    ports: fc.option(fc.array(portEntry, { minLength: 1, maxLength: 2 }), { nil: undefined }),
    protocol: fc.constantFrom('TCP', 'UDP', undefined),
    sourceAgents: selector,
  })
  .filter((m) => m.destinationHostnames.length + m.destinationCIDRs.length > 0)
  .map((m) => Object.fromEntries(Object.entries(m).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0))))

const expiry = fc.constantFrom(undefined, '2026-01-01T00:00:00Z', '2026-06-01T00:00:00Z', '2027-01-01T00:00:00Z')

const policySpec = fc
  .record({
    routes: fc.array(fc.record({ rules: fc.array(fc.record({ matches: fc.array(match, { minLength: 1, maxLength: 2 }) }), { minLength: 1, maxLength: 2 }), expires: expiry }), {
      minLength: 1,
      maxLength: 7,
    }),
    denied: fc.array(fc.nat(), { maxLength: 3 }),
    defaultPolicy: fc.constantFrom('deny-all', 'allow-all'),
    unsafeAllowMetadata: fc.boolean(),
    unsafeAllowResolvedRanges: fc.constantFrom([], ['127.0.0.0/8'], ['10.0.0.0/8', 'fc00::/7']),
  })
  .map((p) => {
    const routes = p.routes.map((r, i) => ({ name: `r${i}`, ...(r.expires && { expires: r.expires, owner: 'ops' }), rules: r.rules }))
    const targets = [...new Set(p.denied.map((n) => n % routes.length))]
    return {
      defaultPolicy: p.defaultPolicy,
      routes,
      denyPolicies: targets.map((t) => ({ name: `d${t}`, targetRef: { route: `r${t}` } })),
      guardRails: { unsafeAllowMetadata: p.unsafeAllowMetadata, unsafeAllowResolvedRanges: p.unsafeAllowResolvedRanges },
    }
  })

function compile(spec: object) {
  return loadPolicy([{ path: 'random.yaml', text: stringify({ apiVersion: 'keel.dev/v1alpha1', kind: 'EgressPolicy', metadata: { name: 'random' }, spec }) }])
}

const essential = (d: Decision | ReferenceDecision) => ({ verdict: d.verdict, reason: d.reason, route: d.route, rule: d.rule })

interface Spec {
  routes: { rules: { matches: { destinationHostnames?: string[]; destinationCIDRs?: string[] }[] }[] }[]
}

/** Names that some pattern of the policy matches, or nearly matches (one label short or too many). */
function namesNear(spec: Spec): fc.Arbitrary<string> {
  const patterns = spec.routes.flatMap((r) => r.rules.flatMap((rule) => rule.matches.flatMap((m) => m.destinationHostnames ?? [])))
  if (patterns.length === 0) return name
  return fc.tuple(fc.constantFrom(...patterns), fc.array(fc.constantFrom(...LABELS), { maxLength: 2 })).map(([p, extra]) => [...extra, p.replace(/^\*\*?\./, '')].join('.'))
}

/** The first and last address of some CIDR of the policy, in either spelling. */
function addressesNear(spec: Spec): fc.Arbitrary<string> {
  const blocks = spec.routes.flatMap((r) => r.rules.flatMap((rule) => rule.matches.flatMap((m) => m.destinationCIDRs ?? [])))
  if (blocks.length === 0) return address
  return fc.tuple(fc.constantFrom(...blocks), fc.boolean()).map(([block, last]) => {
    const [text, prefix] = block.split('/') as [string, string]
    const bytes = new Uint8Array(text.includes(':') ? 16 : 4)
    const parsed = text.includes(':') ? null : text.split('.').map(Number)
    if (parsed) parsed.forEach((v, i) => (bytes[i] = v))
    else return last ? text : text.endsWith('::') ? `${text}1` : text
    if (last) for (let bit = Number(prefix); bit < 32; bit++) bytes[bit >> 3]! |= 0x80 >> (bit & 7)
    return formatIp(bytes)
  })
}

const query = (spec: Spec) =>
  fc.record({
    labels: labelSet,
    frozen: fc.boolean(),
    target: fc.oneof(
      fc.oneof(name, namesNear(spec)).chain(querySpelling).map((hostname) => ({ hostname })),
      fc.oneof(address, addressesNear(spec)).map((address) => ({ address })),
    ),
    port: fc.oneof(fc.constantFrom(...PORTS), fc.integer({ min: 1, max: 65535 })),
    protocol: fc.constantFrom<Protocol>('TCP', 'UDP'),
    now: fc.constantFrom(NOW - 1, NOW, NOW + 1, Date.parse('2025-01-01T00:00:00Z'), Date.parse('2028-01-01T00:00:00Z')),
  })

/** A random policy and queries drawn partly from it, so that matches are common. */
const scenario = <T>(queries: (spec: Spec) => fc.Arbitrary<T>, maxLength: number) =>
  policySpec.chain((spec) => fc.tuple(fc.constant(spec), fc.array(queries(spec), { minLength: 1, maxLength })))

describe('compiled matcher agrees with the naive reference', () => {
  it('decide()', () => {
    fc.assert(
      fc.property(scenario(query, 25), ([spec, queries]) => {
        const policy = compile(spec)
        for (const q of queries) {
          const agent = q.frozen ? policy.agent('random', q.labels) : { name: 'random', labels: { ...q.labels } }
          const actual = policy.decide({ agent, ...q.target, port: q.port, protocol: q.protocol, now: q.now })
          const expected = referenceDecide(policy.model, { labels: q.labels, ...q.target, port: q.port, protocol: q.protocol, now: q.now })
          expect(essential(actual)).toEqual(essential(expected))
        }
      }),
      { numRuns: 300 },
    )
  })

  it('checkResolved()', () => {
    fc.assert(
      fc.property(scenario((spec) => fc.tuple(query(spec), fc.oneof(name, namesNear(spec)), fc.oneof(address, addressesNear(spec))), 15), ([spec, queries]) => {
        const policy = compile(spec)
        for (const [q, hostname, resolved] of queries) {
          const args = { hostname, address: resolved, port: q.port, protocol: q.protocol, now: q.now }
          const actual = policy.checkResolved({ agent: policy.agent('random', q.labels), ...args })
          expect(essential(actual)).toEqual(essential(referenceCheckResolved(policy.model, { labels: q.labels, ...args })))
        }
      }),
      { numRuns: 200 },
    )
  })

  it('decideName() (reference tries all 131,070 port/protocol pairs)', () => {
    fc.assert(
      fc.property(scenario((spec) => fc.tuple(labelSet, fc.oneof(name, namesNear(spec)), query(spec)), 3), ([spec, queries]) => {
        const policy = compile(spec)
        for (const [labels, hostname, q] of queries) {
          const actual = policy.decideName({ agent: policy.agent('random', labels), hostname, now: q.now })
          expect(essential(actual)).toEqual(essential(referenceDecideName(policy.model, labels, hostname, q.now)))
        }
      }),
      { numRuns: 60 },
    )
  })
})
