import { describe, expect, it } from 'vitest'
import { stringify } from 'yaml'
import { loadPolicy } from './policy/load.js'
import type { CompiledPolicy } from './decide.js'
import type { AgentIdentity, DecideArgs, Protocol } from './types.js'

const NOW = Date.parse('2026-06-01T00:00:00Z')

function load(spec: object): CompiledPolicy {
  const text = stringify({ apiVersion: 'keel.dev/v1alpha1', kind: 'EgressPolicy', metadata: { name: 'test' }, spec })
  return loadPolicy([{ path: 'test.yaml', text }])
}

const route = (name: string, match: object, extra: object = {}) => ({ name, ...extra, rules: [{ matches: [match] }] })

/** `host:port[/udp]` or `[v6]:port` → decide args (hostname unless it is a literal IP). */
function dest(text: string): Pick<DecideArgs, 'hostname' | 'address' | 'port' | 'protocol'> {
  const [target, proto] = text.split('/') as [string, string | undefined]
  const colon = target.lastIndexOf(':')
  let host = target.slice(0, colon)
  const port = Number(target.slice(colon + 1))
  const protocol: Protocol = proto === 'udp' ? 'UDP' : 'TCP'
  if (host.startsWith('[')) host = host.slice(1, -1)
  const literal = /^[0-9.]+$/.test(host) || host.includes(':')
  return literal ? { address: host, port, protocol } : { hostname: host, port, protocol }
}

type Expected = { verdict: 'allow' | 'deny'; reason: string; route?: string }

function decide(policy: CompiledPolicy, destination: string, agent: AgentIdentity = policy.agent('anyone'), now = NOW) {
  return policy.decide({ agent, ...dest(destination), now })
}

function expectDecision(actual: ReturnType<CompiledPolicy['decide']>, [verdict, reason, routeName]: [string, string, string?]) {
  const expected: Expected = { verdict: verdict as Expected['verdict'], reason }
  if (routeName !== undefined) expected.route = routeName
  expect({ verdict: actual.verdict, reason: actual.reason, ...(routeName !== undefined && { route: actual.route }) }).toEqual(expected)
}

describe('hostname semantics', () => {
  const policy = load({
    routes: [
      route('exact', { destinationHostnames: ['api.example.com'] }),
      route('one', { destinationHostnames: ['*.wild.example.com'] }),
      route('many', { destinationHostnames: ['**.deep.example.com'] }),
      route('idn', { destinationHostnames: ['bücher.de'] }),
      route('caps', { destinationHostnames: ['Mixed.CASE.example.com.'] }),
    ],
  })
  it.each<[string, [string, string, string?]]>([
    ['api.example.com:443', ['allow', 'allowed', 'exact']],
    ['API.Example.COM:443', ['allow', 'allowed', 'exact']], // case-insensitive
    ['api.example.com.:443', ['allow', 'allowed', 'exact']], // trailing dot ignored
    ['www.api.example.com:443', ['deny', 'policy_default_deny']], // exact is exact
    ['x.wild.example.com:443', ['allow', 'allowed', 'one']], // * = exactly one extra label
    ['wild.example.com:443', ['deny', 'policy_default_deny']], // the bare domain is never implied
    ['a.b.wild.example.com:443', ['deny', 'policy_default_deny']], // not two labels
    ['a.deep.example.com:443', ['allow', 'allowed', 'many']], // ** = one or more
    ['a.b.c.deep.example.com:443', ['allow', 'allowed', 'many']],
    ['deep.example.com:443', ['deny', 'policy_default_deny']], // never the bare domain
    ['xdeep.example.com:443', ['deny', 'policy_default_deny']], // label boundary
    ['xn--bcher-kva.de:443', ['allow', 'allowed', 'idn']], // IDN compared as punycode
    ['BÜCHER.de:443', ['allow', 'allowed', 'idn']],
    ['mixed.case.example.com:443', ['allow', 'allowed', 'caps']],
    ['bad_-.example.com:443', ['deny', 'invalid_destination']],
    ['xn--zz.example.com:443', ['deny', 'invalid_destination']],
  ])('%s → %j', (destination, expected) => {
    expectDecision(decide(policy, destination), expected)
  })
})

