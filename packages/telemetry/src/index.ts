/** @module @keel/telemetry: OpenTelemetry spans/metrics through @opentelemetry/api, and the JSONL flow log. */
export { ATTR, METRIC, TRACER_NAME } from './attributes.js'
export { combineSinks, createTelemetrySink, decisionAttributes } from './decision-telemetry.js'
export { withSpan } from './span.js'
export { openFlowLog, toFlowLogRecord } from './flow-log.js'
export type { FlowLog, FlowLogOptions, FlowLogRecord } from './flow-log.js'
