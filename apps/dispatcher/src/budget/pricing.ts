/**
 * Cost in integer micro-dollars from a price table.
 *
 * Worst case before the call: input tokens are bounded by the request body's byte length
 * (a byte-level BPE token covers at least one byte, and the JSON envelope is larger than
 * the per-message token overhead), output by the request's max tokens or, when it sets
 * none, the model's `maxOutputTokens` from the table. Actual after the call: the
 * provider's reported usage.
 */
import type { PriceEntry } from '../types.js'

export function priceFor(pricing: readonly PriceEntry[], model: string): PriceEntry | undefined {
  for (const p of pricing) if (p.match(model)) return p
  return undefined
}

/** USD per million tokens × tokens = micro-dollars. Rounded up: budgets never under-count. */
export function costMicroUsd(price: PriceEntry, inputTokens: number, outputTokens: number): number {
  return Math.ceil(inputTokens * price.inputPerMTok + outputTokens * price.outputPerMTok)
}

export function worstCaseMicroUsd(price: PriceEntry, bodyBytes: number, maxOutputTokens: number | undefined): number {
  return costMicroUsd(price, bodyBytes, maxOutputTokens ?? price.maxOutputTokens)
}
