/**
 * Never send a request upstream that still carries an unresolved credential placeholder
 * (see credentials/placeholders.ts for exactly what counts). Checked on the headers that
 * would be forwarded and on every body string.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { Env, Runtime } from '../env.js'
import { forwardedHeaders } from './inject-credentials.js'

export interface PlaceholderGuardOptions {
  runtime: Runtime
}

export function placeholderGuard(options: PlaceholderGuardOptions): MiddlewareHandler<Env> {
  const { placeholders } = options.runtime
  return createMiddleware<Env>(async function placeholderGuard(c, next) {
    const call = c.get('call')
    const header = placeholders.inHeaders(Object.entries(forwardedHeaders(call.headers)))
    const inBody = header === undefined && placeholders.inBody(call.strings())
    if (header !== undefined || inBody) {
      const where = header !== undefined ? `header "${header}"` : 'request body'
      throw new DispatchError(
        DispatchReason.CREDENTIAL_PLACEHOLDER_UNRESOLVED,
        `keel refused to send this call: the ${where} still carries an unresolved credential placeholder. keel injects the provider key itself; remove the placeholder.`,
        { status: 400, data: { where: header !== undefined ? `header:${header}` : 'body' } },
      )
    }
    await next()
  })
}
