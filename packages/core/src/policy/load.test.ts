import { describe, expect, it } from 'vitest'
import { isKeelError, PolicyError, type PolicyIssue } from '../errors.js'
import { loadPolicy, type PolicySource } from './load.js'

const HEADER = 'apiVersion: keel.dev/v1alpha1\nkind: EgressPolicy\nmetadata: { name: t }\n'

function issuesOf(sources: PolicySource[]): PolicyIssue[] {
  try {
    loadPolicy(sources)
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError)
    expect(isKeelError(e) && e.code).toBe('ERR_POLICY_INVALID')
    return [...(e as PolicyError).issues]
  }
  throw new Error('expected a PolicyError')
}

const lines = (issues: PolicyIssue[]) => issues.map((i) => `${i.file}:${i.line}:${i.column}: ${i.message}`)

/** One bad spec body (after the header, so line 4 is `spec:`) → the one issue expected. */
function oneIssue(spec: string): PolicyIssue {
  const issues = issuesOf([{ path: 'p.yaml', text: HEADER + spec }])
  expect(issues, lines(issues).join('\n')).toHaveLength(1)
  return issues[0]!
}

const route = (match: string, extra = '') =>
  `spec:\n  routes:\n    - name: r\n${extra}      rules:\n        - matches:\n            - ${match}\n`

describe('loadPolicy validation: every issue at once, with file:line:col', () => {
  const bad = [
    'apiVersion: keel.dev/v1alpha1',
    'kind: EgressPolicy',
    'metadata: { name: dev }',
    'spec:',
    '  defaultPolicy: deny-some',
    '  agents:',
    '    - name: coder',
    '      labels: { team: 1 }',
    '  routes:',
    '    - name: web',
    '      rules:',
    '        - matches:',
    '            - destinationHostname: ["a.example.com"]',
    '              ports: [{ port: 0 }, { port: 80, startPort: 1, endPort: 2 }]',
    '            - destinationHostnames: ["a.*.example.com", "*.com"]',
    '              protocol: tcp',
    '            - destinationCIDRs: ["10.0.0.1/8"]',
    '              ports: [{ startPort: 9000, endPort: 8000 }]',
    '  denyPolicies:',
    '    - name: nope',
    '      targetRef: { route: missing }',
  ].join('\n')

  it('reports all of them, in file order, each at its exact position', () => {
    expect(lines(issuesOf([{ path: 'bad.yaml', text: bad }]))).toEqual([
      'bad.yaml:5:18: spec.defaultPolicy: defaultPolicy "deny-some" is not valid; use one of: deny-all, allow-all',
      'bad.yaml:8:23: spec.agents[0].labels.team: value must be a string, got 1; quote it: "1"',
      'bad.yaml:13:15: spec.routes[0].rules[0].matches[0].destinationHostname: unknown field "destinationHostname" in a match; did you mean "destinationHostnames"? (valid fields: destinationHostnames, destinationCIDRs, ports, protocol, sourceAgents)',
      'bad.yaml:13:15: spec.routes[0].rules[0].matches[0]: a match needs destinationHostnames or destinationCIDRs (to allow everything, write defaultPolicy: allow-all, or destinationCIDRs: ["0.0.0.0/0", "::/0"])',
      'bad.yaml:14:31: spec.routes[0].rules[0].matches[0].ports[0].port: port 0 is not valid; use an integer from 1 to 65535',
      'bad.yaml:14:36: spec.routes[0].rules[0].matches[0].ports[1]: write either port or startPort/endPort, not both',
      'bad.yaml:15:38: spec.routes[0].rules[0].matches[1].destinationHostnames[0]: hostname "a.*.example.com": a wildcard may only be the whole first label: "*.example.com" (one label) or "**.example.com" (any depth)',
      'bad.yaml:15:57: spec.routes[0].rules[0].matches[1].destinationHostnames[1]: hostname "*.com": the wildcard would cover a whole top-level domain; name at least two labels after it, e.g. "*.example.com"',
      'bad.yaml:16:25: spec.routes[0].rules[0].matches[1].protocol: protocol "tcp" is not valid; use one of: TCP, UDP; did you mean "TCP"?',
      'bad.yaml:17:34: spec.routes[0].rules[0].matches[2].destinationCIDRs[0]: CIDR "10.0.0.1/8": host bits are set; write the network 10.0.0.0/8, or the single host 10.0.0.1/32',
      'bad.yaml:18:23: spec.routes[0].rules[0].matches[2].ports[0]: startPort 9000 is greater than endPort 8000; the range is inclusive, so write startPort <= endPort',
      'bad.yaml:21:27: spec.denyPolicies[0].targetRef.route: deny policy "nope" targets route "missing", which does not exist; defined routes: web',
    ])
  })

  it('keeps the path and the bad value on each issue', () => {
    const issue = issuesOf([{ path: 'bad.yaml', text: bad }]).find((i) => i.path.endsWith('ports[0].port'))
    expect(issue).toMatchObject({ path: 'spec.routes[0].rules[0].matches[0].ports[0].port', value: 0, line: 14, column: 31 })
  })

  it('PolicyError.message lists every issue as file:line:col: message', () => {
    try {
      loadPolicy([{ path: 'bad.yaml', text: bad }])
    } catch (e) {
      expect((e as Error).message.split('\n')).toHaveLength(12)
      expect((e as Error).message.split('\n')[0]).toMatch(/^bad\.yaml:5:18: /)
    }
  })
})

