import { afterEach, describe, expect, it, vi } from 'vitest'
import { trace, type Span, type SpanContext, type Tracer, type TracerProvider } from '@opentelemetry/api'
import { DispatchEvent, DispatchReason, type GovernanceEventInput } from '@keel/core'
import { createApp, type DispatcherDeps } from './app.js'
import { BudgetLedger } from './budget/ledger.js'
import { staticCredentials } from './credentials/store.js'
import { createMemoryGovernanceSink } from './governance.js'
import { createPermitSigner, sha256Hex } from './permits/sign.js'
import type { DispatcherConfig } from './types.js'
import { ALICE_TOKEN, ANTHROPIC_KEY, BASE_PROVIDERS, BOB_TOKEN, fakeFetch, loadSpec, OPENAI_KEY, type FakeFetch } from '../test-support/unit.js'

const RULES = `  reviewers:
    - { name: alice, token: { env: A } }
    - { name: bob, token: { env: B } }
  pricing:
    - { model: "gpt-*", inputPerMTok: 1, outputPerMTok: 2, maxOutputTokens: 1000 }
    - { model: "claude-*", inputPerMTok: 3, outputPerMTok: 15, maxOutputTokens: 1000 }
  budgets:
    projects: { tight: { limitUsd: 0.0001 } }
  placeholders: ["sk-keel-dummy*"]
  permits:
    rules:
      - { name: no-cui-openai, when: { dataClass: [CUI], provider: [openai] }, action: deny, message: "CUI may not go to OpenAI; use the approved provider." }
      - { name: itar-review, when: { exportControl: [ITAR] }, action: challenge, reviewers: [alice], timeoutSeconds: 0.2 }
      - { name: low-prio, when: { priority: [low] }, window: { start: "00:00", end: "23:59" }, action: throttle }
      - { name: fixed-throttle, when: { priority: [batch] }, action: throttle, retryAfterSeconds: 42 }
      - { name: allow-gpt, when: { model: ["gpt-*", "text-embedding-*"] }, action: allow }
      - { name: allow-claude, when: { provider: [anthropic] }, action: allow }
`

interface Harness {
  app: ReturnType<typeof createApp>
  upstream: FakeFetch
  events: GovernanceEventInput[]
  ledger: BudgetLedger
  config: DispatcherConfig
}

function harness(over: Partial<DispatcherDeps> = {}, spec = BASE_PROVIDERS + RULES): Harness {
  const config = loadSpec(spec)
  const upstream = fakeFetch()
  const sink = createMemoryGovernanceSink()
  const ledger = BudgetLedger.inMemory()
  const app = createApp({
    config,
    credentials: staticCredentials({ providers: { openai: OPENAI_KEY, anthropic: ANTHROPIC_KEY }, reviewers: { alice: ALICE_TOKEN, bob: BOB_TOKEN } }),
    governance: sink,
    ledger,
    fetch: upstream.fetch,
    ...over,
  })
  return { app, upstream, events: sink.events, ledger, config }
}

const CHAT = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }], max_tokens: 100 }
const MESSAGES = { model: 'claude-3-5-haiku', max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] }

