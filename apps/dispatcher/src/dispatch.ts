/**
 * Managed execution: the last step of a call that every check admitted.
 *
 * 1. Bind a permit: the permit-first one, or an inline one signed now, bound to the
 *    request's SHA-256, the binding key and the first allowlisted endpoint.
 * 2. For each allowlisted endpoint in order: record `dispatch.egress_bound` (awaited:
 *    no unrecorded egress; `audit_unavailable` if it cannot be written), add the binding
 *    trace headers (`x-keel-permit-id`, `x-keel-request-sha256`, `x-keel-binding`, W3C
 *    `traceparent`), and send. A connect error, timeout or 5xx moves to the next endpoint,
 *    recording `permit.binding_rebound_on_fallback`; an endpoint in another region is used
 *    only if the permit rules allow that region too.
 * 3. Pass the response through: SSE chunk by chunk as it arrives (usage read on the side),
 *    JSON whole; then settle the budget from the reported usage and record
 *    `dispatch.completed`. Upstream error bodies are scrubbed of every known secret.
 *
 * Only URLs built from allowlisted endpoints are ever dialed, and redirects are not followed.
 */
import { context, isSpanContextValid, propagation, trace as otelTrace, type Span } from '@opentelemetry/api'
import type { Context } from 'hono'
import { DispatchEvent, DispatchReason } from '@keel/core'
import { DispatchError } from './errors.js'
import type { CallContext, Env, Runtime } from './env.js'
import { costMicroUsd } from './budget/pricing.js'
import { scrubSecrets } from './credentials/store.js'
import { LOG_FIELD } from './governance.js'
import { evaluatePermit } from './permits/evaluate.js'
import { bindingDigest, newPermitId, sha256Hex, type PermitClaims, PERMIT_ISSUER } from './permits/sign.js'
import { createSseParser } from './providers/sse.js'
import type { Usage } from './providers/types.js'
import type { Endpoint } from './types.js'
import type { UpstreamResponse } from './upstream.js'
import { REASON_HEADER } from './middleware/trace.js'

/** Upstream statuses that move the call to the next allowlisted endpoint. */
const FALLBACK_STATUS: ReadonlySet<number> = new Set([500, 502, 503, 504, 529])

/** Response headers never passed back to the client. */
const DROP_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'set-cookie',
])

export const BINDING_HEADERS = {
  permitId: 'x-keel-permit-id',
  requestSha256: 'x-keel-request-sha256',
  binding: 'x-keel-binding',
} as const

/** Claims for a permit; used inline and by POST /v1/permits. */
export function permitClaims(runtime: Runtime, call: CallContext, ttlSeconds: number): PermitClaims {
  const iat = Math.floor(runtime.now() / 1000)
  const claims: PermitClaims = {
    v: 1,
    jti: newPermitId(),
    iss: PERMIT_ISSUER,
    iat,
    exp: iat + ttlSeconds,
    project: call.attrs.project,
    agent: call.attrs.agent,
    provider: call.provider.name,
    route: call.route,
    model: call.facts.model,
    maxOutputTokens: call.facts.maxOutputTokens ?? null,
    endpoint: call.endpoints[0]!.url,
    requestSha256: call.requestSha256,
    bindingKeySha256: sha256Hex(call.bindingKey),
    reason: call.decision?.reason ?? DispatchReason.PERMIT_ALLOWED,
  }
  if (call.decision?.rule !== undefined) claims.rule = call.decision.rule
  return claims
}

