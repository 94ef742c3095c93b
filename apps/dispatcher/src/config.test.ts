import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { DispatcherConfigError, loadDispatcherConfig } from './config.js'
import { BASE_PROVIDERS, configYaml } from '../test-support/unit.js'

function issues(spec: string): string[] {
  try {
    loadDispatcherConfig(configYaml(spec), { file: 'c.yaml', baseDir: '/etc/keel' })
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherConfigError)
    expect((err as DispatcherConfigError).code).toBe('ERR_CONFIG_INVALID')
    return (err as DispatcherConfigError).message.split('\n')
  }
  throw new Error('expected the config to be rejected')
}

describe('loadDispatcherConfig', () => {
  it('loads the shipped example', () => {
    const path = fileURLToPath(new URL('../../../examples/dispatcher.yaml', import.meta.url))
    const config = loadDispatcherConfig(readFileSync(path, 'utf8'), { file: path })
    expect(config.providers.map((p) => p.name)).toEqual(['openai', 'anthropic'])
    expect(config.providers[1]!.endpoints).toEqual([{ url: 'http://127.0.0.1:9901', region: 'us' }])
    expect(config.permits.defaultAction).toBe('deny')
    expect(config.budgets?.projects['apollo']).toEqual({ limitMicroUsd: 25_000_000, period: 'month' })
    expect(config.reviewers[0]!.name).toBe('alice')
  })

  it('normalizes endpoints and resolves credential files against the config directory', () => {
    const c = loadDispatcherConfig(
      configYaml(`  providers:\n    - { name: p, format: openai, endpoints: ["https://api.example.com/v1/"], credential: { file: keys/p.key } }\n`),
      { file: 'c.yaml', baseDir: '/etc/keel' },
    )
    expect(c.providers[0]!.endpoints[0]!.url).toBe('https://api.example.com/v1')
    expect(c.providers[0]!.credential).toEqual({ file: '/etc/keel/keys/p.key' })
    expect(c.permits.defaultAction).toBe('deny')
  })

  it.each([
    ['unknown top-level field', `${BASE_PROVIDERS}  rulez: []\n`, /c\.yaml:\d+:3: spec\.rulez: unknown field "rulez"/],
    ['unknown rule field with its line and column', `${BASE_PROVIDERS}  permits:\n    rules:\n      - { name: a, action: allow, extra: 1 }\n`, /c\.yaml:18:35: .*unknown field "extra"/],
    ['bad action', `${BASE_PROVIDERS}  permits:\n    rules:\n      - { name: a, action: permit }\n`, /expected one of allow, deny, throttle, challenge/],
    ['challenge reviewer not declared', `${BASE_PROVIDERS}  permits:\n    rules:\n      - { name: a, action: challenge, reviewers: [mallory] }\n`, /reviewer "mallory" is not declared/],
    ['endpoint with credentials', `  providers:\n    - { name: p, format: openai, endpoints: ["https://u:p@x.example/v1"], credential: { env: K } }\n`, /must not carry credentials/],
    ['endpoint not http', `  providers:\n    - { name: p, format: openai, endpoints: ["file:///etc/passwd"], credential: { env: K } }\n`, /must be http\(s\)/],
    ['both env and file', `  providers:\n    - { name: p, format: openai, endpoints: ["https://x/v1"], credential: { env: K, file: f } }\n`, /exactly one of "env" or "file"/],
    ['no providers', `  providers: []\n`, /at least one provider/],
    ['budgets without pricing', `${BASE_PROVIDERS}  budgets: { projects: { a: { limitUsd: 1 } } }\n`, /budgets need a price table/],
    ['throttle without window or retry', `${BASE_PROVIDERS}  permits:\n    rules:\n      - { name: a, action: throttle }\n`, /needs a capacity "window"/],
    ['bad window time', `${BASE_PROVIDERS}  permits:\n    rules:\n      - { name: a, action: throttle, window: { start: "25:00", end: "10:00" } }\n`, /invalid time/],
    ['duplicate host', `  providers:\n    - { name: a, format: openai, hosts: [x.com], endpoints: ["https://x/v1"], credential: { env: K } }\n    - { name: b, format: openai, hosts: [x.com], endpoints: ["https://y/v1"], credential: { env: K } }\n`, /already routed to provider "a"/],
    ['YAML syntax', `  providers: [\n`, /YAML:/],
    ['wrong kind', `${BASE_PROVIDERS}`.replace('', ''), null],
  ])('rejects %s', (_name, spec, pattern) => {
    if (pattern === null) {
      expect(() => loadDispatcherConfig(configYaml(spec).replace('DispatcherConfig', 'EgressPolicy'))).toThrow(/expected kind "DispatcherConfig"/)
      return
    }
    expect(issues(spec).join('\n')).toMatch(pattern)
  })

  describe('the prompt-firewall baseline cannot be weakened', () => {
    it.each([
      ['disable at the top', `  firewall:\n    disable: [cui_marking]\n`, /"disable" would weaken the baseline/],
      ['enabled: false on a detector', `  firewall:\n    detectors:\n      - { id: mine, pattern: x, enabled: false }\n`, /detectors cannot be switched off/],
      ['redefining a baseline id', `  firewall:\n    detectors:\n      - { id: private_key, pattern: "NEVER-MATCHES" }\n`, /"private_key" is a baseline detector/],
      ['a project override of a baseline id', `  firewall:\n    projects:\n      apollo:\n        detectors: [{ id: api_key, pattern: x }]\n`, /"api_key" is a baseline detector/],
      ['a project allowlist', `  firewall:\n    projects:\n      apollo:\n        allow: [itar_ear]\n        detectors: []\n`, /would weaken the baseline prompt firewall for project "apollo"/],
      ['an empty-matching pattern', `  firewall:\n    detectors:\n      - { id: all, pattern: ".*" }\n`, /matches the empty string/],
      ['an invalid regex', `  firewall:\n    detectors:\n      - { id: bad, pattern: "(" }\n`, /invalid regular expression/],
    ])('%s', (_name, extra, pattern) => {
      expect(issues(BASE_PROVIDERS + extra).join('\n')).toMatch(pattern)
    })
  })

  it('reports every issue, sorted by position', () => {
    const lines = issues(`${BASE_PROVIDERS}  permits:\n    defaultAction: maybe\n    rules:\n      - { name: a, action: nope }\n  bogus: 1\n`)
    expect(lines.length).toBeGreaterThanOrEqual(3)
    const positions = lines.map((l) => Number(/c\.yaml:(\d+):/.exec(l)![1]))
    expect([...positions].sort((a, b) => a - b)).toEqual(positions)
  })
})
