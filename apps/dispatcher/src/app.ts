/**
 * `createApp(deps)`: the dispatcher as a Hono app. Serve it standalone
 * (`keel dispatcher serve`, see node.ts) or mount it in process (`keel run`: the proxy hands
 * decrypted sockets for `via: dispatcher` names to {@link createInProcessServer}).
 *
 * Routes
 * - Managed calls, in each provider's own wire format (JSON and SSE):
 *   POST /v1/chat/completions, /v1/responses, /v1/embeddings (OpenAI-compatible),
 *   POST /v1/messages (Anthropic).
 *   Chain: trace → request-context → placeholder-guard → permit-verify → prompt-firewall →
 *   permit → inject-credentials → budget → dispatch.
 * - Permit-first: POST /v1/permits?target=<managed path> with the exact request body and
 *   headers; answers 201 with an Ed25519-signed permit (JWS) to send as `x-keel-permit`.
 *   GET /v1/permits/public-key.
 * - Attestation (reviewer bearer token; never reachable from inside a sandbox):
 *   GET /v1/challenges, POST /v1/attestations {challengeId, reviewer, decision, note?}.
 * - GET /healthz.
 *
 * Every refusal is a {@link DispatchError} mapped to a response in `onError`, in the
 * provider's error shape, with the reason code in `error.code` and `x-keel-reason`.
 */