function post(h: Harness, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return Promise.resolve(
    h.app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-keel-dummy-agent', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  )
}

describe('inline audit sync', () => {
  it('a lone call asks for it when the dispatcher owns the loop; concurrent calls, and the keel run mount, do not', async () => {
    const seen: Array<{ event: string; inline: boolean | undefined }> = []
    const governance = {
      record(event: GovernanceEventInput, options?: { inline?: boolean }) {
        seen.push({ event: event.event, inline: options?.inline })
        return Promise.resolve()
      },
    }
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const canned = fakeFetch()
    let held = 0
    const slow = (async (input: string | URL | Request, init?: RequestInit) => {
      if (held++ === 0) await gate
      return canned.fetch(input, init)
    }) as typeof fetch
    const owner = harness({ governance, ownsEventLoop: true, fetch: slow })
    const first = post(owner, '/v1/chat/completions', CHAT)
    await vi.waitFor(() => expect(held).toBe(1))
    const second = await post(owner, '/v1/chat/completions', CHAT)
    release()
    expect((await first).status).toBe(200)
    expect(second.status).toBe(200)
    const lone = await post(owner, '/v1/chat/completions', CHAT)
    expect(lone.status).toBe(200)
    expect(seen.filter((s) => s.event === DispatchEvent.EGRESS_BOUND).map((s) => s.inline)).toEqual([true, false, true])
    seen.length = 0
    const mounted = harness({ governance })
    expect((await post(mounted, '/v1/chat/completions', CHAT)).status).toBe(200)
    expect(seen.filter((s) => s.event === DispatchEvent.EGRESS_BOUND).map((s) => s.inline)).toEqual([false])
  })
})

describe('managed dispatch', () => {
  it('allows, drops the agent key, injects the real one and adds binding trace headers', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', CHAT, { 'x-api-key': 'sk-keel-dummy-2', 'x-keel-agent': 'coder', 'x-custom': 'dropped' })
    expect(res.status).toBe(200)
    expect(res.headers.get('x-keel-reason')).toBe('permit_allowed')
    const call = h.upstream.calls[0]!
    expect(call.url).toBe('http://primary.test/v1/chat/completions')
    expect(call.headers.get('authorization')).toBe(`Bearer ${OPENAI_KEY}`)
    expect(call.headers.get('x-api-key')).toBeNull()
    expect(call.headers.get('x-custom')).toBeNull()
    expect(call.headers.get('x-keel-agent')).toBeNull()
    const permitId = call.headers.get('x-keel-permit-id')
    expect(permitId).toMatch(/^[0-9a-f-]{36}$/)
    expect(res.headers.get('x-keel-permit-id')).toBe(permitId)
    expect(call.headers.get('x-keel-request-sha256')).toBe(sha256Hex(JSON.stringify(CHAT)))
    expect(call.headers.get('x-keel-binding')).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const bound = h.events.find((e) => e.event === DispatchEvent.EGRESS_BOUND)!
    expect(bound).toMatchObject({ reason: 'permit_allowed', actor: 'coder', project: 'default', subject: 'http://primary.test/v1' })
    expect(bound.data).toMatchObject({ permitId, binding: call.headers.get('x-keel-binding'), rule: 'allow-gpt', claims: { jti: permitId, requestSha256: sha256Hex(JSON.stringify(CHAT)) } })
    await new Promise((r) => setTimeout(r, 10))
    const done = h.events.find((e) => e.event === DispatchEvent.DISPATCH_COMPLETED)!
    expect(done.data).toMatchObject({ inputTokens: 10, outputTokens: 5, status: 200 })
  })

  it('denies by rule with 403, the reason code and a message a model can act on (OpenAI shape)', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', CHAT, { 'x-keel-data-class': 'CUI' })
    expect(res.status).toBe(403)
    expect(res.headers.get('x-keel-reason')).toBe('permit_denied_rule')
    expect(res.headers.get('x-should-retry')).toBe('false')
    const json = (await res.json()) as { error: { message: string } }
    expect(json).toMatchObject({ error: { code: 'permit_denied_rule', type: 'permission_denied', param: null } })
    expect(json.error.message).toContain('CUI may not go to OpenAI')
    expect(h.upstream.calls).toHaveLength(0)
    expect(h.events.at(-1)).toMatchObject({ event: 'permit.denied', reason: 'permit_denied_rule', data: { rule: 'no-cui-openai', dataClass: 'CUI' } })
  })

  it('answers Anthropic callers in the Anthropic error shape', async () => {
    const h = harness()
    const ok = await post(h, '/v1/messages', MESSAGES, { 'x-keel-data-class': 'CUI' })
    expect(ok.status).toBe(200)
    expect(h.upstream.calls[0]!.headers.get('x-api-key')).toBe(ANTHROPIC_KEY)
    expect(h.upstream.calls[0]!.headers.get('authorization')).toBeNull()
    const res = await post(h, '/v1/messages', { ...MESSAGES, system: 'FOR OFFICIAL USE ONLY' })
    expect(res.status).toBe(403)
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'permission_error', code: 'firewall_blocked' } })
  })

  it('denies by default (fail-closed) when no rule matches', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', { ...CHAT, model: 'o3-pro' })
    expect(res.status).toBe(403)
    const json = (await res.json()) as { error: { code: string; message: string } }
    expect(json.error.code).toBe('permit_default_deny')
    expect(json.error.message).toMatch(/no permit rule allows .*model "o3-pro"/)
  })

  it('throttles with 429 and Retry-After (window remainder, or the fixed value)', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', CHAT, { 'x-keel-priority': 'low' })
    expect(res.status).toBe(429)
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('throttled_capacity_window')
    const fixed = await post(h, '/v1/chat/completions', CHAT, { 'x-keel-priority': 'batch' })
    expect(fixed.status).toBe(429)
    expect(fixed.headers.get('retry-after')).toBe('42')
    expect(h.events.filter((e) => e.event === DispatchEvent.PERMIT_THROTTLED)).toHaveLength(2)
  })

  it('fails closed with policy_unavailable when evaluation throws', async () => {
    const h = harness()
    const broken = loadSpec(BASE_PROVIDERS + RULES)
    ;(broken.permits.rules as unknown[]).splice(0, 0, {
      name: 'boom',
      action: 'allow',
      when: [{ key: 'model', test: () => { throw new Error('corrupt matcher') } }],
    })
    const h2 = harness({ config: broken })
    void h
    const res = await post(h2, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(503)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('policy_unavailable')
    expect(h2.upstream.calls).toHaveLength(0)
  })

  it.each([
    ['not JSON', '{nope'],
    ['no model', { messages: [] }],
    ['an array', [1, 2]],
  ])('denies a body it cannot evaluate (%s) with request_unevaluable', async (_name, body) => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', body)
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('request_unevaluable')
  })

  it('refuses an upstream that is not allowlisted with provider_endpoint_not_allowed', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', CHAT, { 'x-keel-upstream': 'https://evil.example/v1' })
    expect(res.status).toBe(403)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('provider_endpoint_not_allowed')
    expect(h.events.at(-1)).toMatchObject({ event: 'provider_endpoint_not_allowed', subject: 'https://evil.example/v1' })
    expect(h.upstream.calls).toHaveLength(0)
    // An allowlisted one is fine and becomes the bound endpoint.
    const ok = await post(h, '/v1/chat/completions', CHAT, { 'x-keel-upstream': 'http://secondary.test/v1/' })
    expect(ok.status).toBe(200)
    expect(h.upstream.calls[0]!.url).toBe('http://secondary.test/v1/chat/completions')
  })

  it.each([
    ['a configured dummy key in a forwarded header', { 'openai-organization': 'sk-keel-dummy-org' }, CHAT],
    ['a template in a forwarded header', { 'openai-project': '${OPENAI_PROJECT}' }, CHAT],
    ['the marker in the body', {}, { ...CHAT, messages: [{ role: 'user', content: 'token=KEEL_PLACEHOLDER' }] }],
    ['a credential template in the body', {}, { ...CHAT, user: '{{ secrets.API_TOKEN }}' }],
  ])('never sends a request with an unresolved credential placeholder: %s', async (_name, headers, body) => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', body, headers)
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('credential_placeholder_unresolved')
    expect(h.upstream.calls).toHaveLength(0)
  })

  it('does not treat ordinary code templates in prompts as placeholders', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', { ...CHAT, messages: [{ role: 'user', content: 'explain `${count} items` and {{ user.name }}' }] })
    expect(res.status).toBe(200)
  })

  it('denies with credential_missing when keel holds no key for the provider', async () => {
    const h = harness({ credentials: staticCredentials({ providers: { anthropic: ANTHROPIC_KEY } }) })
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(503)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('credential_missing')
  })

  it.each([
    ['cui_marking', 'Summarize this: CUI//SP-CTI drawing notes'],
    ['control_marking', 'SECRET//NOFORN briefing'],
    ['itar_ear', 'This data is subject to ITAR, 22 CFR 120-130.'],
    ['private_key', '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----'],
    ['api_key', 'my key is AKIAIOSFODNN7EXAMPLE ok'],
  ])('prompt firewall: baseline %s blocks before dispatch and is recorded', async (detector, content) => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', { ...CHAT, messages: [{ role: 'user', content }] })
    expect(res.status).toBe(403)
    const json = (await res.json()) as { error: { code: string; message: string } }
    expect(json.error.code).toBe('firewall_blocked')
    expect(json.error.message).toContain(detector)
    expect(h.upstream.calls).toHaveLength(0)
    expect(h.events.at(-1)).toMatchObject({ event: 'permit.denied', reason: 'firewall_blocked', data: { detector, baseline: true } })
  })

  it('prompt firewall: JSON unicode escapes do not evade the scan', async () => {
    const h = harness()
    const raw = '{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"\\u0043UI//SP-PRVCY"}]}'
    const res = await post(h, '/v1/chat/completions', raw)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('firewall_blocked')
  })

  it('prompt firewall: project additions apply to that project only', async () => {
    const spec = BASE_PROVIDERS + RULES + `  firewall:\n    projects:\n      apollo:\n        detectors: [{ id: codename, pattern: "NIGHTJAR" }]\n`
    const h = harness({}, spec)
    const msg = { ...CHAT, messages: [{ role: 'user', content: 'status of NIGHTJAR?' }] }
    const blocked = await post(h, '/v1/chat/completions', msg, { 'x-keel-project': 'apollo' })
    expect(blocked.status).toBe(403)
    expect(h.events.at(-1)).toMatchObject({ data: { detector: 'codename', baseline: false } })
    const other = await post(h, '/v1/chat/completions', msg, { 'x-keel-project': 'zeus' })
    expect(other.status).toBe(200)
  })

  it('budget: denies when the worst case would exceed, and prices unknown models fail-closed', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', CHAT, { 'x-keel-project': 'tight' })
    expect(res.status).toBe(403)
    const json = (await res.json()) as { error: { code: string; message: string } }
    expect(json.error.code).toBe('budget_exceeded')
    expect(json.error.message).toContain('project "tight"')
    const spec = BASE_PROVIDERS + RULES.replace('projects: { tight: { limitUsd: 0.0001 } }', 'defaultProject: { limitUsd: 10 }')
    const h2 = harness({}, spec)
    const unknown = await post(h2, '/v1/embeddings', { model: 'text-embedding-3-small', input: 'x' })
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('price_unknown')
  })

  it('budget: settles from JSON usage, from streamed usage, and at the worst case when usage is missing', async () => {
    const spec = BASE_PROVIDERS + RULES.replace('projects: { tight: { limitUsd: 0.0001 } }', 'defaultProject: { limitUsd: 10 }')
    const h = harness({}, spec)
    const bucket = 'project:default:total'
    await post(h, '/v1/chat/completions', CHAT)
    expect(h.ledger.state(bucket)).toEqual({ spentMicroUsd: 10 * 1 + 5 * 2, reservedMicroUsd: 0 })
    const streamed = await post(h, '/v1/chat/completions', { ...CHAT, stream: true })
    const text = await streamed.text()
    expect(text).toContain('"usage"')
    expect(h.upstream.calls[1]!.body).toContain('"include_usage":true')
    expect(h.ledger.state(bucket).spentMicroUsd).toBe(40)
    const anth = await post(h, '/v1/messages', { ...MESSAGES, stream: true })
    await anth.text()
    expect(h.ledger.state(bucket).spentMicroUsd).toBe(40 + 10 * 3 + 5 * 15)
    h.upstream.omitUsage = true
    const body = JSON.stringify(CHAT)
    await post(h, '/v1/chat/completions', body)
    expect(h.ledger.state(bucket).spentMicroUsd).toBe(145 + body.length * 1 + 100 * 2)
  })

  it('budget: concurrent calls never overspend', async () => {
    const body = JSON.stringify(CHAT)
    const worst = body.length + 100 * 2
    const spec = BASE_PROVIDERS + RULES.replace('projects: { tight: { limitUsd: 0.0001 } }', `projects: { p: { limitUsd: ${(worst * 3.5) / 1e6} } }`)
    const h = harness({}, spec)
    const results = await Promise.all(Array.from({ length: 10 }, () => post(h, '/v1/chat/completions', body, { 'x-keel-project': 'p' })))
    expect(results.filter((r) => r.status === 200)).toHaveLength(3)
    expect(results.filter((r) => r.status === 403)).toHaveLength(7)
  })

  it('falls back to the next allowlisted endpoint and records the rebinding', async () => {
    const h = harness()
    h.upstream.queue.push(503)
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(200)
    expect(h.upstream.calls.map((c) => c.url)).toEqual(['http://primary.test/v1/chat/completions', 'http://secondary.test/v1/chat/completions'])
    const rebound = h.events.find((e) => e.event === DispatchEvent.BINDING_REBOUND_ON_FALLBACK)!
    expect(rebound).toMatchObject({ reason: 'provider_fallback', data: { from: 'http://primary.test/v1', to: 'http://secondary.test/v1' } })
    expect(h.events.filter((e) => e.event === DispatchEvent.EGRESS_BOUND)).toHaveLength(2)
    const [a, b] = h.upstream.calls
    expect(a!.headers.get('x-keel-permit-id')).toBe(b!.headers.get('x-keel-permit-id'))
    expect(a!.headers.get('x-keel-binding')).not.toBe(b!.headers.get('x-keel-binding'))
  })

  it('never falls back to an endpoint in a region the rules do not allow', async () => {
    const spec = `  providers:
    - name: openai
      format: openai
      endpoints: [{ url: "http://us.test/v1", region: us }, { url: "http://eu.test/v1", region: eu }]
      credential: { env: K }
  permits:
    rules:
      - { name: us-only, when: { region: [us] }, action: allow }
`
    const h = harness({}, spec)
    h.upstream.queue.push(503)
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(502)
    expect(h.upstream.calls.map((c) => c.url)).toEqual(['http://us.test/v1/chat/completions'])
  })

  it('answers 502 upstream_error when every endpoint fails, and releases the reservation', async () => {
    const spec = BASE_PROVIDERS + RULES.replace('projects: { tight: { limitUsd: 0.0001 } }', 'defaultProject: { limitUsd: 10 }')
    const h = harness({}, spec)
    h.upstream.queue.push('throw', 'throw')
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(502)
    expect(((await res.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'upstream_error' })
    expect(h.ledger.state('project:default:total')).toEqual({ spentMicroUsd: 0, reservedMicroUsd: 0 })
    expect(h.events.at(-1)).toMatchObject({ event: 'dispatch.failed', reason: 'upstream_error' })
  })

  it('fails closed with audit_unavailable when the egress event cannot be written', async () => {
    const h = harness({ governance: { record: () => Promise.reject(new Error('disk full')) } })
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(503)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('audit_unavailable')
    expect(h.upstream.calls).toHaveLength(0)
  })

  it('scrubs the real key out of upstream error bodies', async () => {
    const h = harness({
      fetch: (async () => new Response(JSON.stringify({ error: { message: `Incorrect API key provided: ${OPENAI_KEY}` } }), { status: 401, headers: { 'content-type': 'application/json' } })) as typeof fetch,
    })
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(res.status).toBe(401)
    const text = await res.text()
    expect(text).not.toContain(OPENAI_KEY)
    expect(text).toContain('[REDACTED]')
    expect(JSON.stringify(h.events)).not.toContain(OPENAI_KEY)
  })

  it('unknown paths answer route_not_supported', async () => {
    const h = harness()
    const res = await h.app.request('/v1/completions', { method: 'POST', body: '{}' })
    expect(res.status).toBe(404)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('route_not_supported')
  })
})

