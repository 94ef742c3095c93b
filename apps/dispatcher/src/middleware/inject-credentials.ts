/**
 * Builds the upstream request headers: an allowlist of the client's headers (never its
 * Authorization / x-api-key / api-key, never keel's own x-keel-* headers, never hop-by-hop
 * ones), plus the provider's real key. The key lives only in keel: it never enters the
 * sandbox, a log line or an error body.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { Env, RequestHeaders, Runtime } from '../env.js'

/** Client headers forwarded upstream. Everything else is dropped. */
export const FORWARD_HEADERS: ReadonlySet<string> = new Set([
  'content-type',
  'accept',
  'user-agent',
  'openai-organization',
  'openai-project',
  'openai-beta',
  'anthropic-version',
  'anthropic-beta',
  'idempotency-key',
])
const FORWARD_PREFIXES = ['x-stainless-']

/** The client headers that would be forwarded, before the credential is added. */
export function forwardedHeaders(headers: RequestHeaders): Record<string, string> {
  const out: Record<string, string> = {}
  headers.forEach((value, name) => {
    if (FORWARD_HEADERS.has(name) || FORWARD_PREFIXES.some((p) => name.startsWith(p))) out[name] = value
  })
  out['content-type'] ??= 'application/json'
  // Identity encoding: keel reads usage from the bytes as they pass.
  out['accept-encoding'] = 'identity'
  return out
}

export interface InjectCredentialsOptions {
  runtime: Runtime
}

export function injectCredentials(options: InjectCredentialsOptions): MiddlewareHandler<Env> {
  const { runtime } = options
  return createMiddleware<Env>(async function injectCredentials(c, next) {
    const call = c.get('call')
    const key = runtime.credentials.providerKey(call.provider.name)
    if (key === undefined || key === '') {
      throw new DispatchError(DispatchReason.CREDENTIAL_MISSING, `keel holds no credential for provider "${call.provider.name}"; ask an operator to configure it.`, {
        subject: call.provider.name,
      })
    }
    const outbound = forwardedHeaders(call.headers)
    Object.assign(outbound, call.adapter.authHeaders(key))
    call.outbound = outbound
    await next()
  })
}
