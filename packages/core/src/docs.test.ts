/** The policy reference and the example stay in step with the code. */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { ALL_REASONS } from './reasons.js'
import { loadPolicy } from './policy/load.js'

const repoFile = (path: string) => readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8')

describe('docs/policy.md', () => {
  const doc = repoFile('docs/policy.md')
  it.each(ALL_REASONS.map((r) => [r]))('lists reason code %s in the reason-code table', (reason) => {
    expect(doc).toMatch(new RegExp(`^\\| \`${reason}\` \\|`, 'm'))
  })
})

describe('examples/keel.yaml', () => {
  it('is a valid policy with the DESIGN.md shape', () => {
    const policy = loadPolicy([{ path: 'examples/keel.yaml', text: repoFile('examples/keel.yaml') }])
    expect(policy.name).toBe('dev-laptop')
    expect(policy.model.routes.map((r) => r.name)).toEqual(['anthropic', 'packages', 'gists', 'app-db'])
    expect(policy.model.denyPolicies.map((d) => d.targetRef.route)).toEqual(['gists'])
  })
})