describe('CIDR semantics', () => {
  const policy = load({
    routes: [
      route('db', { destinationCIDRs: ['10.20.0.0/16'], ports: [{ port: 5432 }] }),
      route('v6', { destinationCIDRs: ['2001:db8::/32'] }),
      route('dns', { destinationCIDRs: ['192.0.2.0/24'], protocol: 'UDP' }),
      route('named-db', { destinationHostnames: ['db.example.com'] }),
      route('host', { destinationCIDRs: ['198.51.100.7'] }),
    ],
  })
  it.each<[string, [string, string, string?]]>([
    ['10.20.1.1:5432', ['allow', 'allowed', 'db']],
    ['10.20.255.255:5432', ['allow', 'allowed', 'db']],
    ['[::ffff:10.20.1.1]:5432', ['allow', 'allowed', 'db']], // IPv4-mapped IPv6 is IPv4
    ['10.21.0.1:5432', ['deny', 'policy_default_deny']],
    ['10.20.1.1:5433', ['deny', 'policy_default_deny']],
    ['[2001:db8::5]:22', ['allow', 'allowed', 'v6']],
    ['[2001:db8:ffff:ffff::1]:443', ['allow', 'allowed', 'v6']],
    ['[2001:db9::1]:22', ['deny', 'policy_default_deny']],
    ['192.0.2.9:53/udp', ['allow', 'allowed', 'dns']],
    ['192.0.2.9:53/tcp', ['deny', 'policy_default_deny']], // protocol is part of the match
    ['198.51.100.7:80', ['allow', 'allowed', 'host']], // a bare address is a /32
    ['198.51.100.8:80', ['deny', 'policy_default_deny']],
    ['10.0.0.999:80', ['deny', 'invalid_destination']],
  ])('%s → %j', (destination, expected) => {
    expectDecision(decide(policy, destination), expected)
  })

  it('checks literal IPs against CIDR rules only, never hostname rules', () => {
    const d = policy.decide({ agent: policy.agent('a'), address: '10.99.0.1', port: 443, protocol: 'TCP', now: NOW })
    expect(d).toMatchObject({ verdict: 'deny', reason: 'policy_default_deny' })
    expect(d.detail).toContain('IP literals are checked against destinationCIDRs only')
  })

  it('treats an IP literal passed as hostname as an address', () => {
    expect(policy.decide({ agent: policy.agent('a'), hostname: '10.20.0.1', port: 5432, protocol: 'TCP', now: NOW })).toMatchObject({ verdict: 'allow', route: 'db' })
  })
})

describe('ports and protocols', () => {
  const policy = load({
    routes: [
      route('web', { destinationHostnames: ['web.example.com'], ports: [{ port: 443 }, { startPort: 8000, endPort: 8099 }] }),
      route('any', { destinationHostnames: ['any.example.com'] }),
      route('udp', { destinationHostnames: ['udp.example.com'], protocol: 'UDP' }),
    ],
  })
  it.each<[string, [string, string, string?]]>([
    ['web.example.com:443', ['allow', 'allowed', 'web']],
    ['web.example.com:444', ['deny', 'policy_default_deny']],
    ['web.example.com:8000', ['allow', 'allowed', 'web']], // ranges are inclusive
    ['web.example.com:8099', ['allow', 'allowed', 'web']],
    ['web.example.com:7999', ['deny', 'policy_default_deny']],
    ['web.example.com:8100', ['deny', 'policy_default_deny']],
    ['any.example.com:1', ['allow', 'allowed', 'any']], // no ports: every port of its protocol
    ['any.example.com:65535', ['allow', 'allowed', 'any']],
    ['any.example.com:53/udp', ['deny', 'policy_default_deny']], // protocol defaults to TCP
    ['udp.example.com:53/udp', ['allow', 'allowed', 'udp']],
    ['udp.example.com:53/tcp', ['deny', 'policy_default_deny']],
  ])('%s → %j', (destination, expected) => {
    expectDecision(decide(policy, destination), expected)
  })
})

