import { SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api'
import { TRACER_NAME } from './attributes.js'

/**
 * Runs `fn` inside an active span named `name`; the span ends when the promise settles,
 * with error status when it rejects. The callback's result or rejection passes through.
 */
export async function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  const tracer = trace.getTracer(TRACER_NAME)
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span)
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) })
      throw err
    } finally {
      span.end()
    }
  })
}
