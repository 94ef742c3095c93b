import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { useCli } from '../../test-support/cli-harness.js'

const EXAMPLE = fileURLToPath(new URL('../../../../examples/keel.yaml', import.meta.url))

const { io, keel } = useCli('keel-cli-policy-')

async function file(name: string, text: string): Promise<string> {
  const path = join(io.tmp, name)
  await writeFile(path, text)
  return path
}

const HEADER = 'apiVersion: keel.dev/v1alpha1\nkind: EgressPolicy\nmetadata: { name: extra }\nspec:\n'

describe('keel policy check', () => {
  it('exits 0 with a one-line summary for a valid policy', async () => {
    expect(await keel('policy', 'check', EXAMPLE)).toBe(0)
    expect(io.stdout).toBe('ok: 1 file, 4 routes, 1 deny policy, 1 agent (policy "dev-laptop", defaultPolicy deny-all)\n')
  })

  it('merges several files', async () => {
    const extra = await file('extra.yaml', `${HEADER}  agents: [{ name: ci }]\n  denyPolicies: [{ name: no-db, targetRef: { route: app-db } }]\n`)
    expect(await keel('policy', 'check', EXAMPLE, extra)).toBe(0)
    expect(io.stdout).toBe('ok: 2 files, 4 routes, 2 deny policies, 2 agents (policy "dev-laptop+extra", defaultPolicy deny-all)\n')
  })

  it('exits 2 printing every problem as file:line:col: message', async () => {
    const bad = await file(
      'bad.yaml',
      `${HEADER}  routes:\n    - name: web\n      rules:\n        - matches:\n            - destinationHostnames: ["*.com"]\n              ports: [{ port: 0 }]\n              protocl: TCP\n`,
    )
    expect(await keel('policy', 'check', bad)).toBe(2)
    expect(io.stdout).toBe('')
    expect(io.stderr.trimEnd().split('\n')).toEqual([
      `${bad}:9:38: spec.routes[0].rules[0].matches[0].destinationHostnames[0]: hostname "*.com": the wildcard would cover a whole top-level domain; name at least two labels after it, e.g. "*.example.com"`,
      `${bad}:10:31: spec.routes[0].rules[0].matches[0].ports[0].port: port 0 is not valid; use an integer from 1 to 65535`,
      `${bad}:11:15: spec.routes[0].rules[0].matches[0].protocl: unknown field "protocl" in a match; did you mean "protocol"? (valid fields: destinationHostnames, destinationCIDRs, ports, protocol, sourceAgents)`,
    ])
  })

  it('reports problems across files, with both locations for duplicates', async () => {
    const dup = await file('dup.yaml', `${HEADER}  routes:\n    - name: gists\n      rules: [{ matches: [{ destinationHostnames: [x.example.com] }] }]\n`)
    expect(await keel('policy', 'check', EXAMPLE, dup)).toBe(2)
    expect(io.stderr).toContain(`${dup}:6:7: spec.routes[0].name: duplicate route name "gists" (first defined at ${EXAMPLE}:34:7)`)
  })

  it('exits 2 for a missing file and for no file at all', async () => {
    expect(await keel('policy', 'check', join(io.tmp, 'missing.yaml'))).toBe(2)
    expect(io.stderr).toContain('cannot read policy file')
    expect(await keel('policy', 'check')).toBe(2)
  })

  it('warns about exceptions that already expired, but stays valid', async () => {
    const old = await file('old.yaml', `${HEADER}  routes:\n    - name: old\n      owner: ops\n      expires: "2020-01-01T00:00:00Z"\n      rules: [{ matches: [{ destinationHostnames: [x.example.com] }] }]\n`)
    expect(await keel('policy', 'check', old)).toBe(0)
    expect(io.stderr).toContain(`${old}:6:7: warning: route "old" expired at 2020-01-01T00:00:00Z (owner: ops)`)
  })

  it('has help with examples', async () => {
    expect(await keel('policy', 'check', '--help')).toBe(0)
    expect(io.stdout).toContain('Examples:')
    expect(io.stdout).toContain('$ keel policy check keel.yaml')
  })
})

