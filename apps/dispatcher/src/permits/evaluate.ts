/**
 * Permit rule evaluation: pure, synchronous, allocation-light (well under 1 ms; see
 * bench/dispatcher). Rules are tried in order and the first one whose `when` matches
 * (and, for rules with a capacity `window`, whose window is open at `now`) decides.
 * No match → `defaultAction` (deny unless the config says otherwise).
 *
 * A deny is a return value; this function never throws for a valid config. The caller
 * still wraps it: anything that throws is denied with `policy_unavailable` (fail-closed).
 */
import { DispatchReason } from '@keel/core'
import type { CapacityWindow, PermitAttributes, PermitRule, PermitsConfig, RuleAction } from '../types.js'

export interface PermitDecision {
  outcome: RuleAction
  reason: DispatchReason
  /** The deciding rule; absent for the default. */
  rule?: string
  /** For deny / throttle: a message a model can act on. */
  message: string
  retryAfterSeconds?: number
  reviewers?: readonly string[]
  timeoutSeconds?: number
}

export interface EvaluateArgs {
  config: PermitsConfig
  attrs: PermitAttributes
  /** Milliseconds since the epoch. */
  now: number
}

const MINUTES_PER_DAY = 24 * 60

function attrValue(attrs: PermitAttributes, key: PermitRule['when'][number]['key']): string | undefined {
  switch (key) {
    case 'provider':
      return attrs.provider
    case 'model':
      return attrs.model
    case 'region':
      return attrs.region
    case 'agent':
      return attrs.agent
    case 'project':
      return attrs.project
    case 'route':
      return attrs.route
    case 'dataClass':
      return attrs.dataClass
    case 'program':
      return attrs.program
    case 'exportControl':
      return attrs.exportControl
    case 'priority':
      return attrs.priority
    default:
      return attrs.attributes[key.slice('attributes.'.length)]
  }
}

/**
 * Whether the window is open at `now`, and if so how many seconds remain.
 * A window whose start is after its end crosses midnight; its `days` name the day it opens.
 */
export function windowRemainingSeconds(w: CapacityWindow, now: number): number | undefined {
  const local = now + w.utcOffsetMinutes * 60_000
  const dayMs = 86_400_000
  const dayIndex = Math.floor(local / dayMs)
  const msOfDay = local - dayIndex * dayMs
  const minute = msOfDay / 60_000
  const weekday = (dayIndex + 4) % 7 // 1970-01-01 was a Thursday
  let openedOn: number
  let endsInMinutes: number
  if (w.startMinute < w.endMinute) {
    if (minute < w.startMinute || minute >= w.endMinute) return undefined
    openedOn = weekday
    endsInMinutes = w.endMinute - minute
  } else if (minute >= w.startMinute) {
    openedOn = weekday
    endsInMinutes = MINUTES_PER_DAY - minute + w.endMinute
  } else if (minute < w.endMinute) {
    openedOn = (weekday + 6) % 7
    endsInMinutes = w.endMinute - minute
  } else return undefined
  if (w.days !== undefined && !w.days.includes(openedOn)) return undefined
  return Math.max(1, Math.ceil(endsInMinutes * 60))
}

function describe(attrs: PermitAttributes): string {
  const parts = [`provider "${attrs.provider}"`, `model "${attrs.model}"`, `agent "${attrs.agent}"`, `project "${attrs.project}"`]
  if (attrs.dataClass !== undefined) parts.push(`data class "${attrs.dataClass}"`)
  if (attrs.exportControl !== undefined) parts.push(`export control "${attrs.exportControl}"`)
  if (attrs.program !== undefined) parts.push(`program "${attrs.program}"`)
  return parts.join(', ')
}

/** Evaluates the permit rules for one call. Precondition: `config` came from loadDispatcherConfig. */
export function evaluatePermit({ config, attrs, now }: EvaluateArgs): PermitDecision {
  rules: for (const rule of config.rules) {
    for (const cond of rule.when) {
      if (!cond.test(attrValue(attrs, cond.key))) continue rules
    }
    let remaining: number | undefined
    if (rule.window !== undefined) {
      remaining = windowRemainingSeconds(rule.window, now)
      if (remaining === undefined) continue
    }
    switch (rule.action) {
      case 'allow':
        return { outcome: 'allow', reason: DispatchReason.PERMIT_ALLOWED, rule: rule.name, message: `allowed by permit rule "${rule.name}"` }
      case 'deny':
        return {
          outcome: 'deny',
          reason: DispatchReason.PERMIT_DENIED_RULE,
          rule: rule.name,
          message:
            rule.message ??
            `keel denied this call: permit rule "${rule.name}" forbids ${describe(attrs)}. Do not retry the same request; use another provider or model, remove the restricted data, or ask an operator.`,
        }
      case 'throttle': {
        const retryAfterSeconds = rule.retryAfterSeconds ?? remaining ?? 60
        return {
          outcome: 'throttle',
          reason: DispatchReason.THROTTLED_CAPACITY_WINDOW,
          rule: rule.name,
          retryAfterSeconds,
          message:
            rule.message ??
            `keel throttled this call: permit rule "${rule.name}" holds back this work during a capacity window. Retry after ${retryAfterSeconds} seconds.`,
        }
      }
      case 'challenge':
        return {
          outcome: 'challenge',
          reason: DispatchReason.CHALLENGE_PENDING,
          rule: rule.name,
          reviewers: rule.reviewers ?? [],
          timeoutSeconds: rule.timeoutSeconds ?? 300,
          message: rule.message ?? `keel is holding this call for review by ${(rule.reviewers ?? []).join(', ')} (permit rule "${rule.name}").`,
        }
      default: {
        const _exhaustive: never = rule.action
        return _exhaustive
      }
    }
  }
  if (config.defaultAction === 'allow') {
    return { outcome: 'allow', reason: DispatchReason.PERMIT_ALLOWED, message: 'allowed by defaultAction' }
  }
  return {
    outcome: 'deny',
    reason: DispatchReason.PERMIT_DEFAULT_DENY,
    message: `keel denied this call: no permit rule allows ${describe(attrs)}. Do not retry; ask an operator to add a permit rule for this provider and model.`,
  }
}
