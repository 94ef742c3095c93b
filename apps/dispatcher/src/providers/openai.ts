/**
 * OpenAI-compatible wire format: chat completions, responses, embeddings.
 *
 * Usage:
 * - chat completions JSON: `usage.prompt_tokens` / `usage.completion_tokens`; streamed, only
 *   when `stream_options.include_usage` is true, in a final chunk with `choices: []` before
 *   `data: [DONE]`. keel sets `include_usage: true` when the request leaves it out, so it can
 *   settle (the client then sees that documented extra chunk). An explicit `false` is respected
 *   and the call settles at its reserved worst case.
 * - responses: `usage.input_tokens` / `usage.output_tokens`; streamed in the `response`
 *   object of `response.completed` (or `response.incomplete` / `response.failed`).
 * - embeddings: `usage.prompt_tokens`; no output tokens.
 */
import type { RouteKind } from '../types.js'
import { isObject, num, positiveInt, type StreamUsageTracker, type Usage, type WireFormatAdapter } from './types.js'

const ROUTES: Readonly<Record<string, RouteKind>> = {
  '/v1/chat/completions': 'chat.completions',
  '/v1/responses': 'responses',
  '/v1/embeddings': 'embeddings',
}

const RESPONSE_DONE_EVENTS = new Set(['response.completed', 'response.incomplete', 'response.failed'])

function chatUsage(u: unknown): Usage | undefined {
  if (!isObject(u)) return undefined
  return { inputTokens: num(u['prompt_tokens']), outputTokens: num(u['completion_tokens']) }
}

function responsesUsage(u: unknown): Usage | undefined {
  if (!isObject(u)) return undefined
  return { inputTokens: num(u['input_tokens']), outputTokens: num(u['output_tokens']) }
}

export const openAiAdapter: WireFormatAdapter = {
  format: 'openai',
  credentialHeaders: ['authorization', 'api-key', 'x-api-key'],

  routeFor(path) {
    return ROUTES[path]
  },

  upstreamPath(route) {
    switch (route) {
      case 'chat.completions':
        return '/chat/completions'
      case 'responses':
        return '/responses'
      case 'embeddings':
        return '/embeddings'
      case 'messages':
        return '/messages'
      default: {
        const _exhaustive: never = route
        return _exhaustive
      }
    }
  },

  facts(route, body) {
    if (!isObject(body) || typeof body['model'] !== 'string' || body['model'] === '') return undefined
    const model = body['model']
    const stream = body['stream'] === true
    let max: number | undefined
    if (route === 'chat.completions') max = positiveInt(body['max_completion_tokens']) ?? positiveInt(body['max_tokens'])
    else if (route === 'responses') max = positiveInt(body['max_output_tokens'])
    else if (route === 'embeddings') return { model, stream: false, maxOutputTokens: 0 }
    else return undefined
    return max === undefined ? { model, stream } : { model, stream, maxOutputTokens: max }
  },

  prepareBody(route, body) {
    if (route !== 'chat.completions' || body['stream'] !== true) return undefined
    const opts = body['stream_options']
    if (isObject(opts) && 'include_usage' in opts) return undefined
    return { ...body, stream_options: { ...(isObject(opts) ? opts : {}), include_usage: true } }
  },

  usageFromJson(route, body) {
    if (!isObject(body)) return undefined
    return route === 'responses' ? responsesUsage(body['usage']) : chatUsage(body['usage'])
  },

  streamUsage(route): StreamUsageTracker {
    let usage: Usage | undefined
    return {
      onEvent(event, data) {
        // Parse only the events that can carry usage; content deltas are skipped cheaply.
        if (!data.includes('"usage"')) return
        if (route === 'responses') {
          if (event !== undefined && !RESPONSE_DONE_EVENTS.has(event)) return
          const parsed = safeParse(data)
          if (!isObject(parsed)) return
          const type = parsed['type']
          if (typeof type === 'string' && !RESPONSE_DONE_EVENTS.has(type)) return
          const response = parsed['response']
          if (isObject(response)) usage = responsesUsage(response['usage']) ?? usage
          return
        }
        const parsed = safeParse(data)
        if (isObject(parsed)) usage = chatUsage(parsed['usage']) ?? usage
      },
      usage: () => usage,
    }
  },

  authHeaders(key) {
    return { authorization: `Bearer ${key}` }
  },
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}