describe('precedence: deny policy > live allow > expired exception > default', () => {
  const expires = '2026-06-01T00:00:00Z'
  const policy = load({
    routes: [
      route('github', { destinationHostnames: ['**.github.com'] }),
      route('gists', { destinationHostnames: ['gist.github.com'] }),
      route('temp', { destinationHostnames: ['temp.example.com', 'both.example.com'] }, { expires, owner: 'platform-team' }),
      route('both', { destinationHostnames: ['both.example.com'] }),
      route('first', { destinationHostnames: ['dup.example.com'], ports: [{ port: 443 }] }),
      route('second', { destinationHostnames: ['dup.example.com'] }),
      route('denied-temp', { destinationHostnames: ['dt.example.com'] }, { expires, owner: 'x' }),
    ],
    denyPolicies: [
      { name: 'no-gists', targetRef: { route: 'gists' }, denyResponse: { statusCode: 451, message: 'no gists' } },
      { name: 'no-dt', targetRef: { route: 'denied-temp' } },
    ],
  })
  const before = NOW - 1
  const after = NOW + 1
  it.each<[string, number, [string, string, string?]]>([
    ['api.github.com:443', NOW, ['allow', 'allowed', 'github']],
    ['gist.github.com:443', NOW, ['deny', 'deny_policy', 'gists']], // deny beats the ** allow
    ['temp.example.com:443', before, ['allow', 'allowed', 'temp']],
    ['temp.example.com:443', NOW, ['deny', 'exception_expired', 'temp']], // expired from `expires` on
    ['temp.example.com:443', after, ['deny', 'exception_expired', 'temp']],
    ['both.example.com:443', after, ['allow', 'allowed', 'both']], // a live allow beats an expired exception
    ['dup.example.com:443', NOW, ['allow', 'allowed', 'first']], // first in file order
    ['dup.example.com:80', NOW, ['allow', 'allowed', 'second']],
    ['dt.example.com:443', before, ['deny', 'deny_policy', 'denied-temp']],
    ['dt.example.com:443', after, ['deny', 'deny_policy', 'denied-temp']], // deny policy beats expiry
  ])('%s at %i → %j', (destination, now, expected) => {
    expectDecision(decide(policy, destination, policy.agent('a'), now), expected)
  })

  it('a deny carries the deny policy and its response; the default response is 403', () => {
    expect(decide(policy, 'gist.github.com:443')).toMatchObject({ denyPolicy: 'no-gists', denyResponse: { statusCode: 451, message: 'no gists' }, rule: 'rules[0].matches[0]' })
    expect(decide(policy, 'dt.example.com:443').denyResponse).toEqual({ statusCode: 403, message: 'egress to this destination is denied by policy "no-dt"' })
  })

  it('an expired exception names the route, its expiry and owner', () => {
    const d = decide(policy, 'temp.example.com:443', policy.agent('a'), after)
    expect(d).toMatchObject({ route: 'temp', rule: 'rules[0].matches[0]' })
    expect(d.detail).toContain('expired at 2026-06-01T00:00:00Z (owner: platform-team)')
  })
})

describe('decisions carry route, rule, via, registry and detail', () => {
  const policy = load({
    routes: [
      {
        name: 'anthropic',
        via: 'dispatcher',
        registry: { owner: 'platform', purpose: 'LLM calls', dataClass: 'internal' },
        rules: [{ matches: [{ destinationHostnames: ['other.example.com'] }] }, { matches: [{ destinationHostnames: ['a.example.com'], ports: [{ port: 80 }] }, { destinationHostnames: ['api.anthropic.com'] }] }],
      },
    ],
  })
  it('allow', () => {
    expect(decide(policy, 'api.anthropic.com:443')).toEqual({
      verdict: 'allow',
      reason: 'allowed',
      route: 'anthropic',
      rule: 'rules[1].matches[1]',
      via: 'dispatcher',
      registry: { owner: 'platform', purpose: 'LLM calls', dataClass: 'internal' },
      detail: 'allowed by route "anthropic" rules[1].matches[1] (api.anthropic.com)',
    })
  })
})

