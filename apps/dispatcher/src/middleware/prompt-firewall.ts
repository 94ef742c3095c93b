/**
 * The prompt firewall: baseline detectors plus the project's additions, over every string
 * in the body. A match denies before dispatch, and the decision records which detector
 * fired (never the matched text). A call carrying a verified permit skips the scan: the
 * permit was issued for these exact bytes after the same scan.
 */
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { Env, Runtime } from '../env.js'
import { scanBody } from '../firewall/detectors.js'

export interface PromptFirewallOptions {
  runtime: Runtime
}

export function promptFirewall(options: PromptFirewallOptions): MiddlewareHandler<Env> {
  const { detectorsFor } = options.runtime
  return createMiddleware<Env>(async function promptFirewall(c, next) {
    const call = c.get('call')
    if (call.permit === undefined) {
      const hit = scanBody(call.body, detectorsFor(call.attrs.project))
      if (hit) {
        throw new DispatchError(
          DispatchReason.FIREWALL_BLOCKED,
          `keel blocked this call before it left the machine: prompt firewall detector "${hit.detector}" (${hit.description}) matched the request. Remove that content and do not paraphrase controlled or secret material; then try again.`,
          { data: { detector: hit.detector, baseline: hit.baseline } },
        )
      }
    }
    await next()
  })
}