describe('loadPolicy validation: one rule per row', () => {
  it.each<[string, string, number, number, string]>([
    ['unknown top-level field', 'spec: {}\nspecs: {}\n', 5, 1, 'unknown field "specs" in a policy document; did you mean "spec"?'],
    ['unknown spec field', 'spec:\n  route: []\n', 5, 3, 'unknown field "route" in spec; did you mean "routes"?'],
    ['unknown route field', route('destinationHostnames: [a.example.com]', '      expire: "2026-01-01T00:00:00Z"\n'), 7, 7, 'unknown field "expire" in a route; did you mean "expires"?'],
    ['empty ports list', route('destinationHostnames: [a.example.com]\n              ports: []'), 10, 22, 'ports is an empty list; omit ports to allow every port of the protocol'],
    ['port above 65535', route('destinationHostnames: [a.example.com]\n              ports: [{ port: 65536 }]'), 10, 31, 'port 65536 is not valid; use an integer from 1 to 65535'],
    ['port as a string', route('destinationHostnames: [a.example.com]\n              ports: [{ port: "443" }]'), 10, 31, 'port "443" is not valid; use an integer from 1 to 65535'],
    ['bare port number', route('destinationHostnames: [a.example.com]\n              ports: [443]'), 10, 23, 'a port entry must be a mapping like { port: 443 } or { startPort: 8000, endPort: 8099 }'],
    ['startPort without endPort', route('destinationHostnames: [a.example.com]\n              ports: [{ startPort: 1 }]'), 10, 23, 'a port range needs both startPort and endPort'],
    ['bare * hostname', route('destinationHostnames: ["*"]'), 9, 38, 'hostname "*": a bare wildcard would match every name'],
    ['IP in destinationHostnames', route('destinationHostnames: ["10.0.0.1"]'), 9, 38, 'hostname "10.0.0.1": an IP address is not a hostname; put it in destinationCIDRs'],
    ['invalid label', route('destinationHostnames: ["-bad.example.com"]'), 9, 38, 'hostname "-bad.example.com": not a valid hostname'],
    ['invalid punycode label', route('destinationHostnames: ["xn--zz.example.com"]'), 9, 38, 'hostname "xn--zz.example.com": not a valid hostname'],
    ['CIDR prefix too long', route('destinationCIDRs: ["10.0.0.0/33"]'), 9, 34, 'CIDR "10.0.0.0/33": the prefix length "/33" is not an integer from 0 to 32'],
    ['IPv6 host bits', route('destinationCIDRs: ["2001:db8::1/32"]'), 9, 34, 'write the network 2001:db8::/32, or the single host 2001:db8::1/128'],
    ['dispatcher with CIDRs', route('destinationCIDRs: ["10.0.0.0/8"]', '      via: dispatcher\n'), 10, 15, 'a route with via: dispatcher matches hostnames only'],
    ['unknown via', route('destinationHostnames: [a.example.com]', '      via: proxy\n'), 7, 12, 'via "proxy" is not valid; use one of: direct, dispatcher'],
    ['expires without owner', route('destinationHostnames: [a.example.com]', '      expires: "2026-12-31T00:00:00Z"\n'), 7, 7, 'a route with "expires" is an exception and must also name its "owner"'],
    ['expires not RFC 3339', route('destinationHostnames: [a.example.com]', '      owner: me\n      expires: "2026-12-31"\n'), 8, 16, 'expires "2026-12-31" is not an RFC 3339 date-time; write e.g. "2026-12-31T00:00:00Z"'],
    ['no rules', 'spec:\n  routes:\n    - name: r\n', 6, 7, 'a route is missing required field "rules"'],
    ['bad route name', 'spec:\n  routes:\n    - name: Web_1\n      rules: [{ matches: [{ destinationHostnames: [a.example.com] }] }]\n', 6, 13, 'route name "Web_1" is not a valid name'],
    ['selector operator', route('destinationHostnames: [a.example.com]\n              sourceAgents: { matchExpressions: [{ key: team, operator: in, values: [a] }] }'), 10, 73, 'operator "in" is not valid; use one of: In, NotIn, Exists, DoesNotExist; did you mean "In"?'],
    ['In without values', route('destinationHostnames: [a.example.com]\n              sourceAgents: { matchExpressions: [{ key: team, operator: In }] }'), 10, 50, 'operator In needs a non-empty values list'],
    ['unknown selector field', route('destinationHostnames: [a.example.com]\n              sourceAgents: { matchLabel: { team: a } }'), 10, 31, 'unknown field "matchLabel" in sourceAgents; did you mean "matchLabels"?'],
    ['denyResponse status', 'spec:\n  routes: [{ name: r, rules: [{ matches: [{ destinationHostnames: [a.example.com] }] }] }]\n  denyPolicies:\n    - { name: d, targetRef: { route: r }, denyResponse: { statusCode: 200 } }\n', 7, 71, 'statusCode 200 is not valid; use an integer from 400 to 599'],
    ['unknown guardRails field', 'spec:\n  guardRails: { unsafeAllowMetaData: true }\n', 5, 17, 'unknown field "unsafeAllowMetaData" in guardRails; did you mean "unsafeAllowMetadata"?'],
    ['guardRails boolean', 'spec:\n  guardRails: { unsafeAllowMetadata: "yes" }\n', 5, 38, 'unsafeAllowMetadata must be true or false, got "yes"'],
    ['guardRails ranges', 'spec:\n  guardRails: { unsafeAllowResolvedRanges: ["127.0.0.1/8"] }\n', 5, 45, 'CIDR "127.0.0.1/8": host bits are set; write the network 127.0.0.0/8'],
    ['duplicate YAML key', 'spec:\n  routes: []\n  routes: []\n', 6, 3, 'duplicate key: each field may appear only once in a mapping'],
    ['custom YAML tag', 'spec:\n  defaultPolicy: !weird deny-all\n', 5, 18, 'Unresolved tag: !weird; policy files use plain YAML without custom tags'],
  ])('%s', (_name, spec, line, column, message) => {
    const issue = oneIssue(spec)
    expect({ line: issue.line, column: issue.column }).toEqual({ line, column })
    expect(issue.message).toContain(message)
    expect(issue.file).toBe('p.yaml')
  })

  it.each<[string, string, string]>([
    ['wrong apiVersion', 'apiVersion: keel.dev/v1\nkind: EgressPolicy\nmetadata: { name: a }\nspec: { nonsense: 1 }\n', 'p.yaml:1:13: apiVersion: unsupported apiVersion "keel.dev/v1"; supported apiVersion: keel.dev/v1alpha1'],
    ['wrong kind', 'apiVersion: keel.dev/v1alpha1\nkind: NetworkPolicy\nmetadata: { name: a }\nspec: {}\n', 'p.yaml:2:7: kind: unsupported kind "NetworkPolicy"; supported kind: EgressPolicy'],
    ['not a mapping', '- a\n- b\n', 'p.yaml:1:1: a policy document must be a mapping, got a list'],
    ['empty file', '# nothing here\n', 'p.yaml:1:1: no policy document found; a policy starts with "apiVersion: keel.dev/v1alpha1" and "kind: EgressPolicy"'],
    ['YAML syntax error', `${HEADER}spec: { routes: [\n`, 'p.yaml:5:1: YAML syntax error:'],
  ])('%s', (_name, text, expected) => {
    const issues = issuesOf([{ path: 'p.yaml', text }])
    expect(lines(issues)[0]).toContain(expected)
    if (_name === 'wrong apiVersion') expect(issues).toHaveLength(1) // the body of an unknown version is not judged
  })
})