describe('agents and selectors', () => {
  const policy = load({
    agents: [
      { name: 'coder', labels: { team: 'platform' } },
      { name: 'intern', labels: { team: 'data' } },
    ],
    routes: [
      route('platform-only', { destinationHostnames: ['p.example.com'], sourceAgents: { matchLabels: { team: 'platform' } } }),
      route('not-data', { destinationHostnames: ['n.example.com'], sourceAgents: { matchExpressions: [{ key: 'team', operator: 'NotIn', values: ['data'] }] } }),
      route('everyone', { destinationHostnames: ['e.example.com'], sourceAgents: {} }),
    ],
  })
  it.each<[string, AgentIdentity, string, [string, string, string?]]>([
    ['listed agent with the label', policy.agent('coder'), 'p.example.com:443', ['allow', 'allowed', 'platform-only']],
    ['listed agent without it', policy.agent('intern'), 'p.example.com:443', ['deny', 'policy_default_deny']],
    ['unlisted agent', policy.agent('stranger'), 'p.example.com:443', ['deny', 'policy_default_deny']],
    ['ad-hoc agent with extra labels', policy.agent('stranger', { team: 'platform' }), 'p.example.com:443', ['allow', 'allowed', 'platform-only']],
    ['policy labels win over extra labels', policy.agent('intern', { team: 'platform' }), 'p.example.com:443', ['deny', 'policy_default_deny']],
    ['plain object identity', { name: 'x', labels: { team: 'platform' } }, 'p.example.com:443', ['allow', 'allowed', 'platform-only']],
    ['NotIn selects a missing key', policy.agent('stranger'), 'n.example.com:443', ['allow', 'allowed', 'not-data']],
    ['NotIn rejects the value', policy.agent('intern'), 'n.example.com:443', ['deny', 'policy_default_deny']],
    ['empty selector selects everyone', policy.agent('intern'), 'e.example.com:443', ['allow', 'allowed', 'everyone']],
  ])('%s', (_name, agent, destination, expected) => {
    expectDecision(decide(policy, destination, agent), expected)
  })

  it('agent() returns the listed identity, frozen', () => {
    expect(policy.agent('coder')).toEqual({ name: 'coder', labels: { team: 'platform' } })
    expect(Object.isFrozen(policy.agent('coder'))).toBe(true)
    expect(policy.agent('stranger', { a: 'b' })).toEqual({ name: 'stranger', labels: { a: 'b' } })
    expect(policy.agent('intern', { team: 'x', extra: 'y' }).labels).toEqual({ team: 'data', extra: 'y' })
  })
})