describe('traceparent', () => {
  afterEach(() => trace.disable())

  it('sends a W3C traceparent from the dispatch span', async () => {
    const ctx: SpanContext = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 }
    const span = {
      spanContext: () => ctx,
      setAttribute() {
        return span
      },
      setAttributes() {
        return span
      },
      setStatus() {
        return span
      },
      end() {},
      isRecording: () => true,
      recordException() {},
      addEvent() {
        return span
      },
      addLink() {
        return span
      },
      addLinks() {
        return span
      },
      updateName() {
        return span
      },
    } as unknown as Span
    const tracer = {
      startSpan: () => span,
      startActiveSpan: (_n: string, _o: unknown, fn: (s: Span) => unknown) => fn(span),
    } as unknown as Tracer
    const provider: TracerProvider = { getTracer: () => tracer }
    trace.setGlobalTracerProvider(provider)
    const h = harness()
    await post(h, '/v1/chat/completions', CHAT)
    expect(h.upstream.calls[0]!.headers.get('traceparent')).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')
  })
})

describe('challenge and attestation', () => {
  const ITAR = { 'x-keel-export-control': 'ITAR', 'x-keel-agent': 'coder' }

  async function pending(h: Harness): Promise<string> {
    for (let i = 0; i < 50; i++) {
      const res = await h.app.request('/v1/challenges', { headers: { authorization: `Bearer ${ALICE_TOKEN}` } })
      const { challenges } = (await res.json()) as { challenges: Array<{ id: string }> }
      if (challenges.length > 0) return challenges[0]!.id
      await new Promise((r) => setTimeout(r, 5))
    }
    throw new Error('no pending challenge')
  }

  function attest(h: Harness, body: unknown, token = ALICE_TOKEN): Promise<Response> {
    return Promise.resolve(h.app.request('/v1/attestations', { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) }))
  }

  it('holds the call until a named reviewer approves', async () => {
    const spec = (BASE_PROVIDERS + RULES).replace('timeoutSeconds: 0.2', 'timeoutSeconds: 30')
    const h = harness({}, spec)
    const call = post(h, '/v1/chat/completions', CHAT, ITAR)
    const id = await pending(h)
    expect(h.upstream.calls).toHaveLength(0)
    // bob is a reviewer, but not one this challenge names.
    const bob = await attest(h, { challengeId: id, reviewer: 'bob', decision: 'approve' }, BOB_TOKEN)
    expect(bob.status).toBe(403)
    expect(((await bob.json()) as { error: { code: string } }).error.code).toBe('attestation_reviewer_not_allowed')
    // alice's name with bob's token is refused too.
    const forged = await attest(h, { challengeId: id, reviewer: 'alice', decision: 'approve' }, BOB_TOKEN)
    expect(forged.status).toBe(403)
    const ok = await attest(h, { challengeId: id, reviewer: 'alice', decision: 'approve', note: 'reviewed' })
    expect(ok.status).toBe(200)
    const res = await call
    expect(res.status).toBe(200)
    expect(h.upstream.calls).toHaveLength(1)
    const names = h.events.map((e) => `${e.event}:${e.reason}`)
    expect(names).toEqual(expect.arrayContaining(['permit.challenge_pending:challenge_pending', 'attestation.refused:attestation_reviewer_not_allowed', 'attestation.recorded:attestation_recorded', 'permit.challenge_resolved:challenge_approved', 'dispatch.egress_bound:challenge_approved']))
  })

  it('denies with challenge_rejected when the reviewer rejects', async () => {
    const spec = (BASE_PROVIDERS + RULES).replace('timeoutSeconds: 0.2', 'timeoutSeconds: 30')
    const h = harness({}, spec)
    const call = post(h, '/v1/chat/completions', CHAT, ITAR)
    const id = await pending(h)
    await attest(h, { challengeId: id, reviewer: 'alice', decision: 'reject', note: 'not for this vendor' })
    const res = await call
    expect(res.status).toBe(403)
    const json = (await res.json()) as { error: { code: string; message: string } }
    expect(json.error.code).toBe('challenge_rejected')
    expect(json.error.message).toContain('not for this vendor')
    expect(h.upstream.calls).toHaveLength(0)
  })

  it('denies with challenge_timeout when nobody attests in time', async () => {
    const h = harness()
    const res = await post(h, '/v1/chat/completions', CHAT, ITAR)
    expect(res.status).toBe(403)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('challenge_timeout')
    expect(h.events.at(-1)).toMatchObject({ event: 'permit.challenge_resolved', reason: 'challenge_timeout' })
  })

  it('refuses attestations without a token, and for unknown challenges', async () => {
    const h = harness()
    const none = await h.app.request('/v1/attestations', { method: 'POST', body: JSON.stringify({ challengeId: 'x', reviewer: 'alice', decision: 'approve' }) })
    expect(none.status).toBe(401)
    const unknown = await attest(h, { challengeId: 'nope', reviewer: 'alice', decision: 'approve' })
    expect(unknown.status).toBe(404)
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('challenge_unknown')
  })
})