describe('loadPolicy merging', () => {
  const doc = (name: string, spec: string) => `apiVersion: keel.dev/v1alpha1\nkind: EgressPolicy\nmetadata: { name: ${name} }\nspec:\n${spec}`
  const webRoute = '  routes:\n    - name: web\n      rules: [{ matches: [{ destinationHostnames: [a.example.com] }] }]\n'

  it('merges several documents in one file and several files', () => {
    const policy = loadPolicy([
      { path: 'a.yaml', text: `${doc('a', webRoute)}---\n${doc('a', '  agents: [{ name: coder }]\n')}` },
      { path: 'b.yaml', text: doc('b', '  denyPolicies: [{ name: no-web, targetRef: { route: web } }]\n  defaultPolicy: deny-all\n') },
    ])
    expect(policy.name).toBe('a+b')
    expect(policy.model.routes.map((r) => r.name)).toEqual(['web'])
    expect(policy.model.agents.map((a) => a.name)).toEqual(['coder'])
    expect(policy.model.denyPolicies[0]).toMatchObject({
      name: 'no-web',
      targetRef: { route: 'web' }, // a deny policy may target a route in another file
      denyResponse: { statusCode: 403, message: 'egress to this destination is denied by policy "no-web"' },
    })
  })

  it('skips empty documents', () => {
    expect(loadPolicy([{ path: 'a.yaml', text: `---\n# comment\n---\n${doc('a', webRoute)}---\n` }]).model.routes).toHaveLength(1)
  })

  it('reports duplicate names across files with both locations', () => {
    const issues = issuesOf([
      { path: 'a.yaml', text: doc('a', webRoute) },
      { path: 'b.yaml', text: doc('b', `  agents: [{ name: x }, { name: x }]\n${webRoute}`) },
    ])
    expect(lines(issues)).toEqual([
      'b.yaml:5:25: spec.agents[1].name: duplicate agent name "x" (first defined at b.yaml:5:12); agent names must be unique across all policy files',
      'b.yaml:7:7: spec.routes[0].name: duplicate route name "web" (first defined at a.yaml:6:7); route names must be unique across all policy files',
    ])
  })

  it('reports conflicting defaultPolicy and guard-rail settings', () => {
    const issues = issuesOf([
      { path: 'a.yaml', text: doc('a', '  defaultPolicy: allow-all\n  guardRails: { unsafeAllowMetadata: true }\n') },
      { path: 'b.yaml', text: doc('b', '  defaultPolicy: deny-all\n  guardRails: { unsafeAllowMetadata: false }\n') },
    ])
    expect(lines(issues)).toEqual([
      'b.yaml:5:18: spec.defaultPolicy: deny-all conflicts with allow-all set at a.yaml:5:18; merged policy files must agree',
      'b.yaml:6:38: spec.guardRails.unsafeAllowMetadata: false conflicts with true set at a.yaml:6:38; merged policy files must agree',
    ])
  })

  it('collects issues from every file before throwing', () => {
    const issues = issuesOf([
      { path: 'a.yaml', text: doc('a', '  defaultPolicy: nope\n') },
      { path: 'b.yaml', text: doc('b', '  routes: 5\n') },
    ])
    expect(issues.map((i) => i.file)).toEqual(['a.yaml', 'b.yaml'])
  })

  it('normalizes: defaults, lower-case names, punycode, protocol TCP, frozen model', () => {
    const policy = loadPolicy([
      {
        path: 'a.yaml',
        text: doc('a', '  routes:\n    - name: r\n      rules: [{ matches: [{ destinationHostnames: ["*.Bücher.DE.", "x.example.com", "X.example.com"], destinationCIDRs: ["::ffff:10.0.0.0/104"] }] }]\n'),
      },
    ])
    const match = policy.model.routes[0]!.rules[0]!.matches[0]!
    expect(policy.defaultPolicy).toBe('deny-all')
    expect(match.destinationHostnames.map((h) => h.text)).toEqual(['*.xn--bcher-kva.de', 'x.example.com'])
    expect(match.destinationCIDRs.map((c) => c.text)).toEqual(['10.0.0.0/8'])
    expect(match.protocol).toBe('TCP')
    expect(match.ports).toEqual([])
    expect(policy.model.routes[0]!.via).toBe('direct')
    expect(Object.isFrozen(policy.model.routes[0])).toBe(true)
    expect(policy.model.guardRails).toEqual({ unsafeAllowMetadata: false, unsafeAllowResolvedRanges: [] })
  })

  it('accepts YAML anchors and aliases, within limits', () => {
    const text = doc('a', '  routes:\n    - name: a\n      rules: [{ matches: [{ destinationHostnames: [a.example.com], ports: &web [{ port: 443 }] }] }]\n    - name: b\n      rules: [{ matches: [{ destinationHostnames: [b.example.com], ports: *web }] }]\n')
    expect(loadPolicy([{ path: 'a.yaml', text }]).model.routes[1]!.rules[0]!.matches[0]!.ports).toEqual([{ start: 443, end: 443 }])
    // Aliases nested through the schema (rules → matches → ports) could expand a tiny file enormously.
    const many = `[${Array(150).fill('*one').join(', ')}]`
    const bomb = doc('a', `  routes:\n    - name: a\n      rules: [{ matches: [{ destinationHostnames: [a.example.com], ports: [&one { port: 1 }] }, { destinationHostnames: [b.example.com], ports: ${many} }] }]\n`)
    expect(issuesOf([{ path: 'a.yaml', text: bomb }]).map((i) => i.message)).toEqual(['more than 100 YAML aliases (*name) in one document; write the values out instead'])
  })

  it('needs at least one source', () => {
    expect(() => loadPolicy([])).toThrow(/at least one policy source/)
  })
})