describe('guard rails', () => {
  const base = {
    routes: [
      route('web', { destinationHostnames: ['**.example.com'], ports: [{ port: 443 }] }),
      route('meta', { destinationCIDRs: ['169.254.0.0/16', 'fe80::/10', 'fd00:ec2::/32'] }),
      route('lan', { destinationCIDRs: ['10.1.0.0/16'], ports: [{ port: 443 }] }),
      route('lan-other-port', { destinationCIDRs: ['10.2.0.0/16'], ports: [{ port: 22 }] }),
      route('lan-denied', { destinationCIDRs: ['10.3.0.0/16'] }),
    ],
    denyPolicies: [{ name: 'no-lan3', targetRef: { route: 'lan-denied' } }],
  }
  const policy = load(base)
  const optedIn = load({ ...base, guardRails: { unsafeAllowMetadata: true, unsafeAllowResolvedRanges: ['127.0.0.0/8'] } })

  it.each<[string, CompiledPolicy, string, [string, string, string?]]>([
    ['metadata IPv4, even with a CIDR rule', policy, '169.254.169.254:80', ['deny', 'guard_metadata']],
    ['link-local IPv6', policy, '[fe80::1]:80', ['deny', 'guard_metadata']],
    ['AWS IPv6 metadata', policy, '[fd00:ec2::254]:80', ['deny', 'guard_metadata']],
    ['mapped metadata', policy, '[::ffff:169.254.169.254]:80', ['deny', 'guard_metadata']],
    ['metadata given as hostname', policy, '169.254.169.254:80', ['deny', 'guard_metadata']],
    ['opt-in: metadata with a CIDR rule', optedIn, '169.254.169.254:80', ['allow', 'allowed', 'meta']],
    ['private literal IP goes by CIDR rules', policy, '10.1.0.5:443', ['allow', 'allowed', 'lan']],
  ])('decide: %s', (_name, p, destination, expected) => {
    expectDecision(decide(p, destination), expected)
  })

  const resolved = (p: CompiledPolicy, address: string, hostname = 'api.example.com', port = 443) =>
    p.checkResolved({ agent: p.agent('a'), hostname, address, port, protocol: 'TCP', now: NOW })

  it.each<[string, CompiledPolicy, string, [string, string, string?], string?]>([
    ['public address', policy, '93.184.216.34', ['allow', 'allowed', 'web']],
    ['public IPv6', policy, '2606:2800:220:1::1', ['allow', 'allowed', 'web']],
    ['loopback (DNS rebinding)', policy, '127.0.0.1', ['deny', 'guard_private_address', 'web']],
    ['IPv6 loopback', policy, '::1', ['deny', 'guard_private_address']],
    ['RFC 1918', policy, '192.168.1.1', ['deny', 'guard_private_address']],
    ['CGNAT', policy, '100.64.0.1', ['deny', 'guard_private_address']],
    ['unspecified', policy, '0.0.0.0', ['deny', 'guard_private_address']],
    ['ULA', policy, 'fc00::1', ['deny', 'guard_private_address']],
    ['synthetic pool', policy, '198.18.0.1', ['deny', 'guard_private_address']],
    ['mapped private', policy, '::ffff:10.9.9.9', ['deny', 'guard_private_address']],
    ['metadata', policy, '169.254.169.254', ['deny', 'guard_metadata']],
    ['NAT64 metadata', policy, '64:ff9b::a9fe:a9fe', ['deny', 'guard_metadata']],
    ['private covered by a CIDR rule for this port', policy, '10.1.2.3', ['allow', 'allowed', 'web']],
    ['private covered by a CIDR rule for another port', policy, '10.2.2.3', ['deny', 'guard_private_address']],
    ['private covered by a denied CIDR route', policy, '10.3.2.3', ['deny', 'guard_private_address']],
    ['opt-in range', optedIn, '127.0.0.1', ['allow', 'allowed', 'web']],
    ['opt-in range does not cover other private space', optedIn, '10.9.0.1', ['deny', 'guard_private_address']],
    ['metadata opt-in', optedIn, '169.254.169.254', ['allow', 'allowed', 'web']],
    ['hostname itself denied', policy, '93.184.216.34', ['deny', 'policy_default_deny'], 'api.other.org'],
    ['bad address', policy, 'not-an-ip', ['deny', 'invalid_destination']],
  ])('checkResolved: %s', (_name, p, address, expected, hostname) => {
    expectDecision(resolved(p, address, hostname), expected)
  })

  it('explains the rebinding guard', () => {
    expect(resolved(policy, '127.0.0.1').detail).toContain('api.example.com resolved to 127.0.0.1 (loopback)')
  })
})

describe('defaultPolicy allow-all', () => {
  const policy = load({
    defaultPolicy: 'allow-all',
    routes: [route('blocked', { destinationHostnames: ['blocked.example.com'] })],
    denyPolicies: [{ name: 'block', targetRef: { route: 'blocked' } }],
  })
  it.each<[string, [string, string, string?]]>([
    ['anything.example.org:443', ['allow', 'allowed']],
    ['10.0.0.1:22', ['allow', 'allowed']],
    ['blocked.example.com:443', ['deny', 'deny_policy', 'blocked']],
    ['169.254.169.254:80', ['deny', 'guard_metadata']],
  ])('%s → %j', (destination, expected) => {
    expectDecision(decide(policy, destination), expected)
  })
  it('says the allow came from the default', () => {
    const d = decide(policy, 'anything.example.org:443')
    expect(d.route).toBeUndefined()
    expect(d.detail).toContain('allowed by default (defaultPolicy: allow-all)')
  })
})

