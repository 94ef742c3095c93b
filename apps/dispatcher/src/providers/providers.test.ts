import { describe, expect, it } from 'vitest'
import { anthropicAdapter } from './anthropic.js'
import { openAiAdapter } from './openai.js'
import { createSseParser } from './sse.js'

function feed(text: string, splitEvery: number, parser = createSseParser(() => {})): void {
  const bytes = new TextEncoder().encode(text)
  for (let i = 0; i < bytes.length; i += splitEvery) parser.push(bytes.subarray(i, i + splitEvery))
  parser.end()
}

describe('SSE parser', () => {
  it.each([1, 2, 3, 7, 1000])('parses events split every %i bytes, with CRLF, CR, comments and multi-line data', (n) => {
    const seen: Array<[string | undefined, string]> = []
    const text = ': comment\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: two\rdata: lines\r\rdata: é✓\n\n'
    feed(text, n, createSseParser((e, d) => seen.push([e, d])))
    expect(seen).toEqual([
      ['a', '{"x":\n1}'],
      [undefined, 'two\nlines'],
      [undefined, 'é✓'],
    ])
  })
})

function streamUsage(adapter: typeof openAiAdapter, route: Parameters<typeof openAiAdapter.streamUsage>[0], text: string) {
  const t = adapter.streamUsage(route)
  feed(text, 5, createSseParser((e, d) => t.onEvent(e, d)))
  return t.usage()
}

describe('OpenAI wire format', () => {
  it('reads facts from each route', () => {
    expect(openAiAdapter.facts('chat.completions', { model: 'm', max_completion_tokens: 5, max_tokens: 9 })).toEqual({ model: 'm', stream: false, maxOutputTokens: 5 })
    expect(openAiAdapter.facts('responses', { model: 'm', stream: true, max_output_tokens: 7 })).toEqual({ model: 'm', stream: true, maxOutputTokens: 7 })
    expect(openAiAdapter.facts('embeddings', { model: 'e', input: 'x' })).toEqual({ model: 'e', stream: false, maxOutputTokens: 0 })
    expect(openAiAdapter.facts('chat.completions', { messages: [] })).toBeUndefined()
  })

  it('asks for streamed usage only when the client left it out', () => {
    expect(openAiAdapter.prepareBody('chat.completions', { model: 'm', stream: true })).toEqual({ model: 'm', stream: true, stream_options: { include_usage: true } })
    expect(openAiAdapter.prepareBody('chat.completions', { model: 'm', stream: true, stream_options: { include_usage: false } })).toBeUndefined()
    expect(openAiAdapter.prepareBody('chat.completions', { model: 'm' })).toBeUndefined()
    expect(openAiAdapter.prepareBody('responses', { model: 'm', stream: true })).toBeUndefined()
  })

  it('reads usage from the final chat chunk and from response.completed', () => {
    const chat = 'data: {"choices":[{"delta":{"content":"usage"}}],"usage":null}\n\ndata: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7}}\n\ndata: [DONE]\n\n'
    expect(streamUsage(openAiAdapter, 'chat.completions', chat)).toEqual({ inputTokens: 11, outputTokens: 7 })
    const resp = 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"\\"usage\\""}\n\nevent: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":4}}}\n\n'
    expect(streamUsage(openAiAdapter, 'responses', resp)).toEqual({ inputTokens: 3, outputTokens: 4 })
    expect(openAiAdapter.usageFromJson('embeddings', { usage: { prompt_tokens: 9, total_tokens: 9 } })).toEqual({ inputTokens: 9, outputTokens: 0 })
  })
})

describe('Anthropic wire format', () => {
  it('reads input from message_start and the last cumulative output from message_delta', () => {
    const text = [
      'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n',
      'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}\n\n',
      'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n\n',
      'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n',
    ].join('')
    expect(streamUsage(anthropicAdapter, 'messages', text)).toEqual({ inputTokens: 25, outputTokens: 9 })
  })

  it('uses x-api-key and requires max_tokens for a bounded worst case', () => {
    expect(anthropicAdapter.authHeaders('k')).toEqual({ 'x-api-key': 'k' })
    expect(anthropicAdapter.facts('messages', { model: 'c', max_tokens: 10 })).toEqual({ model: 'c', stream: false, maxOutputTokens: 10 })
    expect(anthropicAdapter.facts('messages', { model: 'c' })).toEqual({ model: 'c', stream: false })
  })
})
