/**
 * Turns decision events into OpenTelemetry spans and counters through @opentelemetry/api
 * only. Without an SDK registered (the default) the API is a no-op, so this costs nothing;
 * the CLI may register an SDK. Telemetry must never break the data path, so every call is
 * guarded (OTel spec: "MUST NOT throw unhandled exceptions at run time").
 */
import { metrics, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api'
import type { DecisionEvent, DecisionSink } from '@keel/core'
import { ATTR, METRIC, TRACER_NAME } from './attributes.js'

export function decisionAttributes(event: DecisionEvent): Attributes {
  const attrs: Attributes = {
    [ATTR.kind]: event.kind,
    [ATTR.agent]: event.agent,
    [ATTR.verdict]: event.verdict,
    [ATTR.reason]: event.reason,
    [ATTR.protocol]: event.protocol,
  }
  if (event.route !== undefined) attrs[ATTR.route] = event.route
  if (event.name !== undefined) attrs[ATTR.destinationName] = event.name
  if (event.address !== undefined) attrs[ATTR.destinationAddress] = event.address
  if (event.port !== undefined) attrs[ATTR.destinationPort] = event.port
  if (event.bytesOut !== undefined) attrs[ATTR.bytesOut] = event.bytesOut
  if (event.bytesIn !== undefined) attrs[ATTR.bytesIn] = event.bytesIn
  return attrs
}

/** A DecisionSink that records one span and the allowed/denied counters per event. */
export function createTelemetrySink(): DecisionSink {
  const tracer = trace.getTracer(TRACER_NAME)
  const meter = metrics.getMeter(TRACER_NAME)
  const allowed = meter.createCounter(METRIC.dialAllowed, { description: 'Egress decisions that allowed' })
  const denied = meter.createCounter(METRIC.dialDenied, { description: 'Egress decisions that denied' })
  const bytes = meter.createCounter(METRIC.bytes, { description: 'Bytes spliced through keel', unit: 'By' })
  return function telemetrySink(event) {
    try {
      const attrs = decisionAttributes(event)
      const start = event.durationMs !== undefined ? event.time - event.durationMs : event.time
      const span = tracer.startSpan(`keel.${event.kind}`, { attributes: attrs, startTime: start })
      if (event.verdict === 'deny') span.setStatus({ code: SpanStatusCode.ERROR, message: event.reason })
      span.end(event.time)
      const counterAttrs = { [ATTR.reason]: event.reason, [ATTR.kind]: event.kind, [ATTR.agent]: event.agent }
      ;(event.verdict === 'allow' ? allowed : denied).add(1, counterAttrs)
      const total = (event.bytesIn ?? 0) + (event.bytesOut ?? 0)
      if (total > 0) bytes.add(total, { [ATTR.agent]: event.agent })
    } catch {
      // Telemetry never breaks the run.
    }
  }
}

/** Fan one event out to several sinks; a failing sink does not stop the others. */
export function combineSinks(...sinks: DecisionSink[]): DecisionSink {
  return function combinedSink(event) {
    for (const sink of sinks) {
      try {
        sink(event)
      } catch {
        // A broken sink must not hide the event from the others.
      }
    }
  }
}
