import type { WireFormat } from '../types.js'
import { anthropicAdapter } from './anthropic.js'
import { openAiAdapter } from './openai.js'
import type { WireFormatAdapter } from './types.js'

export { anthropicAdapter } from './anthropic.js'
export { openAiAdapter } from './openai.js'
export { createSseParser } from './sse.js'
export type { SseHandler, SseParser } from './sse.js'
export type { RequestFacts, StreamUsageTracker, Usage, WireFormatAdapter } from './types.js'

export const ADAPTERS: Readonly<Record<WireFormat, WireFormatAdapter>> = {
  openai: openAiAdapter,
  anthropic: anthropicAdapter,
}
