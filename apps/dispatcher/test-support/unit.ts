/**
 * Helpers for the unit tests (outside src/, so never built or shipped).
 * A canned upstream (`fakeFetch`) answers in each wire format without a socket.
 */
import { loadDispatcherConfig } from '../src/config.js'
import type { DispatcherConfig } from '../src/types.js'

export const OPENAI_KEY = 'sk-real-openai-key-0123456789abcdef'
export const ANTHROPIC_KEY = 'sk-ant-real-anthropic-key-0123456789'
export const ALICE_TOKEN = 'alice-token-0123456789'
export const BOB_TOKEN = 'bob-token-0123456789'

export function configYaml(spec: string): string {
  return `apiVersion: keel.dev/v1alpha1\nkind: DispatcherConfig\nmetadata: { name: unit }\nspec:\n${spec}`
}

export const BASE_PROVIDERS = `  providers:
    - name: openai
      format: openai
      hosts: [api.openai.com]
      endpoints: [{ url: "http://primary.test/v1", region: us }, { url: "http://secondary.test/v1", region: us }]
      credential: { env: KEEL_TEST_OPENAI }
    - name: anthropic
      format: anthropic
      hosts: [api.anthropic.com]
      endpoints: ["http://anthropic.test"]
      credential: { env: KEEL_TEST_ANTHROPIC }
`

export function loadSpec(spec: string): DispatcherConfig {
  return loadDispatcherConfig(configYaml(spec), { file: 'unit.yaml', baseDir: '/tmp' })
}

export interface FetchCall {
  url: string
  headers: Headers
  body: string
}

export interface FakeFetch {
  fetch: typeof fetch
  calls: FetchCall[]
  /** Answer the next calls with these (status or 'throw'). */
  queue: Array<number | 'throw'>
  omitUsage: boolean
}

const encoder = new TextEncoder()

/** A canned upstream speaking each wire format, JSON and SSE. */
export function fakeFetch(): FakeFetch {
  const state: FakeFetch = { calls: [], queue: [], omitUsage: false, fetch: undefined as unknown as typeof fetch }
  state.fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input)
    const headers = new Headers(init?.headers)
    const body = init?.body instanceof Uint8Array ? new TextDecoder().decode(init.body) : String(init?.body ?? '')
    state.calls.push({ url, headers, body })
    const next = state.queue.shift()
    if (next === 'throw') throw new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) })
    if (typeof next === 'number') return new Response(JSON.stringify({ error: { message: `upstream ${next}` } }), { status: next, headers: { 'content-type': 'application/json' } })
    const req = JSON.parse(body) as Record<string, unknown>
    const stream = req['stream'] === true
    if (url.endsWith('/v1/messages')) {
      if (!stream) {
        return Response.json({ id: 'msg_1', type: 'message', role: 'assistant', model: req['model'], content: [{ type: 'text', text: 'hi' }], stop_reason: 'end_turn', stop_sequence: null, ...(state.omitUsage ? {} : { usage: { input_tokens: 10, output_tokens: 5 } }) })
      }
      const events = [
        ['message_start', { type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', content: [], model: req['model'], usage: { input_tokens: 10, output_tokens: 1 } } }],
        ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'hi' } }],
        ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 5 } }],
        ['message_stop', { type: 'message_stop' }],
      ] as const
      const text = events.map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join('')
      return new Response(encoder.encode(text), { headers: { 'content-type': 'text/event-stream' } })
    }
    if (!stream) {
      return Response.json({ id: 'chatcmpl-1', object: 'chat.completion', model: req['model'], choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }], ...(state.omitUsage ? {} : { usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } }) })
    }
    const include = (req['stream_options'] as { include_usage?: boolean } | undefined)?.include_usage === true
    const chunks = [
      { id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'hi' } }] },
      ...(include && !state.omitUsage ? [{ id: 'c', object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } }] : []),
    ]
    const text = chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n'
    return new Response(encoder.encode(text), { headers: { 'content-type': 'text/event-stream' } })
  }) as typeof fetch
  return state
}