describe('keel policy explain', () => {
  const explain = (...args: string[]) => keel('policy', 'explain', EXAMPLE, ...args)
  const json = () => JSON.parse(io.stdout) as Record<string, unknown>

  it.each<[string, string[], Record<string, unknown>]>([
    ['dispatcher route', ['--agent', 'coder', '--dest', 'api.anthropic.com:443'], { verdict: 'allow', reason: 'allowed', route: 'anthropic', rule: 'rules[0].matches[0]', via: 'dispatcher', registry: { owner: 'platform', purpose: 'LLM calls', dataClass: 'internal' } }],
    ['selector does not select', ['--agent', 'stranger', '--dest', 'api.anthropic.com:443'], { verdict: 'deny', reason: 'policy_default_deny', route: null }],
    ['--label for an unlisted agent', ['--agent', 'stranger', '--label', 'team=platform', '--dest', 'api.anthropic.com:443'], { verdict: 'allow', route: 'anthropic' }],
    ['deny policy', ['--agent', 'coder', '--dest', 'gist.github.com:443'], { verdict: 'deny', reason: 'deny_policy', route: 'gists', denyPolicy: 'no-gists', denyResponse: { statusCode: 403, message: 'no gists from agents' } }],
    ['port range', ['--agent', 'coder', '--dest', 'api.github.com:8099', '--at', '2026-06-01T00:00:00Z'], { verdict: 'allow', route: 'packages' }],
    ['expired exception', ['--agent', 'coder', '--dest', 'registry.npmjs.org:443', '--at', '2027-01-01T00:00:00Z'], { verdict: 'deny', reason: 'exception_expired', route: 'packages' }],
    ['CIDR', ['--agent', 'coder', '--dest', '10.20.3.4:5432/tcp'], { verdict: 'allow', route: 'app-db', via: 'direct' }],
    ['IPv6 in brackets', ['--agent', 'coder', '--dest', '[2001:db8::1]:5432'], { verdict: 'deny', reason: 'policy_default_deny', destination: { address: '2001:db8::1', port: 5432, protocol: 'TCP' } }],
    ['metadata', ['--agent', 'coder', '--dest', '169.254.169.254:80'], { verdict: 'deny', reason: 'guard_metadata' }],
    ['UDP', ['--agent', 'coder', '--dest', 'gist.github.com:53/udp'], { verdict: 'deny', reason: 'policy_default_deny' }],
  ])('--json: %s', async (_name, args, expected) => {
    expect(await explain(...args, '--json')).toBe(0)
    expect(io.stdout.trim().split('\n')).toHaveLength(1) // exactly one JSON object
    expect(json()).toMatchObject(expected)
  })

  it('--json carries agent, destination, dns, source and detail', async () => {
    expect(await explain('--agent', 'coder', '--dest', 'API.Anthropic.com.:443', '--json')).toBe(0)
    expect(json()).toMatchObject({
      agent: { name: 'coder', labels: { team: 'platform' }, listed: true },
      destination: { host: 'api.anthropic.com', port: 443, protocol: 'TCP' },
      dns: { verdict: 'allow', reason: 'allowed' },
      source: `${EXAMPLE}:18:7`,
      detail: 'allowed by route "anthropic" rules[0].matches[0] (api.anthropic.com)',
      policy: 'dev-laptop',
    })
  })

  it('prints the decision and why for people', async () => {
    expect(await explain('--agent', 'coder', '--dest', 'gist.github.com:443')).toBe(0)
    expect(io.stdout).toMatch(/^deny deny_policy\n/)
    expect(io.stdout).toContain(`route        gists  rules[0].matches[0]  (${EXAMPLE}:34:7)`)
    expect(io.stdout).toContain('deny policy  no-gists: 403 "no gists from agents"')
    expect(io.stdout).toContain('dns          the name is not resolved (deny_policy)')
  })

  it('notes when a --label loses to the policy', async () => {
    expect(await explain('--agent', 'coder', '--label', 'team=data', '--dest', 'api.anthropic.com:443', '--json')).toBe(0)
    expect(json()).toMatchObject({ verdict: 'allow' })
    expect(io.stderr).toContain("the policy's label wins over --label team=data")
  })

  it.each<[string, string[], string]>([
    ['IPv6 without brackets', ['--agent', 'coder', '--dest', '2001:db8::1:5432'], 'put IPv6 addresses in brackets: [2001:db8::1]:5432'],
    ['no port', ['--agent', 'coder', '--dest', 'example.com'], 'missing ":<port>"'],
    ['bad protocol', ['--agent', 'coder', '--dest', 'example.com:53/icmp'], 'protocol "icmp" is not tcp or udp'],
    ['bad label', ['--agent', 'coder', '--label', 'team', '--dest', 'example.com:443'], 'expected key=value'],
    ['bad --at', ['--agent', 'coder', '--at', 'tomorrow', '--dest', 'example.com:443'], 'bad --at "tomorrow"'],
    ['missing --dest', ['--agent', 'coder'], "required option '--dest"],
    ['missing --agent', ['--dest', 'example.com:443'], "required option '--agent"],
  ])('exits 2 on usage errors: %s', async (_name, args, message) => {
    expect(await explain(...args)).toBe(2)
    expect(io.stderr).toContain(message)
    expect(io.stdout).toBe('')
  })

  it('exits 2 with the issues when the policy is invalid', async () => {
    const bad = await file('bad.yaml', `${HEADER}  defaultPolicy: deny\n`)
    expect(await keel('policy', 'explain', bad, '--agent', 'a', '--dest', 'x.example.com:443', '--json')).toBe(2)
    expect(io.stderr).toBe(`${bad}:5:18: spec.defaultPolicy: defaultPolicy "deny" is not valid; use one of: deny-all, allow-all; did you mean "deny-all"?\n`)
    expect(io.stdout).toBe('')
  })

  it('has help with examples', async () => {
    expect(await keel('policy', 'explain', '--help')).toBe(0)
    expect(io.stdout).toContain('$ keel policy explain keel.yaml --agent coder --dest api.anthropic.com:443')
  })

  it('the example policy file is the one from DESIGN.md', async () => {
    expect(await readFile(EXAMPLE, 'utf8')).toContain('targetRef: { route: gists }')
  })
})
