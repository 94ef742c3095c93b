/**
 * Stable reason codes and governance event names of the dispatcher (apps/dispatcher).
 * They appear in HTTP error bodies (`error.code`), the `x-keel-reason` response header,
 * spans, logs and the audit log. Append-only: never rename or reuse a code.
 *
 * Event names follow DESIGN.md ("Dispatcher and governance"): the five binding and
 * endpoint failures are recorded under an event named exactly like their reason code.
 */
export const DispatchReason = {
  /** Every permit rule that applied allowed the call. */
  PERMIT_ALLOWED: 'permit_allowed',
  /** A permit rule with `action: deny` matched. */
  PERMIT_DENIED_RULE: 'permit_denied_rule',
  /** No permit rule matched and `defaultAction` is deny (the default). */
  PERMIT_DEFAULT_DENY: 'permit_default_deny',
  /** Reserving the worst-case cost would exceed a project or agent budget. */
  BUDGET_EXCEEDED: 'budget_exceeded',
  /** Budgets apply but the model has no price table entry, so the worst case is unknown (fail-closed). */
  PRICE_UNKNOWN: 'price_unknown',
  /** A throttle rule matched inside its capacity window: 429 with Retry-After. */
  THROTTLED_CAPACITY_WINDOW: 'throttled_capacity_window',
  /** A challenge rule matched: the call is held until a named reviewer attests. */
  CHALLENGE_PENDING: 'challenge_pending',
  /** A named reviewer approved a held call. */
  CHALLENGE_APPROVED: 'challenge_approved',
  /** A named reviewer rejected a held call. */
  CHALLENGE_REJECTED: 'challenge_rejected',
  /** No attestation arrived before the challenge timed out: denied. */
  CHALLENGE_TIMEOUT: 'challenge_timeout',
  /** A prompt-firewall detector matched the request body. */
  FIREWALL_BLOCKED: 'firewall_blocked',
  /** The request names (or was routed to) an upstream that no provider allowlists. */
  PROVIDER_ENDPOINT_NOT_ALLOWED: 'provider_endpoint_not_allowed',
  /** No configured provider speaks this wire format (or the named provider does not exist). */
  PROVIDER_NOT_CONFIGURED: 'provider_not_configured',
  /** The path is not a wire-format route keel manages (chat completions, responses, embeddings, messages). */
  ROUTE_NOT_SUPPORTED: 'route_not_supported',
  /** A header or the body still carries a credential placeholder: never sent upstream. */
  CREDENTIAL_PLACEHOLDER_UNRESOLVED: 'credential_placeholder_unresolved',
  /** keel holds no credential for the provider. */
  CREDENTIAL_MISSING: 'credential_missing',
  /** The permit policy could not be evaluated (fail-closed). */
  POLICY_UNAVAILABLE: 'policy_unavailable',
  /** The request could not be read into permit attributes (bad JSON, no model): fail-closed. */
  REQUEST_UNEVALUABLE: 'request_unevaluable',
  /** The governance event for a dispatch could not be written: fail-closed. */
  AUDIT_UNAVAILABLE: 'audit_unavailable',
  /** The SHA-256 of the request body differs from the one the permit is bound to. */
  PERMIT_REQUEST_HASH_MISMATCH: 'permit_request_hash_mismatch',
  /** The permit is malformed or its Ed25519 signature does not verify. */
  PERMIT_SIGNATURE_INVALID: 'permit_signature_invalid',
  /** The binding key presented with the request differs from the one the permit is bound to. */
  PERMIT_BINDING_KEY_MISMATCH: 'permit_binding_key_mismatch',
  /** The request exceeds a constraint signed into the permit (provider, model, max tokens, route). */
  PERMIT_SIGNED_CONSTRAINT_EXCEEDED: 'permit_signed_constraint_exceeded',
  /** The permit's `exp` has passed. */
  PERMIT_EXPIRED: 'permit_expired',
  /** `permits.requirePermit` is set and the call carries no `x-keel-permit`. */
  PERMIT_REQUIRED: 'permit_required',
  /** Every allowlisted endpoint failed (connect error, timeout, 5xx). */
  UPSTREAM_ERROR: 'upstream_error',
  /** A managed dispatch finished (any upstream status); usage settled. */
  DISPATCH_COMPLETED: 'dispatch_completed',
  /** The primary endpoint failed and the call moved to the next allowlisted endpoint. */
  PROVIDER_FALLBACK: 'provider_fallback',
  /** An attestation was recorded for a pending challenge. */
  ATTESTATION_RECORDED: 'attestation_recorded',
  /** The attestation names a reviewer the challenge does not list, or the reviewer's token is wrong. */
  ATTESTATION_REVIEWER_NOT_ALLOWED: 'attestation_reviewer_not_allowed',
  /** The attestation names a challenge that does not exist or is no longer pending. */
  CHALLENGE_UNKNOWN: 'challenge_unknown',
} as const
export type DispatchReason = (typeof DispatchReason)[keyof typeof DispatchReason]

/** Every dispatcher reason code, for docs and exhaustiveness tests. */
export const ALL_DISPATCH_REASONS: readonly DispatchReason[] = Object.values(DispatchReason)

/** Stable governance event names written by the dispatcher. Append-only. */
export const DispatchEvent = {
  /** POST /v1/permits issued a signed permit. */
  PERMIT_ISSUED: 'permit.issued',
  /** A call or permit request was denied before dispatch (reason says why: rule, budget, firewall, …). */
  PERMIT_DENIED: 'permit.denied',
  /** A throttle rule answered 429. */
  PERMIT_THROTTLED: 'permit.throttled',
  /** A call is held for attestation. */
  CHALLENGE_PENDING: 'permit.challenge_pending',
  /** A held call was approved, rejected or timed out. */
  CHALLENGE_RESOLVED: 'permit.challenge_resolved',
  /** A reviewer's attestation was recorded. */
  ATTESTATION_RECORDED: 'attestation.recorded',
  /** An attestation (or challenge listing) was refused: unknown challenge, wrong or missing reviewer token. */
  ATTESTATION_REFUSED: 'attestation.refused',
  /** A managed dispatch is about to dial an allowlisted endpoint with the permit bound. */
  EGRESS_BOUND: 'dispatch.egress_bound',
  /** The provider answered; usage and cost settled. */
  DISPATCH_COMPLETED: 'dispatch.completed',
  /** Every endpoint failed. */
  DISPATCH_FAILED: 'dispatch.failed',
  /** The permit's endpoint binding moved to a fallback endpoint. */
  BINDING_REBOUND_ON_FALLBACK: 'permit.binding_rebound_on_fallback',
  PROVIDER_ENDPOINT_NOT_ALLOWED: 'provider_endpoint_not_allowed',
  PERMIT_REQUEST_HASH_MISMATCH: 'permit_request_hash_mismatch',
  PERMIT_SIGNATURE_INVALID: 'permit_signature_invalid',
  PERMIT_BINDING_KEY_MISMATCH: 'permit_binding_key_mismatch',
  PERMIT_SIGNED_CONSTRAINT_EXCEEDED: 'permit_signed_constraint_exceeded',
} as const
export type DispatchEvent = (typeof DispatchEvent)[keyof typeof DispatchEvent]
