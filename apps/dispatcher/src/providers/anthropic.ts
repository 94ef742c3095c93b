/**
 * Anthropic Messages wire format (`POST /v1/messages`).
 *
 * Usage: JSON responses carry `usage.input_tokens` (+ `cache_creation_input_tokens`,
 * `cache_read_input_tokens`) and `usage.output_tokens`. Streams carry input usage in
 * `message_start` (`message.usage`) and the cumulative output count in each
 * `message_delta` (`usage.output_tokens`); the last one wins.
 * `max_tokens` is required by the API, so the worst case is always known.
 */
import { isObject, num, positiveInt, type StreamUsageTracker, type Usage, type WireFormatAdapter } from './types.js'

function inputTokens(u: Record<string, unknown>): number {
  return num(u['input_tokens']) + num(u['cache_creation_input_tokens']) + num(u['cache_read_input_tokens'])
}

export const anthropicAdapter: WireFormatAdapter = {
  format: 'anthropic',
  credentialHeaders: ['x-api-key', 'authorization'],

  routeFor(path) {
    return path === '/v1/messages' ? 'messages' : undefined
  },

  upstreamPath() {
    return '/v1/messages'
  },

  facts(route, body) {
    if (route !== 'messages' || !isObject(body) || typeof body['model'] !== 'string' || body['model'] === '') return undefined
    const max = positiveInt(body['max_tokens'])
    const facts = { model: body['model'], stream: body['stream'] === true }
    return max === undefined ? facts : { ...facts, maxOutputTokens: max }
  },

  prepareBody() {
    return undefined
  },

  usageFromJson(_route, body) {
    if (!isObject(body) || !isObject(body['usage'])) return undefined
    const u = body['usage']
    return { inputTokens: inputTokens(u), outputTokens: num(u['output_tokens']) }
  },

  streamUsage(): StreamUsageTracker {
    let input: number | undefined
    let output: number | undefined
    return {
      onEvent(event, data) {
        if (event !== 'message_start' && event !== 'message_delta') return
        let parsed: unknown
        try {
          parsed = JSON.parse(data)
        } catch {
          return
        }
        if (!isObject(parsed)) return
        if (event === 'message_start' && isObject(parsed['message']) && isObject(parsed['message']['usage'])) {
          const u = parsed['message']['usage']
          input = inputTokens(u)
          output = num(u['output_tokens'])
        } else if (event === 'message_delta' && isObject(parsed['usage'])) {
          const u = parsed['usage']
          if (typeof u['output_tokens'] === 'number') output = num(u['output_tokens'])
          // Newer API versions repeat input usage in message_delta.
          if (typeof u['input_tokens'] === 'number') input = inputTokens(u)
        }
      },
      usage(): Usage | undefined {
        if (input === undefined && output === undefined) return undefined
        return { inputTokens: input ?? 0, outputTokens: output ?? 0 }
      },
    }
  },

  authHeaders(key) {
    return { 'x-api-key': key }
  },
}