import { timingSafeEqual } from 'node:crypto'
import { Hono, type Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { DispatchEvent, DispatchReason, NOOP_LOGGER, Reason, type GovernanceSink, type Logger } from '@keel/core'
import { BudgetLedger } from './budget/ledger.js'
import { ChallengeRegistry } from './challenge/registry.js'
import { createPlaceholderDetector } from './credentials/placeholders.js'
import { scrubSecrets, type CredentialStore } from './credentials/store.js'
import { dispatch, permitClaims } from './dispatch.js'
import type { Env, Runtime } from './env.js'
import { DispatchError, errorBody, isDispatchError } from './errors.js'
import { compileFirewall } from './firewall/detectors.js'
import { createGovernance, LOG_FIELD } from './governance.js'
import { budget } from './middleware/budget.js'
import { injectCredentials } from './middleware/inject-credentials.js'
import { permit } from './middleware/permit.js'
import { permitVerify } from './middleware/permit-verify.js'
import { placeholderGuard } from './middleware/placeholder-guard.js'
import { promptFirewall } from './middleware/prompt-firewall.js'
import { requestContext } from './middleware/request-context.js'
import { REASON_HEADER, trace } from './middleware/trace.js'
import { originOfIncoming } from './origin.js'
import { createPermitSigner, sha256Hex, type PermitSigner } from './permits/sign.js'
import type { DispatcherConfig } from './types.js'
import { fetchUpstream, nodeUpstream, type UpstreamClient } from './upstream.js'

export interface DispatcherDeps {
  /** A validated config (loadDispatcherConfig / readDispatcherConfig). */
  config: DispatcherConfig
  /** Real provider keys and reviewer tokens (loadCredentials, or staticCredentials in tests). */
  credentials: CredentialStore
  /** Where governance events go: packages/audit in production; any GovernanceSink works. */
  governance: GovernanceSink
  /** Budget ledger; in-memory when absent. */
  ledger?: BudgetLedger
  /** Permit signer; an ephemeral Ed25519 key when absent. */
  signer?: PermitSigner
  /** Held calls; a fresh registry when absent. */
  challenges?: ChallengeRegistry
  logger?: Logger
  /** Clock, ms since the epoch. */
  now?: () => number
  /** Upstream HTTP client; node:http(s) with keep-alive when absent. */
  upstream?: UpstreamClient
  /** Or any fetch implementation (tests inject a canned upstream this way). */
  fetch?: typeof fetch
  /**
   * True when serving calls is all this process's event loop does (`keel dispatcher serve`):
   * with a single call in flight, its egress record's disk sync then runs on the loop
   * (RecordOptions.inline), saving a thread hand-off. False (the default) inside `keel run`,
   * whose proxy shares the loop.
   */
  ownsEventLoop?: boolean
}

export type DispatcherApp = Hono<Env>

const MANAGED_PATHS = ['/v1/chat/completions', '/v1/responses', '/v1/embeddings', '/v1/messages'] as const

function tokenEquals(a: string, b: string): boolean {
  const ha = Buffer.from(sha256Hex(a), 'hex')
  const hb = Buffer.from(sha256Hex(b), 'hex')
  return timingSafeEqual(ha, hb)
}

/** The reviewer a bearer token belongs to, if any. */
function reviewerFor(runtime: Runtime, c: Context<Env>): string | undefined {
  const auth = c.req.header('authorization') ?? ''
  const m = /^Bearer\s+(\S+)$/i.exec(auth)
  if (!m) return undefined
  for (const r of runtime.config.reviewers) {
    const t = runtime.credentials.reviewerToken(r.name)
    if (t !== undefined && tokenEquals(t, m[1]!)) return r.name
  }
  return undefined
}

export function createApp(deps: DispatcherDeps): DispatcherApp {
  const logger = deps.logger ?? NOOP_LOGGER
  const secrets = (): readonly string[] => deps.credentials.secrets()
  const runtime: Runtime = {
    config: deps.config,
    credentials: deps.credentials,
    governance: createGovernance(deps.governance, logger, secrets),
    ownsEventLoop: deps.ownsEventLoop === true,
    calls: { inFlight: 0 },
    ledger: deps.ledger ?? BudgetLedger.inMemory(),
    signer: deps.signer ?? createPermitSigner(),
    challenges: deps.challenges ?? new ChallengeRegistry(deps.now ? { now: deps.now } : {}),
    logger,
    now: deps.now ?? Date.now,
    upstream: deps.upstream ?? (deps.fetch ? fetchUpstream(deps.fetch) : nodeUpstream()),
    detectorsFor: compileFirewall(deps.config.firewall),
    placeholders: createPlaceholderDetector(deps.config.placeholders),
  }

  const app = new Hono<Env>()

  // Managed calls.
  const chain = [
    trace({ runtime, name: 'keel.dispatch' }),
    requestContext({ runtime, target: 'path' }),
    placeholderGuard({ runtime }),
    permitVerify({ runtime }),
    promptFirewall({ runtime }),
    permit({ runtime }),
    injectCredentials({ runtime }),
    budget({ runtime, mode: 'reserve' }),
  ] as const
  for (const path of MANAGED_PATHS) {
    app.post(path, ...chain, (c) => dispatch(runtime, c))
  }

  // Permit-first.
  app.get('/v1/permits/public-key', (c) =>
    c.json({ keyId: runtime.signer.keyId, alg: 'EdDSA', publicKeyPem: runtime.signer.publicKeyPem, jwk: runtime.signer.publicJwk }),
  )
  app.post(
    '/v1/permits',
    trace({ runtime, name: 'keel.permit' }),
    requestContext({ runtime, target: 'query' }),
    placeholderGuard({ runtime }),
    promptFirewall({ runtime }),
    permit({ runtime }),
    budget({ runtime, mode: 'check' }),
    async function issuePermit(c) {
      const call = c.get('call')
      if (call.bindingKey === '') {
        throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, 'a permit is bound to a binding key: send x-keel-binding-key (any secret string you will present again with the call).', {
          status: 400,
        })
      }
      const claims = permitClaims(runtime, call, runtime.config.permits.ttlSeconds)
      const token = runtime.signer.sign(claims)
      try {
        await runtime.governance.record({
          event: DispatchEvent.PERMIT_ISSUED,
          reason: claims.reason,
          actor: claims.agent,
          project: claims.project,
          subject: claims.jti,
          time: runtime.now(),
          data: {
            permitId: claims.jti,
            provider: claims.provider,
            model: claims.model,
            route: claims.route,
            endpoint: claims.endpoint,
            requestSha256: claims.requestSha256,
            bindingKeySha256: claims.bindingKeySha256,
            maxOutputTokens: claims.maxOutputTokens,
            expiresAt: new Date(claims.exp * 1000).toISOString(),
            ...(claims.rule === undefined ? {} : { rule: claims.rule }),
            permit: token,
          },
        })
      } catch (err) {
        throw new DispatchError(DispatchReason.AUDIT_UNAVAILABLE, 'keel could not record the permit in the governance log, so it was not issued (fail-closed).', { cause: err })
      }
      c.header('x-keel-permit-id', claims.jti)
      c.header(REASON_HEADER, claims.reason)
      c.set('outcome', { reason: claims.reason, permitId: claims.jti })
      return c.json(
        {
          permit: token,
          id: claims.jti,
          keyId: runtime.signer.keyId,
          expiresAt: new Date(claims.exp * 1000).toISOString(),
          requestSha256: claims.requestSha256,
          endpoint: claims.endpoint,
          provider: claims.provider,
          model: claims.model,
          maxOutputTokens: claims.maxOutputTokens,
          reason: claims.reason,
          ...(claims.rule === undefined ? {} : { rule: claims.rule }),
        },
        201,
      )
    },
  )

  // Attestation API: reviewers only, never from inside a sandbox.
  app.use('/v1/challenges', async function operatorOnly(c, next) {
    if (originOfIncoming(c.env?.incoming)) return c.json(errorBody(undefined, 404, DispatchReason.ROUTE_NOT_SUPPORTED, 'not found'), 404)
    return next()
  })
  app.use('/v1/attestations', async function operatorOnly(c, next) {
    if (originOfIncoming(c.env?.incoming)) return c.json(errorBody(undefined, 404, DispatchReason.ROUTE_NOT_SUPPORTED, 'not found'), 404)
    return next()
  })
  app.get('/v1/challenges', (c) => {
    const reviewer = reviewerFor(runtime, c)
    if (reviewer === undefined) {
      throw new DispatchError(DispatchReason.ATTESTATION_REVIEWER_NOT_ALLOWED, 'a reviewer bearer token is required', { status: 401, event: DispatchEvent.ATTESTATION_REFUSED })
    }
    return c.json({ challenges: runtime.challenges.list(reviewer).map((s) => ({ ...s, createdAt: new Date(s.createdAt).toISOString(), expiresAt: new Date(s.expiresAt).toISOString() })) })
  })
  app.post('/v1/attestations', async (c) => {
    let input: unknown
    try {
      input = await c.req.json()
    } catch {
      throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, 'body must be JSON {challengeId, reviewer, decision, note?}', { status: 400, event: DispatchEvent.ATTESTATION_REFUSED })
    }
    const { challengeId, reviewer, decision, note } = (input ?? {}) as Record<string, unknown>
    if (typeof challengeId !== 'string' || typeof reviewer !== 'string' || (decision !== 'approve' && decision !== 'reject') || (note !== undefined && typeof note !== 'string')) {
      throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, 'body must be JSON {challengeId, reviewer, decision: "approve" | "reject", note?}', { status: 400, event: DispatchEvent.ATTESTATION_REFUSED })
    }
    const authenticated = reviewerFor(runtime, c)
    const refuse = (message: string, status = 403): never => {
      throw new DispatchError(DispatchReason.ATTESTATION_REVIEWER_NOT_ALLOWED, message, {
        status,
        event: DispatchEvent.ATTESTATION_REFUSED,
        subject: challengeId.slice(0, 64),
        data: { reviewer: reviewer.slice(0, 64), authenticatedAs: authenticated ?? null },
      })
    }
    if (authenticated === undefined) refuse('a reviewer bearer token is required', 401)
    if (authenticated !== reviewer) refuse(`the bearer token does not belong to reviewer "${reviewer.slice(0, 64)}"`)
    const summary = runtime.challenges.get(challengeId)
    const result = runtime.challenges.attest(note === undefined ? { challengeId, reviewer, decision } : { challengeId, reviewer, decision, note: note.slice(0, 1000) })
    if (result === 'unknown') {
      throw new DispatchError(DispatchReason.CHALLENGE_UNKNOWN, `no pending challenge ${challengeId.slice(0, 64)}`, { status: 404, event: DispatchEvent.ATTESTATION_REFUSED, subject: challengeId.slice(0, 64) })
    }
    if (result === 'reviewer_not_allowed') refuse(`reviewer "${reviewer}" is not named by this challenge`)
    await runtime.governance
      .record({
        event: DispatchEvent.ATTESTATION_RECORDED,
        reason: DispatchReason.ATTESTATION_RECORDED,
        actor: reviewer,
        project: (summary?.subject['project'] as string | undefined) ?? runtime.config.identity.defaultProject,
        subject: challengeId,
        time: runtime.now(),
        data: { decision, rule: summary?.rule, ...(note === undefined ? {} : { note: note.slice(0, 1000) }) },
      })
      .catch((err: unknown) => logger.error('attestation not recorded', { error: String(err) }))
    return c.json({ recorded: true, challengeId, decision })
  })

  app.get('/healthz', (c) => c.json({ ok: true, name: runtime.config.name }))

  app.notFound((c) => c.json(errorBody(undefined, 404, DispatchReason.ROUTE_NOT_SUPPORTED, `keel does not serve ${c.req.method} ${c.req.path}`), 404))

  app.onError(async (err, c) => {
    const format = c.get('format') as Env['Variables']['format']
    const call = c.get('call') as Env['Variables']['call'] | undefined
    if (isDispatchError(err)) {
      const attrs = call?.attrs
      const event = {
        event: err.event,
        reason: err.reason,
        actor: attrs?.agent ?? 'unknown',
        project: attrs?.project ?? runtime.config.identity.defaultProject,
        subject: err.subject ?? (call ? `${call.provider.name}:${call.endpoints[0]?.url ?? ''}` : c.req.path),
        time: runtime.now(),
        data: {
          ...err.data,
          status: err.status,
          message: scrubSecrets(err.message, secrets()),
          ...(call ? { provider: call.provider.name, model: call.facts.model, route: call.route, requestSha256: call.requestSha256 } : {}),
          ...(attrs?.dataClass === undefined ? {} : { dataClass: attrs.dataClass }),
          ...(attrs?.exportControl === undefined ? {} : { exportControl: attrs.exportControl }),
          ...(attrs?.program === undefined ? {} : { program: attrs.program }),
        },
      }
      try {
        await runtime.governance.record(event)
      } catch (recordErr) {
        logger.error('governance event not recorded', { [LOG_FIELD.event]: err.event, [LOG_FIELD.reason]: err.reason, error: scrubSecrets(String(recordErr), secrets()) })
      }
      const headers: Record<string, string> = { [REASON_HEADER]: err.reason }
      c.set('outcome', { reason: err.reason })
      if (err.retryAfterSeconds !== undefined) headers['retry-after'] = String(err.retryAfterSeconds)
      // A deny is final: tell SDKs (openai, anthropic honour x-should-retry) not to retry it.
      if (err.status === 403 || err.status === 400 || err.status === 404 || err.status === 401) headers['x-should-retry'] = 'false'
      return c.json(errorBody(format, err.status, err.reason, scrubSecrets(err.message, secrets())), err.status as 400, headers)
    }
    if (err instanceof HTTPException) return err.getResponse()
    c.set('outcome', { reason: Reason.INTERNAL_ERROR })
    logger.error('internal error', { error: scrubSecrets(err instanceof Error ? (err.stack ?? err.message) : String(err), secrets()), path: c.req.path })
    return c.json(errorBody(format, 500, Reason.INTERNAL_ERROR, 'keel hit an internal error and did not send this call (fail-closed).'), 500, {
      [REASON_HEADER]: Reason.INTERNAL_ERROR,
    })
  })

  return app
}