describe('decideName: may the agent resolve this name at all?', () => {
  const expires = '2026-01-01T00:00:00Z'
  const policy = load({
    agents: [{ name: 'coder', labels: { team: 'platform' } }],
    routes: [
      route('web', { destinationHostnames: ['**.example.com'], ports: [{ port: 443 }] }),
      route('web-80', { destinationHostnames: ['split.example.com'], ports: [{ port: 80 }] }),
      route('gists', { destinationHostnames: ['gist.example.com'] }),
      route('old', { destinationHostnames: ['old.example.org'] }, { expires, owner: 'ops' }),
      route('team', { destinationHostnames: ['team.example.net'], sourceAgents: { matchLabels: { team: 'platform' } } }),
      route('udp-only', { destinationHostnames: ['udp.example.net'], protocol: 'UDP' }),
    ],
    denyPolicies: [
      { name: 'no-gists', targetRef: { route: 'gists' } },
      { name: 'no-80', targetRef: { route: 'web-80' } },
    ],
  })
  it.each<[string, string, [string, string, string?]]>([
    ['api.example.com', 'coder', ['allow', 'allowed', 'web']],
    ['API.EXAMPLE.COM.', 'coder', ['allow', 'allowed', 'web']],
    ['example.com', 'coder', ['deny', 'dns_name_denied']],
    ['unknown.org', 'coder', ['deny', 'dns_name_denied']],
    ['gist.example.com', 'coder', ['deny', 'deny_policy', 'gists']], // every port denied by the deny policy
    ['split.example.com', 'coder', ['allow', 'allowed', 'web']], // port 80 denied, 443 still allowed
    ['old.example.org', 'coder', ['deny', 'exception_expired', 'old']],
    ['team.example.net', 'coder', ['allow', 'allowed', 'team']],
    ['team.example.net', 'stranger', ['deny', 'dns_name_denied']],
    ['udp.example.net', 'coder', ['allow', 'allowed', 'udp-only']],
    ['bad name!', 'coder', ['deny', 'dns_name_denied']],
  ])('%s for %s → %j', (hostname, agent, expected) => {
    expectDecision(policy.decideName({ agent: policy.agent(agent), hostname, now: NOW }), expected)
  })

  it('allow-all resolves every name unless every port is denied', () => {
    const open = load({
      defaultPolicy: 'allow-all',
      routes: [route('all-tcp', { destinationHostnames: ['x.example.com'] }), route('all-udp', { destinationHostnames: ['x.example.com'], protocol: 'UDP' }), route('tcp', { destinationHostnames: ['y.example.com'] })],
      denyPolicies: [
        { name: 'a', targetRef: { route: 'all-tcp' } },
        { name: 'b', targetRef: { route: 'all-udp' } },
        { name: 'c', targetRef: { route: 'tcp' } },
      ],
    })
    const name = (hostname: string) => open.decideName({ agent: open.agent('a'), hostname, now: NOW })
    expect(name('anything.org')).toMatchObject({ verdict: 'allow', reason: 'allowed' })
    expect(name('x.example.com')).toMatchObject({ verdict: 'deny', reason: 'deny_policy', route: 'all-tcp' })
    expect(name('y.example.com')).toMatchObject({ verdict: 'allow', reason: 'allowed' }) // UDP falls to the default
  })
})