function traceparentFor(span: Span | undefined): string | undefined {
  if (!span) return undefined
  const carrier: Record<string, string> = {}
  try {
    propagation.inject(otelTrace.setSpan(context.active(), span), carrier)
  } catch {
    // A broken propagator never breaks the call.
  }
  if (carrier['traceparent']) return carrier['traceparent']
  const sc = span.spanContext()
  if (!isSpanContextValid(sc)) return undefined
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 1) === 1 ? '01' : '00'}`
}

/** An endpoint in another region than the bound one is used only if the rules allow that region. */
function regionAllowed(runtime: Runtime, call: CallContext, endpoint: Endpoint): boolean {
  if (endpoint.region === call.attrs.region) return true
  try {
    const attrs = { ...call.attrs }
    if (endpoint.region === undefined) delete attrs.region
    else attrs.region = endpoint.region
    return evaluatePermit({ config: runtime.config.permits, attrs, now: runtime.now() }).outcome === 'allow'
  } catch {
    return false
  }
}

function joinUrl(endpoint: Endpoint, path: string, search: string): string {
  return `${endpoint.url}${path}${search}`
}

interface Settlement {
  usage: Usage | undefined
  status: number
  outcome: 'complete' | 'cancelled' | 'error'
}

export async function dispatch(runtime: Runtime, c: Context<Env>): Promise<Response> {
  const call = c.get('call')
  const span = c.get('span')

  // 1. The permit this dispatch is bound to.
  // An inline permit is signed after the response is on its way (Ed25519 signing costs
  // ~0.1 ms here, more than the rest of the decision): its claims, id and binding are in the
  // awaited egress event, and the signed token follows in `dispatch.completed`.
  const claims: PermitClaims = call.permit ? call.permit.claims : permitClaims(runtime, call, runtime.config.permits.ttlSeconds)
  const permitToken = call.permit?.token
  const prepared = call.adapter.prepareBody(call.route, call.body)
  const body = prepared === undefined ? call.raw : new TextEncoder().encode(JSON.stringify(prepared))
  const search = new URL(c.req.url).search
  const upstreamPath = call.adapter.upstreamPath(call.route)
  const traceparent = traceparentFor(span)
  const base = { actor: call.attrs.agent, project: call.attrs.project }
  const common = {
    permitId: claims.jti,
    provider: call.provider.name,
    model: call.facts.model,
    route: call.route,
    requestSha256: call.requestSha256,
    bindingKeySha256: claims.bindingKeySha256,
    permitFirst: call.permit !== undefined,
  }

  let response: UpstreamResponse | undefined
  let lastError: unknown
  let previous: { endpoint: Endpoint; binding: string } | undefined
  let attempt = 0
  for (const endpoint of call.endpoints) {
    if (attempt > 0 && !regionAllowed(runtime, call, endpoint)) continue
    const binding = bindingDigest(claims.jti, call.requestSha256, endpoint.url, claims.bindingKeySha256)
    if (previous !== undefined) {
      runtime.governance.recordQuiet({
        ...base,
        event: DispatchEvent.BINDING_REBOUND_ON_FALLBACK,
        reason: DispatchReason.PROVIDER_FALLBACK,
        subject: claims.jti,
        data: { ...common, from: previous.endpoint.url, to: endpoint.url, fromBinding: previous.binding, toBinding: binding, cause: describeFailure(lastError) },
      })
    }
    try {
      await runtime.governance.record({
        ...base,
        event: DispatchEvent.EGRESS_BOUND,
        reason: claims.reason,
        subject: endpoint.url,
        time: runtime.now(),
        data: {
          ...common,
          endpoint: endpoint.url,
          ...(endpoint.region === undefined ? {} : { region: endpoint.region }),
          binding,
          attempt,
          ...(claims.rule === undefined ? {} : { rule: claims.rule }),
          ...(call.worstCaseMicroUsd === undefined ? {} : { worstCaseMicroUsd: call.worstCaseMicroUsd }),
          ...(traceparent === undefined ? {} : { traceparent }),
          ...(permitToken === undefined ? { claims } : { permit: permitToken }),
        },
      }, { inline: runtime.ownsEventLoop && runtime.calls.inFlight === 1 })
    } catch (err) {
      throw new DispatchError(DispatchReason.AUDIT_UNAVAILABLE, 'keel could not record this call in the governance log, so it was not sent (fail-closed).', { cause: err, subject: endpoint.url })
    }

    const headers: Record<string, string> = {
      ...call.outbound,
      [BINDING_HEADERS.permitId]: claims.jti,
      [BINDING_HEADERS.requestSha256]: call.requestSha256,
      [BINDING_HEADERS.binding]: binding,
    }
    if (traceparent !== undefined) headers['traceparent'] = traceparent

    attempt++
    previous = { endpoint, binding }
    let aborted = false
    try {
      const res = await runtime.upstream(joinUrl(endpoint, upstreamPath, search), {
        method: 'POST',
        headers,
        body,
        headersTimeoutMs: runtime.config.upstream.timeoutMs,
        onAbort: (fn) =>
          call.onClientGone(() => {
            aborted = true
            fn()
          }),
      })
      if (FALLBACK_STATUS.has(res.status) && attempt < call.endpoints.length) {
        lastError = new Error(`upstream status ${res.status}`)
        res.discard()
        continue
      }
      response = res
      break
    } catch (err) {
      lastError = err
      if (aborted) break
    }
  }

  if (response === undefined) {
    if (call.reservation) runtime.ledger.release(call.reservation.id, runtime.now())
    throw new DispatchError(DispatchReason.UPSTREAM_ERROR, `keel could not reach provider "${call.provider.name}" on any allowlisted endpoint (${describeFailure(lastError)}). Retry later.`, {
      subject: claims.jti,
      data: { ...common, attempts: attempt, cause: describeFailure(lastError) },
    })
  }

  const upstream = response
  /** Books the actual cost now; the `dispatch.completed` event (and inline permit signing) follows off the response path. */
  const settle = (s: Settlement): void => {
    let cost: number | undefined
    let settledFrom: 'usage' | 'reservation' | 'released' = 'usage'
    try {
      if (s.usage && call.price) cost = costMicroUsd(call.price, s.usage.inputTokens, s.usage.outputTokens)
      if (call.reservation) {
        if (cost !== undefined) runtime.ledger.settle(call.reservation.id, cost, runtime.now())
        else if (s.status >= 400 || s.outcome === 'error') {
          runtime.ledger.release(call.reservation.id, runtime.now())
          settledFrom = 'released'
        } else {
          // No usage reported: keep the worst case booked (never under-count).
          runtime.ledger.settle(call.reservation.id, call.reservation.amountMicroUsd, runtime.now())
          settledFrom = 'reservation'
          cost = call.reservation.amountMicroUsd
        }
      }
    } catch (err) {
      runtime.logger.error('settlement failed', { [LOG_FIELD.permitId]: claims.jti, error: String(err) })
    }
    const durationMs = runtime.now() - call.startedAt
    setImmediate(() => {
      try {
        runtime.governance.recordQuiet({
          ...base,
          event: DispatchEvent.DISPATCH_COMPLETED,
          reason: DispatchReason.DISPATCH_COMPLETED,
          subject: claims.jti,
          data: {
            ...common,
            status: s.status,
            outcome: s.outcome,
            stream: call.facts.stream,
            ...(s.usage ? { inputTokens: s.usage.inputTokens, outputTokens: s.usage.outputTokens } : { usageMissing: true }),
            ...(cost === undefined ? {} : { costMicroUsd: cost }),
            ...(call.reservation ? { settledFrom, reservedMicroUsd: call.reservation.amountMicroUsd } : {}),
            durationMs,
            permit: permitToken ?? runtime.signer.sign(claims),
          },
        })
      } catch (err) {
        runtime.logger.error('dispatch.completed not recorded', { [LOG_FIELD.permitId]: claims.jti, error: String(err) })
      }
    })
  }

  const outHeaders: Record<string, string> = {}
  for (const [name, value] of Object.entries(upstream.headers)) {
    if (!DROP_RESPONSE_HEADERS.has(name)) outHeaders[name] = value
  }
  outHeaders[BINDING_HEADERS.permitId] = claims.jti
  outHeaders[REASON_HEADER] = DispatchReason.PERMIT_ALLOWED
  c.set('outcome', { reason: DispatchReason.PERMIT_ALLOWED, permitId: claims.jti })

  const contentType = upstream.headers['content-type'] ?? ''
  const ok = upstream.status >= 200 && upstream.status < 300
  if (ok && contentType.includes('text/event-stream')) {
    // SSE: bytes pass through untouched as they arrive; a parser reads usage on the side.
    const tracker = call.adapter.streamUsage(call.route)
    const parser = createSseParser((event, data) => tracker.onEvent(event, data))
    const stream = upstream.stream(
      (chunk) => parser.push(chunk),
      (outcome) => {
        try {
          parser.end()
        } catch {
          // Reading usage never breaks the stream.
        }
        settle({ usage: tracker.usage(), status: upstream.status, outcome })
      },
    )
    return new Response(stream, { status: upstream.status, headers: outHeaders })
  }

  let bytes: Uint8Array
  try {
    bytes = await upstream.bytes()
  } catch (err) {
    settle({ usage: undefined, status: 502, outcome: 'error' })
    throw new DispatchError(DispatchReason.UPSTREAM_ERROR, `provider "${call.provider.name}" closed the response early. Retry later.`, { cause: err, subject: claims.jti, data: common })
  }
  let usage: Usage | undefined
  if (contentType.includes('json')) {
    try {
      usage = call.adapter.usageFromJson(call.route, JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')))
    } catch {
      usage = undefined
    }
  }
  if (!ok) {
    // Providers echo (parts of) keys in auth errors; never let one reach the agent.
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
    const clean = scrubSecrets(text, runtime.credentials.secrets())
    if (clean !== text) bytes = Buffer.from(clean, 'utf8')
  }
  settle({ usage, status: upstream.status, outcome: 'complete' })
  return new Response(bytes, { status: upstream.status, headers: outHeaders })
}

function describeFailure(err: unknown): string {
  if (err === undefined) return 'no endpoint available'
  if (err instanceof Error) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code) return cause.code
    return err.name === 'TimeoutError' ? 'timeout' : err.message.slice(0, 200)
  }
  return String(err).slice(0, 200)
}
