/**
 * Budgets per project and per agent: reserve the worst-case cost before the call, deny
 * when it would exceed (`budget_exceeded`), and leave settlement to the dispatch step,
 * which books the actual cost from the provider's usage. A model without a price entry is
 * denied while budgets apply (`price_unknown`, fail-closed).
 *
 * In `check` mode (POST /v1/permits) nothing is reserved: the permit only says the call
 * would fit now; the reservation happens when the call is dispatched.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { CallContext, Env, Runtime } from '../env.js'
import type { BudgetKey } from '../budget/ledger.js'
import { priceFor, worstCaseMicroUsd } from '../budget/pricing.js'

export interface BudgetOptions {
  runtime: Runtime
  mode: 'reserve' | 'check'
}

const usd = (micro: number): string => `$${(micro / 1_000_000).toFixed(micro < 10_000 ? 6 : 2)}`

/** The budget keys that apply to a call (none when budgets are off or no limit applies). */
export function budgetKeys(runtime: Runtime, call: CallContext): BudgetKey[] {
  const b = runtime.config.budgets
  if (!b) return []
  const keys: BudgetKey[] = []
  const p = b.projects[call.attrs.project] ?? b.defaultProject
  if (p) keys.push({ scope: 'project', id: call.attrs.project, limit: p })
  const a = b.agents[call.attrs.agent] ?? b.defaultAgent
  if (a) keys.push({ scope: 'agent', id: call.attrs.agent, limit: a })
  return keys
}

export function budget(options: BudgetOptions): MiddlewareHandler<Env> {
  const { runtime, mode } = options
  return createMiddleware<Env>(async function budget(c, next) {
    const call = c.get('call')
    const keys = budgetKeys(runtime, call)
    if (keys.length === 0) return next()
    const price = priceFor(runtime.config.pricing, call.facts.model)
    if (!price) {
      throw new DispatchError(DispatchReason.PRICE_UNKNOWN, `keel denied this call: model "${call.facts.model}" has no price entry, so its cost cannot be bounded against the budget. Use a priced model or ask an operator to add one.`, {
        data: { model: call.facts.model },
      })
    }
    const amount = worstCaseMicroUsd(price, call.raw.byteLength, call.facts.maxOutputTokens)
    call.price = price
    call.worstCaseMicroUsd = amount
    const now = runtime.now()
    const result = mode === 'reserve' ? runtime.ledger.reserve(keys, amount, now) : runtime.ledger.check(keys, amount, now)
    if (!result.ok) {
      throw new DispatchError(
        DispatchReason.BUDGET_EXCEEDED,
        `keel denied this call: the ${result.scope} "${result.id}" budget would be exceeded (limit ${usd(result.limitMicroUsd)}, spent ${usd(result.spentMicroUsd)}, in flight ${usd(result.reservedMicroUsd)}; this call may cost up to ${usd(amount)}). Lower max tokens or shorten the prompt, or ask an operator to raise the budget.`,
        {
          data: { scope: result.scope, id: result.id, bucket: result.bucket, limitMicroUsd: result.limitMicroUsd, spentMicroUsd: result.spentMicroUsd, reservedMicroUsd: result.reservedMicroUsd, worstCaseMicroUsd: amount },
        },
      )
    }
    if (mode === 'check') return next()
    call.reservation = result.reservation
    try {
      await next()
    } finally {
      // Dispatch settles or releases; if a later step failed before it could, release here.
      if (c.error !== undefined) runtime.ledger.release(result.reservation.id, runtime.now())
    }
  })
}
