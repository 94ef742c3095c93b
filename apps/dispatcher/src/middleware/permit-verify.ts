/**
 * Permit-first mode: a call that carries `x-keel-permit` (from POST /v1/permits) is checked
 * against its permit before anything else is decided, and each failure is recorded under its
 * own governance event:
 *
 * - `permit_signature_invalid`: not a compact JWS, wrong key, or the signature fails
 *   (`permit_expired` when valid but past `exp`);
 * - `permit_signed_constraint_exceeded`: provider, route, model, agent or project differ from
 *   the signed ones, or the request asks for more output tokens than signed. Checked before
 *   the hash so the more specific reason is recorded when a signed field changed;
 * - `permit_request_hash_mismatch`: the body's SHA-256 differs from the signed one;
 * - `permit_binding_key_mismatch`: the binding key presented (the sandbox's, or
 *   `x-keel-binding-key`) hashes differently from the signed one;
 * - `provider_endpoint_not_allowed`: the signed endpoint is no longer allowlisted.
 *
 * With `permits.requirePermit`, a call without a permit is denied.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { CallContext, Env, Runtime } from '../env.js'
import { sha256Hex, type PermitClaims } from '../permits/sign.js'

export const PERMIT_HEADER = 'x-keel-permit'

export interface PermitVerifyOptions {
  runtime: Runtime
}

function constraintViolation(call: CallContext, claims: PermitClaims): string | undefined {
  if (claims.provider !== call.provider.name) return `provider "${call.provider.name}" differs from the signed "${claims.provider}"`
  if (claims.route !== call.route) return `route ${call.route} differs from the signed ${claims.route}`
  if (claims.model !== call.facts.model) return `model "${call.facts.model}" differs from the signed "${claims.model}"`
  if (claims.agent !== call.attrs.agent) return `agent "${call.attrs.agent}" differs from the signed "${claims.agent}"`
  if (claims.project !== call.attrs.project) return `project "${call.attrs.project}" differs from the signed "${claims.project}"`
  if (claims.maxOutputTokens !== null) {
    const asked = call.facts.maxOutputTokens
    if (asked === undefined || asked > claims.maxOutputTokens) {
      return `the request asks for ${asked ?? 'unbounded'} output tokens, more than the signed ${claims.maxOutputTokens}`
    }
  }
  return undefined
}

export function permitVerify(options: PermitVerifyOptions): MiddlewareHandler<Env> {
  const { runtime } = options
  return createMiddleware<Env>(async function permitVerify(c, next) {
    const call = c.get('call')
    const token = call.headers.get(PERMIT_HEADER)
    if (token === null) {
      if (runtime.config.permits.requirePermit) {
        throw new DispatchError(DispatchReason.PERMIT_REQUIRED, 'keel requires a permit for every call: obtain one from POST /v1/permits and send it as x-keel-permit.')
      }
      return next()
    }
    const verified = runtime.signer.verify(token, runtime.now())
    if (!verified.ok) {
      throw new DispatchError(verified.reason, `keel refused this call: ${verified.detail}.`, { data: { detail: verified.detail } })
    }
    const claims = verified.claims
    const subject = claims.jti
    const violation = constraintViolation(call, claims)
    if (violation !== undefined) {
      throw new DispatchError(DispatchReason.PERMIT_SIGNED_CONSTRAINT_EXCEEDED, `keel refused this call: it exceeds its permit (${violation}). Request a new permit.`, {
        subject,
        data: { permitId: claims.jti, violation },
      })
    }
    if (claims.requestSha256 !== call.requestSha256) {
      throw new DispatchError(DispatchReason.PERMIT_REQUEST_HASH_MISMATCH, 'keel refused this call: the request body is not the one the permit was issued for. Send the exact bytes the permit was issued for, or request a new permit.', {
        subject,
        data: { permitId: claims.jti, expected: claims.requestSha256, actual: call.requestSha256 },
      })
    }
    if (call.bindingKey === '' || sha256Hex(call.bindingKey) !== claims.bindingKeySha256) {
      throw new DispatchError(DispatchReason.PERMIT_BINDING_KEY_MISMATCH, 'keel refused this call: the permit is bound to another binding key.', {
        subject,
        data: { permitId: claims.jti, presented: call.bindingKey !== '' },
      })
    }
    const idx = call.endpoints.findIndex((e) => e.url === claims.endpoint)
    if (idx < 0) {
      throw new DispatchError(DispatchReason.PROVIDER_ENDPOINT_NOT_ALLOWED, `keel refused this call: the permit's endpoint ${claims.endpoint} is no longer allowlisted.`, {
        subject: claims.endpoint,
        data: { permitId: claims.jti },
      })
    }
    call.endpoints = [...call.endpoints.slice(idx), ...call.endpoints.slice(0, idx)]
    call.permit = { token, claims }
    await next()
  })
}
