/**
 * Outermost middleware of a managed call: one span through @opentelemetry/api (a no-op
 * until the CLI registers an SDK) and one canonical log line per call carrying its reason
 * (STYLE §6), written just after the response is handed over. The span covers the
 * decision and the upstream response headers; a stream's completion is recorded by the
 * `dispatch.completed` governance event. It also counts the calls in flight
 * (Runtime.calls), which tells dispatch whether a call is alone on the event loop.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { SpanStatusCode } from '@opentelemetry/api'
import { DispatchReason } from '@keel/core'
import { ATTR, withSpan } from '@keel/telemetry'
import type { Env, Runtime } from '../env.js'
import { LOG_FIELD } from '../governance.js'

export const REASON_HEADER = 'x-keel-reason'

export interface TraceOptions {
  runtime: Runtime
  /** Span name, e.g. `keel.dispatch` or `keel.permit`. */
  name: string
}

export function trace(options: TraceOptions): MiddlewareHandler<Env> {
  const { runtime, name } = options
  return createMiddleware<Env>(async function trace(c, next) {
    const started = performance.now()
    await withSpan(name, {}, async (span) => {
      c.set('span', span)
      runtime.calls.inFlight++
      try {
        await next()
      } finally {
        runtime.calls.inFlight--
      }
      try {
        const call = c.get('call') as Env['Variables']['call'] | undefined
        const outcome = c.get('outcome') as Env['Variables']['outcome']
        const reason = outcome?.reason ?? c.res.headers.get(REASON_HEADER) ?? (c.res.ok ? DispatchReason.PERMIT_ALLOWED : 'unknown')
        const verdict = c.res.ok && reason === DispatchReason.PERMIT_ALLOWED ? 'allow' : 'deny'
        span.setAttribute(ATTR.reason, reason)
        span.setAttribute(ATTR.verdict, verdict)
        span.setAttribute('http.response.status_code', c.res.status)
        if (call) {
          span.setAttribute(ATTR.provider, call.provider.name)
          span.setAttribute(ATTR.model, call.facts.model)
          span.setAttribute(ATTR.project, call.attrs.project)
          span.setAttribute(ATTR.agent, call.attrs.agent)
          if (call.permit) span.setAttribute('keel.permit.id', call.permit.claims.jti)
        }
        if (verdict === 'deny') span.setStatus({ code: SpanStatusCode.ERROR, message: reason })
        const line = {
          [LOG_FIELD.reason]: reason,
          [LOG_FIELD.status]: c.res.status,
          [LOG_FIELD.durationMs]: Math.round((performance.now() - started) * 100) / 100,
          path: c.req.path,
          ...(call
            ? {
                [LOG_FIELD.provider]: call.provider.name,
                [LOG_FIELD.model]: call.facts.model,
                [LOG_FIELD.project]: call.attrs.project,
                [LOG_FIELD.agent]: call.attrs.agent,
                [LOG_FIELD.permitId]: outcome ? outcome.permitId : (c.res.headers.get('x-keel-permit-id') ?? undefined),
              }
            : {}),
        }
        // Written once the response is on its way: serializing and writing the line is not
        // part of the call.
        setImmediate(() => runtime.logger.info('dispatch', line))
      } catch {
        // Telemetry never breaks the call.
      }
    })
  })
}
