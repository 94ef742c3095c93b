/**
 * Attribute and metric names, defined once so logs, spans and metrics agree.
 * `egress.dial.denied` follows the CLRK EgressGateway telemetry name.
 */
export const ATTR = {
  agent: 'keel.agent',
  verdict: 'keel.verdict',
  reason: 'keel.reason',
  route: 'keel.route',
  destinationName: 'keel.destination.name',
  destinationAddress: 'keel.destination.address',
  destinationPort: 'keel.destination.port',
  protocol: 'keel.protocol',
  kind: 'keel.kind',
  bytesOut: 'keel.bytes_out',
  bytesIn: 'keel.bytes_in',
  provider: 'keel.provider',
  model: 'keel.model',
  project: 'keel.project',
} as const

export const METRIC = {
  dialAllowed: 'egress.dial.allowed',
  dialDenied: 'egress.dial.denied',
  dnsQueries: 'keel.dns.queries',
  bytes: 'keel.egress.bytes',
} as const

export const TRACER_NAME = '@keel/telemetry'
