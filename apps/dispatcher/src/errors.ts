/**
 * Decisions that stop a call travel as a {@link DispatchError} thrown from a middleware and
 * are turned into a response in one place (`app.onError`, see app.ts). The body uses the
 * provider's own error shape, so an unmodified SDK surfaces keel's message to the model;
 * `error.code` (and the `x-keel-reason` header) carry the stable reason code.
 */
import { DispatchEvent, DispatchReason } from '@keel/core'
import type { WireFormat } from './types.js'

export interface DispatchErrorOptions {
  status?: number
  retryAfterSeconds?: number
  /** Governance event name; derived from the reason when absent. */
  event?: string
  /** Structured detail for the governance event and log line. Never credentials. */
  data?: Record<string, unknown>
  /** What the event is about (endpoint, permit id, …). */
  subject?: string
  cause?: unknown
}

const STATUS: Partial<Record<DispatchReason, number>> = {
  [DispatchReason.THROTTLED_CAPACITY_WINDOW]: 429,
  [DispatchReason.REQUEST_UNEVALUABLE]: 400,
  [DispatchReason.ROUTE_NOT_SUPPORTED]: 404,
  [DispatchReason.CHALLENGE_UNKNOWN]: 404,
  [DispatchReason.CREDENTIAL_MISSING]: 503,
  [DispatchReason.POLICY_UNAVAILABLE]: 503,
  [DispatchReason.AUDIT_UNAVAILABLE]: 503,
  [DispatchReason.UPSTREAM_ERROR]: 502,
  [DispatchReason.PERMIT_SIGNATURE_INVALID]: 403,
  [DispatchReason.ATTESTATION_REVIEWER_NOT_ALLOWED]: 403,
}

/** Reasons DESIGN.md names as their own governance events. */
const NAMED_EVENTS: ReadonlySet<string> = new Set([
  DispatchEvent.PROVIDER_ENDPOINT_NOT_ALLOWED,
  DispatchEvent.PERMIT_REQUEST_HASH_MISMATCH,
  DispatchEvent.PERMIT_SIGNATURE_INVALID,
  DispatchEvent.PERMIT_BINDING_KEY_MISMATCH,
  DispatchEvent.PERMIT_SIGNED_CONSTRAINT_EXCEEDED,
])

export function eventForReason(reason: DispatchReason): string {
  if (NAMED_EVENTS.has(reason)) return reason
  switch (reason) {
    case DispatchReason.THROTTLED_CAPACITY_WINDOW:
      return DispatchEvent.PERMIT_THROTTLED
    case DispatchReason.CHALLENGE_REJECTED:
    case DispatchReason.CHALLENGE_TIMEOUT:
      return DispatchEvent.CHALLENGE_RESOLVED
    case DispatchReason.UPSTREAM_ERROR:
      return DispatchEvent.DISPATCH_FAILED
    default:
      return DispatchEvent.PERMIT_DENIED
  }
}

export class DispatchError extends Error {
  override readonly name = 'DispatchError'
  readonly status: number
  readonly retryAfterSeconds: number | undefined
  readonly event: string
  readonly data: Record<string, unknown>
  readonly subject: string | undefined
  constructor(
    readonly reason: DispatchReason,
    message: string,
    options: DispatchErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.status = options.status ?? STATUS[reason] ?? 403
    this.retryAfterSeconds = options.retryAfterSeconds
    this.event = options.event ?? eventForReason(reason)
    this.data = options.data ?? {}
    this.subject = options.subject
  }
}

export const isDispatchError = (e: unknown): e is DispatchError =>
  e instanceof Error && e.name === 'DispatchError' && typeof (e as { reason?: unknown }).reason === 'string'

function openAiType(status: number): string {
  if (status === 429) return 'rate_limit_error'
  if (status === 400 || status === 404) return 'invalid_request_error'
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_denied'
  return 'server_error'
}

function anthropicType(status: number): string {
  if (status === 429) return 'rate_limit_error'
  if (status === 400) return 'invalid_request_error'
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 404) return 'not_found_error'
  return 'api_error'
}

/** The error body for a reason, in the wire format's own shape (or keel's for non-provider routes). */
export function errorBody(format: WireFormat | undefined, status: number, code: string, message: string): unknown {
  if (format === 'openai') return { error: { message, type: openAiType(status), code, param: null } }
  if (format === 'anthropic') return { type: 'error', error: { type: anthropicType(status), message, code } }
  return { error: { code, message } }
}
