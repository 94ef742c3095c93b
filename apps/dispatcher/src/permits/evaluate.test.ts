import { describe, expect, it } from 'vitest'
import { evaluatePermit, windowRemainingSeconds } from './evaluate.js'
import type { PermitAttributes } from '../types.js'
import { BASE_PROVIDERS, loadSpec } from '../../test-support/unit.js'

const config = loadSpec(`${BASE_PROVIDERS}  reviewers: [{ name: alice, token: { env: A } }]
  permits:
    rules:
      - { name: no-cui-openai, when: { dataClass: [cui], provider: [openai] }, action: deny }
      - { name: itar, when: { exportControl: [ITAR, "EAR*"] }, action: challenge, reviewers: [alice], timeoutSeconds: 60 }
      - { name: night-batch, when: { priority: [low] }, window: { days: [mon, tue, wed, thu, fri], start: "22:00", end: "06:00" }, action: throttle }
      - { name: eu-only-program, when: { program: [apollo], region: ["eu-*"] }, action: allow }
      - { name: apollo-elsewhere, when: { program: [apollo] }, action: deny, message: "apollo stays in the EU" }
      - { name: project-attr, when: { attributes: { ticket: ["SEC-*"] } }, action: allow }
      - { name: gpt, when: { model: ["gpt-4o*"], route: [chat.completions, responses] }, action: allow }
`).permits

const base: PermitAttributes = { provider: 'openai', model: 'gpt-4o-mini', agent: 'coder', project: 'p', route: 'chat.completions', region: 'us', attributes: {} }
// Monday 2026-01-05 12:00 UTC
const MON_NOON = Date.UTC(2026, 0, 5, 12, 0)
const MON_2300 = Date.UTC(2026, 0, 5, 23, 0)
const SAT_0100 = Date.UTC(2026, 0, 10, 1, 0) // opened Friday 22:00
const SUN_2300 = Date.UTC(2026, 0, 11, 23, 0)

describe('evaluatePermit', () => {
  it.each([
    ['allow by model glob', {}, MON_NOON, 'allow', 'permit_allowed', 'gpt'],
    ['deny: data class is case-insensitive', { dataClass: 'CUI' }, MON_NOON, 'deny', 'permit_denied_rule', 'no-cui-openai'],
    ['deny rule does not apply to another provider → default deny for unknown model', { dataClass: 'CUI', provider: 'anthropic', model: 'claude' }, MON_NOON, 'deny', 'permit_default_deny', undefined],
    ['challenge with a glob value', { exportControl: 'EAR99' }, MON_NOON, 'challenge', 'challenge_pending', 'itar'],
    ['throttle inside a window that crosses midnight', { priority: 'low' }, MON_2300, 'throttle', 'throttled_capacity_window', 'night-batch'],
    ['throttle after midnight of a window opened Friday', { priority: 'low' }, SAT_0100, 'throttle', 'throttled_capacity_window', 'night-batch'],
    ['no throttle outside the window', { priority: 'low' }, MON_NOON, 'allow', 'permit_allowed', 'gpt'],
    ['no throttle on a window that opens on Sunday (not listed)', { priority: 'low' }, SUN_2300, 'allow', 'permit_allowed', 'gpt'],
    ['region: allowed in eu', { program: 'apollo', region: 'eu-west-1' }, MON_NOON, 'allow', 'permit_allowed', 'eu-only-program'],
    ['region: denied elsewhere', { program: 'apollo' }, MON_NOON, 'deny', 'permit_denied_rule', 'apollo-elsewhere'],
    ['absent attribute never matches, even "*"', { model: 'o3' }, MON_NOON, 'deny', 'permit_default_deny', undefined],
    ['x-keel-attr-* attributes', { model: 'o3', attributes: { ticket: 'SEC-42' } }, MON_NOON, 'allow', 'permit_allowed', 'project-attr'],
    ['route condition', { route: 'embeddings' }, MON_NOON, 'deny', 'permit_default_deny', undefined],
  ] as const)('%s', (_name, over, now, outcome, reason, rule) => {
    const d = evaluatePermit({ config, attrs: { ...base, ...over } as PermitAttributes, now })
    expect(d.outcome).toBe(outcome)
    expect(d.reason).toBe(reason)
    expect(d.rule).toBe(rule)
  })

  it('throttle Retry-After is the time left in the window', () => {
    const d = evaluatePermit({ config, attrs: { ...base, priority: 'low' }, now: MON_2300 })
    expect(d.retryAfterSeconds).toBe(7 * 3600)
    expect(d.message).toContain('Retry after 25200 seconds')
  })

  it('challenge carries reviewers and timeout', () => {
    const d = evaluatePermit({ config, attrs: { ...base, exportControl: 'ITAR' }, now: MON_NOON })
    expect(d).toMatchObject({ reviewers: ['alice'], timeoutSeconds: 60 })
  })

  it('a custom deny message is returned as is', () => {
    expect(evaluatePermit({ config, attrs: { ...base, program: 'apollo' }, now: MON_NOON }).message).toBe('apollo stays in the EU')
  })

  it('windowRemainingSeconds honours the UTC offset', () => {
    const w = { startMinute: 9 * 60, endMinute: 17 * 60, utcOffsetMinutes: 120 }
    expect(windowRemainingSeconds(w, Date.UTC(2026, 0, 5, 6, 59))).toBeUndefined()
    expect(windowRemainingSeconds(w, Date.UTC(2026, 0, 5, 7, 0))).toBe(8 * 3600)
  })

  it('evaluates in well under 1 ms (median of 2,000 runs)', () => {
    const attrs = { ...base, dataClass: 'internal', attributes: { ticket: 'X-1' } }
    const times: number[] = []
    for (let i = 0; i < 2000; i++) {
      const t = performance.now()
      evaluatePermit({ config, attrs, now: MON_NOON })
      times.push(performance.now() - t)
    }
    times.sort((a, b) => a - b)
    expect(times[1000]!).toBeLessThan(1)
  })
})