describe('permit-first', () => {
  const BINDING = { 'x-keel-binding-key': 'session-7f3a' }

  async function issue(h: Harness, body: string, headers: Record<string, string> = BINDING, target = '/v1/chat/completions'): Promise<{ permit: string; id: string }> {
    const res = await post(h, `/v1/permits?target=${encodeURIComponent(target)}`, body, headers)
    expect(res.status).toBe(201)
    return (await res.json()) as { permit: string; id: string }
  }

  it('issues an Ed25519-signed permit bound to the body hash and dispatches with it', async () => {
    const h = harness()
    const body = JSON.stringify(CHAT)
    const { permit, id } = await issue(h, body)
    const [hdr, payload] = permit.split('.')
    expect(JSON.parse(Buffer.from(hdr!, 'base64url').toString())).toMatchObject({ alg: 'EdDSA', typ: 'keel-permit+jwt' })
    expect(JSON.parse(Buffer.from(payload!, 'base64url').toString())).toMatchObject({ jti: id, requestSha256: sha256Hex(body), bindingKeySha256: sha256Hex('session-7f3a'), model: 'gpt-4o-mini', maxOutputTokens: 100 })
    expect(h.events.at(-1)).toMatchObject({ event: 'permit.issued', subject: id })
    const res = await post(h, '/v1/chat/completions', body, { ...BINDING, 'x-keel-permit': permit })
    expect(res.status).toBe(200)
    expect(h.upstream.calls[0]!.headers.get('x-keel-permit-id')).toBe(id)
    expect(h.upstream.calls[0]!.headers.get('x-keel-permit')).toBeNull()
    expect(h.events.find((e) => e.event === 'dispatch.egress_bound')).toMatchObject({ data: { permitId: id, permitFirst: true } })
  })

  it('requires a binding key to issue', async () => {
    const h = harness()
    const res = await post(h, '/v1/permits?target=/v1/chat/completions', CHAT)
    expect(res.status).toBe(400)
  })

  it('evaluates the same rules at issue time (deny, firewall)', async () => {
    const h = harness()
    const denied = await post(h, '/v1/permits?target=/v1/chat/completions', CHAT, { ...BINDING, 'x-keel-data-class': 'CUI' })
    expect(denied.status).toBe(403)
    const fw = await post(h, '/v1/permits?target=/v1/chat/completions', { ...CHAT, messages: [{ role: 'user', content: 'ITAR controlled' }] }, BINDING)
    expect(((await fw.json()) as { error: { code: string } }).error.code).toBe('firewall_blocked')
  })

  it.each([
    [
      'permit_request_hash_mismatch',
      (body: string, permit: string) => ({ body: body.replace('hello', 'hellO'), headers: { ...BINDING, 'x-keel-permit': permit } }),
    ],
    [
      'permit_signed_constraint_exceeded',
      (body: string, permit: string) => ({ body: body.replace('"max_tokens":100', '"max_tokens":4000'), headers: { ...BINDING, 'x-keel-permit': permit } }),
    ],
    [
      'permit_signed_constraint_exceeded',
      (body: string, permit: string) => ({ body, headers: { ...BINDING, 'x-keel-permit': permit, 'x-keel-project': 'other' } }),
    ],
    [
      'permit_binding_key_mismatch',
      (body: string, permit: string) => ({ body, headers: { 'x-keel-binding-key': 'stolen', 'x-keel-permit': permit } }),
    ],
    [
      'permit_binding_key_mismatch',
      (body: string, permit: string) => ({ body, headers: { 'x-keel-permit': permit } }),
    ],
    [
      'permit_signature_invalid',
      (body: string, permit: string) => {
        const [h, p, s] = permit.split('.')
        const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>
        claims['maxOutputTokens'] = 100000
        return { body, headers: { ...BINDING, 'x-keel-permit': `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}` } }
      },
    ],
    ['permit_signature_invalid', (body: string) => ({ body, headers: { ...BINDING, 'x-keel-permit': 'not-a-permit' } })],
  ])('refuses and records %s', async (reason, mutate) => {
    const h = harness()
    const body = JSON.stringify(CHAT)
    const { permit } = await issue(h, body)
    const m = mutate(body, permit)
    const res = await post(h, '/v1/chat/completions', m.body, m.headers)
    expect(res.status).toBe(403)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(reason)
    expect(h.upstream.calls).toHaveLength(0)
    expect(h.events.at(-1)).toMatchObject({ event: reason, reason })
  })

  it('refuses a permit signed by another key, and an expired one', async () => {
    const h = harness()
    const other = harness({ signer: createPermitSigner() })
    const body = JSON.stringify(CHAT)
    const { permit } = await issue(other, body)
    const res = await post(h, '/v1/chat/completions', body, { ...BINDING, 'x-keel-permit': permit })
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('permit_signature_invalid')
    let now = Date.now()
    const clocked = harness({ now: () => now })
    const { permit: p2 } = await issue(clocked, body)
    now += (clocked.config.permits.ttlSeconds + 1) * 1000
    const expired = await post(clocked, '/v1/chat/completions', body, { ...BINDING, 'x-keel-permit': p2 })
    expect(((await expired.json()) as { error: { code: string } }).error.code).toBe('permit_expired')
  })

  it('with requirePermit, a call without a permit is denied', async () => {
    const spec = (BASE_PROVIDERS + RULES).replace('  permits:\n', '  permits:\n    requirePermit: true\n')
    const h = harness({}, spec)
    const res = await post(h, '/v1/chat/completions', CHAT)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('permit_required')
  })

  it('publishes the public key', async () => {
    const h = harness()
    const res = await h.app.request('/v1/permits/public-key')
    const json = (await res.json()) as { publicKeyPem: string; jwk: { kty: string; crv: string } }
    expect(json.publicKeyPem).toContain('BEGIN PUBLIC KEY')
    expect(json.jwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519' })
  })
})

describe('reason codes', () => {
  it('every DispatchReason is a unique snake_case string', () => {
    const values = Object.values(DispatchReason)
    expect(new Set(values).size).toBe(values.length)
    for (const v of values) expect(v).toMatch(/^[a-z][a-z0-9_]*$/)
  })
})

describe('in-memory governance sink', () => {
  it('keeps only the most recent events when given a limit', async () => {
    const sink = createMemoryGovernanceSink(100)
    for (let i = 0; i < 1000; i++) await sink.record({ event: 'e', reason: 'r', actor: 'a', subject: String(i), project: 'p' })
    expect(sink.events.length).toBeGreaterThanOrEqual(100)
    expect(sink.events.length).toBeLessThan(200)
    expect(sink.events.at(-1)?.subject).toBe('999')
    expect(sink.events.map((e) => Number(e.subject))).toEqual(sink.events.map((_, i, a) => 1000 - a.length + i))
  })
})
