/**
 * The dispatcher standalone, driven by the official `openai` and `@anthropic-ai/sdk`
 * clients with a dummy key, in front of a fake provider on loopback that speaks the real
 * wire formats (JSON and SSE). Loopback only; no root needed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import OpenAI from 'openai'
import Anthropic from '@anthropic-ai/sdk'
import { ALICE_TOKEN, ANTHROPIC_KEY, DUMMY, OPENAI_KEY, SMALL_BUDGET_USD, startStack, within, type Stack } from './helpers.js'

let stack: Stack
let openai: OpenAI
let anthropic: Anthropic

beforeAll(async () => {
  stack = await startStack()
  openai = new OpenAI({ apiKey: DUMMY, baseURL: `${stack.dispatcher.url}/v1`, maxRetries: 0 })
  anthropic = new Anthropic({ apiKey: DUMMY, baseURL: stack.dispatcher.url, maxRetries: 0 })
})
afterAll(async () => {
  await stack?.close()
})
afterEach(() => {
  stack.fake.reset()
  stack.backup.reset()
})

const lastRequest = () => stack.fake.requests.at(-1)!
const settle = () => new Promise((r) => setTimeout(r, 20))
const completed = () => stack.events.filter((e) => e.event === 'dispatch.completed')

function expectRealKeyOnly(headers: Record<string, string | string[] | undefined>, format: 'openai' | 'anthropic') {
  const all = JSON.stringify(headers)
  expect(all).not.toContain(DUMMY)
  if (format === 'openai') {
    expect(headers['authorization']).toBe(`Bearer ${OPENAI_KEY}`)
    expect(headers['x-api-key']).toBeUndefined()
  } else {
    expect(headers['x-api-key']).toBe(ANTHROPIC_KEY)
    expect(headers['authorization']).toBeUndefined()
  }
  expect(headers['x-keel-permit-id']).toMatch(/^[0-9a-f-]{36}$/)
  expect(headers['x-keel-request-sha256']).toMatch(/^[0-9a-f]{64}$/)
  expect(headers['x-keel-binding']).toMatch(/^[A-Za-z0-9_-]{43}$/)
}

describe('OpenAI SDK through the dispatcher', () => {
  it('chat completions (JSON): real key injected, dummy dropped, usage settled', async () => {
    const before = stack.ledger.state('project:default:total').spentMicroUsd
    const res = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 50 })
    expect(res.choices[0]!.message.content).toContain('Hello from the keel fake provider')
    expectRealKeyOnly(lastRequest().headers, 'openai')
    await settle()
    const usage = res.usage!
    expect(stack.ledger.state('project:default:total').spentMicroUsd - before).toBe(usage.prompt_tokens * 1 + usage.completion_tokens * 2)
    expect(completed().at(-1)!.data).toMatchObject({ inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens, stream: false })
  })

  it('chat completions (stream): keel asks for usage, the SDK sees every chunk, usage settles', async () => {
    const before = stack.ledger.state('project:default:total').spentMicroUsd
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Stream please' }], stream: true, max_tokens: 50 })
    let text = ''
    let usage: OpenAI.CompletionUsage | undefined
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? ''
      if (chunk.usage) usage = chunk.usage
    }
    expect(text).toBe('Hello from the keel fake provider. This reply streams word by word.')
    expect(JSON.parse(lastRequest().body).stream_options).toEqual({ include_usage: true })
    expect(usage).toBeDefined()
    await settle()
    expect(stack.ledger.state('project:default:total').spentMicroUsd - before).toBe(usage!.prompt_tokens + usage!.completion_tokens * 2)
    expect(completed().at(-1)!.data).toMatchObject({ stream: true, outcome: 'complete', settledFrom: 'usage', outputTokens: 12 })
  })

  it('responses (JSON and stream)', async () => {
    const r = await openai.responses.create({ model: 'gpt-4o-mini', input: 'hello', max_output_tokens: 40 })
    expect(r.output_text).toContain('Hello from the keel fake provider')
    expect(r.usage?.output_tokens).toBe(12)
    const stream = await openai.responses.create({ model: 'gpt-4o-mini', input: 'hello', stream: true })
    const types: string[] = []
    for await (const ev of stream) types.push(ev.type)
    expect(types[0]).toBe('response.created')
    expect(types.at(-1)).toBe('response.completed')
    await settle()
    expect(completed().at(-1)!.data).toMatchObject({ route: 'responses', stream: true, outputTokens: 12, settledFrom: 'usage' })
  })

  it('embeddings (base64 decoded by the SDK)', async () => {
    const e = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta'] })
    expect(e.data).toHaveLength(2)
    expect(e.data[0]!.embedding).toHaveLength(8)
    expect(typeof e.data[0]!.embedding[0]).toBe('number')
    await settle()
    expect(completed().at(-1)!.data).toMatchObject({ route: 'embeddings', inputTokens: e.usage.prompt_tokens, outputTokens: 0 })
  })
})

describe('Anthropic SDK through the dispatcher', () => {
  it('messages (JSON)', async () => {
    const m = await anthropic.messages.create({ model: 'claude-3-5-haiku-latest', max_tokens: 64, messages: [{ role: 'user', content: 'Hi' }] })
    expect(m.content[0]).toMatchObject({ type: 'text' })
    expectRealKeyOnly(lastRequest().headers, 'anthropic')
    expect(lastRequest().headers['anthropic-version']).toBeDefined()
  })

  it('messages (stream): usage from message_start + message_delta settles', async () => {
    const before = stack.ledger.state('project:default:total').spentMicroUsd
    const final = await anthropic.messages.stream({ model: 'claude-3-5-haiku-latest', max_tokens: 64, messages: [{ role: 'user', content: 'Hi' }] }).finalMessage()
    expect(final.content[0]).toMatchObject({ type: 'text', text: 'Hello from the keel fake provider. This reply streams word by word.' })
    await settle()
    const { input_tokens, output_tokens } = final.usage
    expect(stack.ledger.state('project:default:total').spentMicroUsd - before).toBe(input_tokens * 3 + output_tokens * 15)
  })
})

describe('SSE pass-through', () => {
  it('OpenAI: the first chunk reaches the SDK while the provider is still streaming', async () => {
    const release = stack.fake.holdStreams()
    try {
      const stream = await within(openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true }), 5000, 'stream headers')
      const it = stream[Symbol.asyncIterator]()
      const first = await within(it.next(), 5000, 'first chunk while the provider holds the stream')
      expect(first.done).toBe(false)
      const second = await within(it.next(), 5000, 'second chunk')
      expect(second.value?.choices[0]?.delta?.content).toBe('Hello ')
      release()
      let n = 2
      for (let r = await it.next(); !r.done; r = await it.next()) n++
      expect(n).toBeGreaterThan(10)
    } finally {
      release()
    }
  })

  it('Anthropic: text deltas arrive before the provider finishes', async () => {
    const release = stack.fake.holdStreams()
    try {
      const stream = anthropic.messages.stream({ model: 'claude-3-5-haiku-latest', max_tokens: 64, messages: [{ role: 'user', content: 'x' }] })
      const firstText = new Promise<string>((resolve) => stream.on('text', (t) => resolve(t)))
      expect(await within(firstText, 5000, 'first text delta while held')).toBe('Hello ')
      release()
      await within(stream.finalMessage(), 5000, 'final message')
    } finally {
      release()
    }
  })

  it('chunks are paced by the provider, not buffered by keel', async () => {
    stack.fake.setChunkDelay(60)
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true })
    const arrivals: number[] = []
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) arrivals.push(performance.now())
    const spread = arrivals.at(-1)! - arrivals[0]!
    // 12 words, 60 ms apart: buffered delivery would put them all within a few ms.
    expect(spread).toBeGreaterThan(400)
  })
})

describe('decisions surface through the SDKs', () => {
  it('deny: 403 with the reason code and the rule message', async () => {
    const err = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-keel-data-class': 'CUI' } })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError)
    const e = err as InstanceType<typeof OpenAI.PermissionDeniedError>
    expect(e.status).toBe(403)
    expect(e.code).toBe('permit_denied_rule')
    expect(e.message).toContain('CUI may not be sent to OpenAI')
    expect(stack.fake.requests).toHaveLength(0)
  })

  it('deny (Anthropic shape): the firewall names its detector', async () => {
    const err = await anthropic.messages
      .create({ model: 'claude-3-5-haiku-latest', max_tokens: 10, messages: [{ role: 'user', content: '-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----' }] })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Anthropic.PermissionDeniedError)
    const e = err as InstanceType<typeof Anthropic.PermissionDeniedError>
    expect(e.message).toContain('private_key')
    expect((e.error as { error: { code: string } }).error.code).toBe('firewall_blocked')
    expect(stack.events.at(-1)).toMatchObject({ reason: 'firewall_blocked', data: { detector: 'private_key' } })
  })

  it('throttle: 429 with Retry-After', async () => {
    const err = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-keel-priority': 'low' } })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    const e = err as InstanceType<typeof OpenAI.RateLimitError>
    expect(e.headers?.get('retry-after')).toBe('30')
    expect(e.code).toBe('throttled_capacity_window')
  })

  it('challenge: held until alice approves through the attestation API', async () => {
    const call = openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-keel-export-control': 'ITAR' } })
    let id: string | undefined
    for (let i = 0; i < 100 && id === undefined; i++) {
      const res = await fetch(`${stack.dispatcher.url}/v1/challenges`, { headers: { authorization: `Bearer ${ALICE_TOKEN}` } })
      id = ((await res.json()) as { challenges: Array<{ id: string }> }).challenges[0]?.id
      if (id === undefined) await new Promise((r) => setTimeout(r, 10))
    }
    expect(id).toBeDefined()
    expect(stack.fake.requests).toHaveLength(0)
    const attest = await fetch(`${stack.dispatcher.url}/v1/attestations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ALICE_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ challengeId: id, reviewer: 'alice', decision: 'approve' }),
    })
    expect(attest.status).toBe(200)
    const res = await within(call, 5000, 'held call after approval')
    expect(res.choices[0]!.message.content).toContain('Hello')
    expect(stack.events.map((e) => e.event)).toEqual(expect.arrayContaining(['permit.challenge_pending', 'attestation.recorded', 'permit.challenge_resolved']))
  })

  it('provider_endpoint_not_allowed for an upstream that is not allowlisted', async () => {
    const err = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-keel-upstream': 'http://127.0.0.2:9/v1' } })
      .catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('provider_endpoint_not_allowed')
    expect(stack.events.at(-1)).toMatchObject({ event: 'provider_endpoint_not_allowed' })
  })
})

describe('budgets', () => {
  it('N concurrent calls whose worst cases exceed the budget: exactly floor(limit / worst) admitted, none overspend', async () => {
    const release = stack.fake.holdStreams()
    const limit = Math.round(SMALL_BUDGET_USD * 1e6)
    const params = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'budget' }], max_tokens: 500, stream: true as const }
    const startEvents = stack.events.length
    const settled = await Promise.allSettled(Array.from({ length: 8 }, () => openai.chat.completions.create(params, { headers: { 'x-keel-project': 'small' } })))
    const admitted = settled.filter((s) => s.status === 'fulfilled')
    const denied = settled.filter((s) => s.status === 'rejected')
    const worst = stack.events.slice(startEvents).find((e) => e.event === 'dispatch.egress_bound')!.data!['worstCaseMicroUsd'] as number
    expect(admitted).toHaveLength(Math.floor(limit / worst))
    expect(admitted.length).toBe(3)
    for (const d of denied) expect(((d as PromiseRejectedResult).reason as { code: string }).code).toBe('budget_exceeded')
    const held = stack.ledger.state('project:small:total')
    expect(held.reservedMicroUsd + held.spentMicroUsd).toBeLessThanOrEqual(limit)
    release()
    for (const a of admitted) for await (const _ of (a as PromiseFulfilledResult<AsyncIterable<unknown>>).value) void _
    await settle()
    const after = stack.ledger.state('project:small:total')
    expect(after.reservedMicroUsd).toBe(0)
    expect(after.spentMicroUsd).toBeLessThanOrEqual(limit)
    expect(after.spentMicroUsd).toBeGreaterThan(0)
  })
})

describe('fallback and permit-first', () => {
  it('falls back to the next allowlisted endpoint and records the rebinding', async () => {
    stack.fake.failNext(503)
    const res = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] })
    expect(res.choices[0]!.message.content).toContain('Hello')
    expect(stack.backup.requests).toHaveLength(1)
    const rebound = stack.events.filter((e) => e.event === 'permit.binding_rebound_on_fallback').at(-1)!
    expect(rebound.data).toMatchObject({ from: stack.fake.openaiBaseUrl, to: stack.backup.openaiBaseUrl })
    expect(stack.backup.requests[0]!.headers['x-keel-permit-id']).toBe(stack.fake.requests[0]!.headers['x-keel-permit-id'])
  })

  it('POST /v1/permits, then the SDK call carrying the permit; a changed body is refused', async () => {
    const params = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'permit me' }], max_tokens: 20 }
    const res = await fetch(`${stack.dispatcher.url}/v1/permits?target=/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-keel-binding-key': 'sess-1' },
      body: JSON.stringify(params),
    })
    expect(res.status).toBe(201)
    const { permit, id } = (await res.json()) as { permit: string; id: string }
    const headers = { 'x-keel-permit': permit, 'x-keel-binding-key': 'sess-1' }
    const ok = await openai.chat.completions.create(params, { headers })
    expect(ok.choices[0]!.message.content).toContain('Hello')
    expect(lastRequest().headers['x-keel-permit-id']).toBe(id)
    const err = await openai.chat.completions.create({ ...params, max_tokens: 21 }, { headers }).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('permit_signed_constraint_exceeded')
    const err2 = await openai.chat.completions.create({ ...params, messages: [{ role: 'user', content: 'permit mE' }] }, { headers }).catch((e: unknown) => e)
    expect((err2 as { code?: string }).code).toBe('permit_request_hash_mismatch')
    const err3 = await openai.chat.completions.create(params, { headers: { ...headers, 'x-keel-binding-key': 'sess-2' } }).catch((e: unknown) => e)
    expect((err3 as { code?: string }).code).toBe('permit_binding_key_mismatch')
  })
})

describe('keys never leak', () => {
  it('a provider error that echoes the key reaches the SDK scrubbed', async () => {
    const wrong = await startStack({ keys: { openai: 'sk-wrong-real-key-abcdefghijklmnop' } })
    try {
      const client = new OpenAI({ apiKey: DUMMY, baseURL: `${wrong.dispatcher.url}/v1`, maxRetries: 0 })
      const err = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(OpenAI.AuthenticationError)
      const text = `${(err as Error).message} ${JSON.stringify((err as { error?: unknown }).error)}`
      expect(text).not.toContain('sk-wrong-real-key-abcdefghijklmnop')
      expect(text).toContain('[REDACTED]')
      expect(JSON.stringify(wrong.events)).not.toContain('sk-wrong-real-key')
    } finally {
      await wrong.close()
    }
  })
})