describe('bad input is a deny, never an exception', () => {
  const policy = load({
    routes: [route('web', { destinationHostnames: ['a.example.com'] }), route('sel', { destinationHostnames: ['sel.example.com'], sourceAgents: { matchLabels: { team: 'x' } } })],
  })
  const agent = policy.agent('a')
  it.each<[string, unknown, string]>([
    ['no arguments', undefined, 'internal_error'],
    ['no agent', { hostname: 'a.example.com', port: 443, protocol: 'TCP', now: NOW }, 'internal_error'],
    ['agent without labels', { agent: { name: 'x' }, hostname: 'a.example.com', port: 443, protocol: 'TCP', now: NOW }, 'internal_error'],
    ['no clock', { agent, hostname: 'a.example.com', port: 443, protocol: 'TCP' }, 'internal_error'],
    ['NaN clock', { agent, hostname: 'a.example.com', port: 443, protocol: 'TCP', now: NaN }, 'internal_error'],
    ['both hostname and address', { agent, hostname: 'a.example.com', address: '10.0.0.1', port: 443, protocol: 'TCP', now: NOW }, 'invalid_destination'],
    ['neither', { agent, port: 443, protocol: 'TCP', now: NOW }, 'invalid_destination'],
    ['port 0', { agent, hostname: 'a.example.com', port: 0, protocol: 'TCP', now: NOW }, 'invalid_destination'],
    ['port 65536', { agent, hostname: 'a.example.com', port: 65536, protocol: 'TCP', now: NOW }, 'invalid_destination'],
    ['port 1.5', { agent, hostname: 'a.example.com', port: 1.5, protocol: 'TCP', now: NOW }, 'invalid_destination'],
    ['lower-case protocol', { agent, hostname: 'a.example.com', port: 443, protocol: 'tcp', now: NOW }, 'invalid_destination'],
    ['hostname not a string', { agent, hostname: 42, port: 443, protocol: 'TCP', now: NOW }, 'invalid_destination'],
    ['address with port', { agent, address: '10.0.0.1:80', port: 443, protocol: 'TCP', now: NOW }, 'invalid_destination'],
  ])('decide: %s', (_name, args, reason) => {
    const d = policy.decide(args as DecideArgs)
    expect(d).toMatchObject({ verdict: 'deny', reason })
  })

  it('decide: labels that throw when read → internal_error', () => {
    const labels = new Proxy({}, { ownKeys: () => { throw new Error('boom') } })
    const d = policy.decide({ agent: { name: 'x', labels }, hostname: 'sel.example.com', port: 443, protocol: 'TCP', now: NOW })
    expect(d).toMatchObject({ verdict: 'deny', reason: 'internal_error' })
  })

  it('decideName and checkResolved too', () => {
    expect(policy.decideName(undefined as never)).toMatchObject({ verdict: 'deny', reason: 'internal_error' })
    expect(policy.decideName({ agent, hostname: 5 as never, now: NOW })).toMatchObject({ verdict: 'deny', reason: 'dns_name_denied' })
    expect(policy.checkResolved({ agent, hostname: 'a.example.com', address: 'x', port: 443, protocol: 'TCP', now: NOW })).toMatchObject({ verdict: 'deny', reason: 'invalid_destination' })
    expect(policy.checkResolved(null as never)).toMatchObject({ verdict: 'deny', reason: 'internal_error' })
  })
})

describe('every reason code core emits', () => {
  const policy = load({
    routes: [
      route('ok', { destinationHostnames: ['ok.example.com'] }),
      route('flipped', { destinationHostnames: ['flipped.example.com'] }),
      route('old', { destinationHostnames: ['old.example.com'] }, { expires: '2020-01-01T00:00:00Z', owner: 'ops' }),
    ],
    denyPolicies: [{ name: 'flip', targetRef: { route: 'flipped' } }],
  })
  const agent = policy.agent('a')
  const tcp = (hostname: string) => ({ agent, hostname, port: 443, protocol: 'TCP' as const, now: NOW })
  it.each<[string, () => ReturnType<CompiledPolicy['decide']>, string]>([
    ['allowed', () => policy.decide(tcp('ok.example.com')), 'allow'],
    ['policy_default_deny', () => policy.decide(tcp('nope.example.com')), 'deny'],
    ['deny_policy', () => policy.decide(tcp('flipped.example.com')), 'deny'],
    ['exception_expired', () => policy.decide(tcp('old.example.com')), 'deny'],
    ['guard_metadata', () => policy.decide({ ...tcp(''), hostname: undefined, address: '169.254.169.254' }), 'deny'],
    ['guard_private_address', () => policy.checkResolved({ ...tcp('ok.example.com'), address: '10.0.0.1' }), 'deny'],
    ['dns_name_denied', () => policy.decideName({ agent, hostname: 'nope.example.com', now: NOW }), 'deny'],
    ['invalid_destination', () => policy.decide(tcp('not a name')), 'deny'],
    ['internal_error', () => policy.decide({ ...tcp('ok.example.com'), agent: null as never }), 'deny'],
  ])('%s', (reason, run, verdict) => {
    const d = run()
    expect(d.reason).toBe(reason)
    expect(d.verdict).toBe(verdict)
    expect(typeof d.detail).toBe('string')
  })
})
