/**
 * The permit decision for a call without a permit-first permit: evaluate the rules
 * (pure, see permits/evaluate.ts) and act on the outcome.
 *
 * - allow: continue;
 * - deny: 403 with the reason and a message a model can act on;
 * - throttle: 429 with Retry-After;
 * - challenge: hold the call until a named reviewer attests (approve → continue,
 *   reject → `challenge_rejected`) or the timeout passes (`challenge_timeout`).
 *
 * Fail-closed: if evaluation throws, the call is denied with `policy_unavailable`.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { DispatchEvent, DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { CallContext, Env, Runtime } from '../env.js'
import { evaluatePermit, type PermitDecision } from '../permits/evaluate.js'

export interface PermitOptions {
  runtime: Runtime
}

/** The attributes a reviewer sees: never the prompt. */
export function challengeSubject(call: CallContext): Record<string, unknown> {
  const a = call.attrs
  const s: Record<string, unknown> = { provider: a.provider, model: a.model, route: a.route, agent: a.agent, project: a.project }
  if (a.region !== undefined) s['region'] = a.region
  if (a.dataClass !== undefined) s['dataClass'] = a.dataClass
  if (a.program !== undefined) s['program'] = a.program
  if (a.exportControl !== undefined) s['exportControl'] = a.exportControl
  if (a.priority !== undefined) s['priority'] = a.priority
  if (call.facts.maxOutputTokens !== undefined) s['maxOutputTokens'] = call.facts.maxOutputTokens
  s['requestSha256'] = call.requestSha256
  return s
}

/** Evaluates, fail-closed. */
export function decide(runtime: Runtime, call: CallContext): PermitDecision {
  try {
    return evaluatePermit({ config: runtime.config.permits, attrs: call.attrs, now: runtime.now() })
  } catch (err) {
    throw new DispatchError(DispatchReason.POLICY_UNAVAILABLE, 'keel could not evaluate the permit policy for this call, so it is denied (fail-closed).', { cause: err })
  }
}

/** Holds a call on a challenge; resolves on approval, throws a DispatchError otherwise. */
export async function holdForAttestation(runtime: Runtime, call: CallContext, decision: PermitDecision, signal: AbortSignal | undefined): Promise<void> {
  const timeoutMs = (decision.timeoutSeconds ?? 300) * 1000
  const opened = runtime.challenges.open({
    rule: decision.rule ?? '',
    reviewers: decision.reviewers ?? [],
    timeoutMs,
    subject: challengeSubject(call),
    ...(signal ? { signal } : {}),
  })
  const { summary } = opened
  runtime.logger.info('call held for attestation', { challengeId: summary.id, rule: summary.rule, reviewers: summary.reviewers })
  runtime.governance.recordQuiet({
    event: DispatchEvent.CHALLENGE_PENDING,
    reason: DispatchReason.CHALLENGE_PENDING,
    actor: call.attrs.agent,
    project: call.attrs.project,
    subject: summary.id,
    data: { rule: summary.rule, reviewers: summary.reviewers, expiresAt: new Date(summary.expiresAt).toISOString(), ...summary.subject },
  })
  const outcome = await opened.outcome
  const base = { actor: call.attrs.agent, project: call.attrs.project, subject: summary.id }
  switch (outcome.decision) {
    case 'approve':
      call.decision = { ...decision, outcome: 'allow', reason: DispatchReason.CHALLENGE_APPROVED, message: `approved by ${outcome.reviewer}` }
      runtime.governance.recordQuiet({
        ...base,
        event: DispatchEvent.CHALLENGE_RESOLVED,
        reason: DispatchReason.CHALLENGE_APPROVED,
        data: { rule: summary.rule, reviewer: outcome.reviewer, ...(outcome.note === undefined ? {} : { note: outcome.note }) },
      })
      return
    case 'reject':
      throw new DispatchError(
        DispatchReason.CHALLENGE_REJECTED,
        `keel denied this call: reviewer ${outcome.reviewer} rejected it (permit rule "${summary.rule}")${outcome.note ? `: ${outcome.note}` : ''}. Do not retry the same request.`,
        { subject: summary.id, data: { rule: summary.rule, reviewer: outcome.reviewer, challengeId: summary.id } },
      )
    case 'timeout':
    case 'cancelled':
      throw new DispatchError(
        DispatchReason.CHALLENGE_TIMEOUT,
        `keel denied this call: no reviewer (${summary.reviewers.join(', ')}) attested within ${Math.round(timeoutMs / 1000)} seconds (permit rule "${summary.rule}", challenge ${summary.id}).`,
        { subject: summary.id, data: { rule: summary.rule, challengeId: summary.id, cancelled: outcome.decision === 'cancelled' } },
      )
    default: {
      const _exhaustive: never = outcome
      return _exhaustive
    }
  }
}

/** Acts on a decision: returns on allow (or approved challenge), throws otherwise. */
export async function enforceDecision(runtime: Runtime, call: CallContext, decision: PermitDecision, signal: (() => AbortSignal) | undefined): Promise<void> {
  const data = decision.rule === undefined ? {} : { rule: decision.rule }
  switch (decision.outcome) {
    case 'allow':
      return
    case 'deny':
      throw new DispatchError(decision.reason, decision.message, { data })
    case 'throttle':
      throw new DispatchError(decision.reason, decision.message, {
        status: 429,
        ...(decision.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: decision.retryAfterSeconds }),
        data: { ...data, retryAfterSeconds: decision.retryAfterSeconds },
      })
    case 'challenge':
      // The signal is made only here: an AbortController per call is not free.
      return holdForAttestation(runtime, call, decision, signal?.())
    default: {
      const _exhaustive: never = decision.outcome
      return _exhaustive
    }
  }
}

export function permit(options: PermitOptions): MiddlewareHandler<Env> {
  const { runtime } = options
  return createMiddleware<Env>(async function permit(c, next) {
    const call = c.get('call')
    if (call.permit === undefined) {
      const decision = decide(runtime, call)
      call.decision = decision
      await enforceDecision(runtime, call, decision, () => call.signal)
    }
    await next()
  })
}
