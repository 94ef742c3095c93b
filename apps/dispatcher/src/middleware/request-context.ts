/**
 * First step of every managed call: which wire format and route, which provider and
 * allowlisted endpoints, who is calling, and the exact request bytes with their SHA-256.
 * Everything later in the chain reads `c.get('call')`.
 *
 * Provider selection, in order:
 * 1. inside `keel run`: the name the agent dialed must be one of a provider's `hosts`,
 *    else `provider_endpoint_not_allowed`;
 * 2. the `x-keel-provider` header names a configured provider;
 * 3. the request's Host is one of a provider's `hosts` (reverse-proxy deployments);
 * 4. the first configured provider speaking the route's wire format.
 * `x-keel-upstream` may pick a starting endpoint, which must be allowlisted for that provider
 * (else `provider_endpoint_not_allowed`).
 *
 * Identity: inside `keel run` the agent, project and binding key come from the sandbox and
 * headers cannot change them; standalone, `x-keel-agent` / `x-keel-project` /
 * `x-keel-binding-key` are read, with the config defaults.
 */
import { createMiddleware } from 'hono/factory'
import type { IncomingMessage } from 'node:http'
import type { Context, MiddlewareHandler } from 'hono'
import { DispatchReason } from '@keel/core'
import { DispatchError } from '../errors.js'
import type { CallContext, Env, RequestHeaders, Runtime } from '../env.js'
import { collectStrings } from '../firewall/detectors.js'
import { originOfIncoming } from '../origin.js'
import { sha256Hex } from '../permits/sign.js'
import { ADAPTERS } from '../providers/index.js'
import { isObject } from '../providers/types.js'
import type { Endpoint, PermitAttributes, ProviderConfig, RouteKind, WireFormat } from '../types.js'

export const MAX_BODY_BYTES = 32 * 1024 * 1024
const IDENTITY_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/
const ATTR_PREFIX = 'x-keel-attr-'
const ATTR_VALUE_MAX = 256
const WORKFLOW_HEADERS: ReadonlySet<string> = new Set(['x-keel-data-class', 'x-keel-program', 'x-keel-export-control', 'x-keel-priority'])

export interface RequestContextOptions {
  runtime: Runtime
  /** Where the managed path comes from: the request path, or `?target=` for POST /v1/permits. */
  target: 'path' | 'query'
}

/** The wire format and route for a managed path, if any. */
export function routeForPath(path: string): { format: WireFormat; route: RouteKind } | undefined {
  for (const format of ['openai', 'anthropic'] as const) {
    const route = ADAPTERS[format].routeFor(path)
    if (route !== undefined) return { format, route }
  }
  return undefined
}

const normalizeUrl = (u: string): string => u.replace(/\/+$/, '')

/** A client-supplied URL reduced to what is safe to record (no userinfo, query or fragment). */
function safeUrl(raw: string): string {
  try {
    const u = new URL(raw)
    return `${u.protocol}//${u.host}${u.pathname}`.slice(0, 512)
  } catch {
    return '(not a URL)'
  }
}

function hostOnly(host: string | undefined): string | undefined {
  if (!host) return undefined
  return host.replace(/:\d+$/, '').replace(/\.$/, '').toLowerCase()
}

function selectProvider(runtime: Runtime, format: WireFormat, boundName: string | undefined, headers: RequestHeaders): ProviderConfig {
  const providers = runtime.config.providers
  if (boundName !== undefined) {
    const name = hostOnly(boundName)!
    const p = providers.find((x) => x.hosts.includes(name))
    if (!p) {
      throw new DispatchError(DispatchReason.PROVIDER_ENDPOINT_NOT_ALLOWED, `keel refused this call: "${name}" is not an allowlisted provider endpoint.`, {
        subject: name,
        data: { boundName: name },
      })
    }
    return p
  }
  const named = headers.get('x-keel-provider')
  if (named !== null) {
    const p = providers.find((x) => x.name === named)
    if (!p) throw new DispatchError(DispatchReason.PROVIDER_NOT_CONFIGURED, `keel has no provider named "${named.slice(0, 64)}".`, { status: 400, subject: named.slice(0, 64) })
    return p
  }
  const host = hostOnly(headers.get('host') ?? undefined)
  if (host !== undefined) {
    const p = providers.find((x) => x.hosts.includes(host))
    if (p) return p
  }
  const p = providers.find((x) => x.format === format)
  if (!p) throw new DispatchError(DispatchReason.PROVIDER_NOT_CONFIGURED, `keel has no provider configured for the ${format} wire format.`, { status: 404 })
  return p
}

function orderEndpoints(provider: ProviderConfig, requested: string | null): Endpoint[] {
  if (requested === null) return [...provider.endpoints]
  const want = normalizeUrl(requested)
  const idx = provider.endpoints.findIndex((e) => e.url === want)
  if (idx < 0) {
    const subject = safeUrl(requested)
    throw new DispatchError(DispatchReason.PROVIDER_ENDPOINT_NOT_ALLOWED, `keel refused this call: upstream ${subject} is not an allowlisted endpoint of provider "${provider.name}".`, {
      subject,
      data: { provider: provider.name, requested: subject },
    })
  }
  return [...provider.endpoints.slice(idx), ...provider.endpoints.slice(0, idx)]
}

function identity(value: string | null | undefined, fallback: string, what: string): string {
  if (value === null || value === undefined || value === '') return fallback
  if (!IDENTITY_RE.test(value)) {
    throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, `invalid ${what} "${value.slice(0, 64)}"`, { status: 400 })
  }
  return value
}

function workflowAttributes(headers: RequestHeaders): Pick<PermitAttributes, 'dataClass' | 'program' | 'exportControl' | 'priority' | 'attributes'> {
  const attributes: Record<string, string> = {}
  const out: Pick<PermitAttributes, 'dataClass' | 'program' | 'exportControl' | 'priority' | 'attributes'> = { attributes }
  headers.forEach((value, name) => {
    if (!name.startsWith('x-keel-')) return
    const v = value.trim().slice(0, ATTR_VALUE_MAX)
    // A repeated header arrives joined with commas: "public, CUI" would match no rule for
    // CUI. A workflow attribute has one value, so fail closed rather than guess.
    if (v.includes(',') && (WORKFLOW_HEADERS.has(name) || name.startsWith(ATTR_PREFIX))) {
      throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, `keel could not evaluate this call: ${name} has more than one value ("${v.slice(0, 64)}"); send the header once, with one value.`, { status: 400 })
    }
    if (name === 'x-keel-data-class') out.dataClass = v
    else if (name === 'x-keel-program') out.program = v
    else if (name === 'x-keel-export-control') out.exportControl = v
    else if (name === 'x-keel-priority') out.priority = v
    else if (name.startsWith(ATTR_PREFIX) && name.length > ATTR_PREFIX.length) attributes[name.slice(ATTR_PREFIX.length)] = v
  })
  return out
}

/**
 * The request body. On Node it is read straight from the IncomingMessage: asking Hono's
 * lightweight Request for it would build a full fetch Request and a web stream per call.
 */
async function readBody(c: Context<Env>): Promise<Uint8Array> {
  const incoming = c.env?.incoming
  if (incoming && !incoming.readableEnded && incoming.readable) {
    // Events, not `for await`: an async iterator per request costs more than the read.
    return new Promise<Uint8Array>((resolve, reject) => {
      const chunks: Buffer[] = []
      let size = 0
      const onData = (chunk: Buffer): void => {
        size += chunk.byteLength
        if (size > MAX_BODY_BYTES) {
          cleanup()
          incoming.pause()
          reject(bodyTooLarge(c))
          return
        }
        chunks.push(chunk)
      }
      const onEnd = (): void => {
        cleanup()
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
      }
      const onError = (err: Error): void => {
        cleanup()
        reject(err)
      }
      const onClose = (): void => onError(new Error('client closed the connection before the request body ended'))
      const cleanup = (): void => {
        incoming.off('data', onData)
        incoming.off('end', onEnd)
        incoming.off('error', onError)
        incoming.off('close', onClose)
      }
      incoming.on('data', onData)
      incoming.once('end', onEnd)
      incoming.once('error', onError)
      incoming.once('close', onClose)
    })
  }
  return new Uint8Array(await c.req.arrayBuffer())
}

/**
 * The 413 for a body over MAX_BODY_BYTES. keel reads no more of it: the response goes out
 * with Connection: close, and the connection closes after it.
 */
function bodyTooLarge(c: Context<Env>): DispatchError {
  const outgoing = c.env?.outgoing
  if (outgoing) outgoing.shouldKeepAlive = false
  return new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, `request body too large (limit ${MAX_BODY_BYTES} bytes)`, { status: 413 })
}

/** A RequestHeaders view of node's parsed headers (already lower-case; repeats joined as fetch does). */
function nodeHeaders(incoming: IncomingMessage): RequestHeaders {
  const h = incoming.headers
  const value = (v: string | string[]): string => (Array.isArray(v) ? v.join(', ') : v)
  return {
    get(name) {
      const v = h[name.toLowerCase()]
      return v === undefined ? null : value(v)
    },
    forEach(fn) {
      for (const name of Object.keys(h)) {
        const v = h[name]
        if (v !== undefined) fn(value(v), name)
      }
    },
  }
}

/**
 * Client-disconnect notification without an AbortController per call (they are not free):
 * on Node, the response's 'close' before it finished; under `app.request`, the Request signal.
 */
function clientGone(c: Context<Env>): { onClientGone(fn: () => void): () => void; signal(): AbortSignal } {
  const outgoing = c.env?.outgoing
  let signal: AbortSignal | undefined
  const onClientGone = (fn: () => void): (() => void) => {
    if (!outgoing) {
      const s = c.req.raw.signal
      if (s.aborted) {
        fn()
        return () => {}
      }
      s.addEventListener('abort', fn, { once: true })
      return () => s.removeEventListener('abort', fn)
    }
    if (outgoing.destroyed && !outgoing.writableFinished) {
      fn()
      return () => {}
    }
    const onClose = (): void => {
      if (!outgoing.writableFinished) fn()
    }
    outgoing.once('close', onClose)
    return () => outgoing.off('close', onClose)
  }
  return {
    onClientGone,
    signal() {
      if (signal) return signal
      const controller = new AbortController()
      onClientGone(() => controller.abort(new Error('client connection closed')))
      signal = controller.signal
      return signal
    },
  }
}

export function requestContext(options: RequestContextOptions): MiddlewareHandler<Env> {
  const { runtime, target } = options
  return createMiddleware<Env>(async function requestContext(c, next) {
    const path = target === 'path' ? c.req.path : (c.req.query('target') ?? '')
    const found = routeForPath(path)
    if (!found) {
      throw new DispatchError(DispatchReason.ROUTE_NOT_SUPPORTED, `keel does not manage ${target === 'path' ? 'this path' : `target "${path.slice(0, 64)}"`}; managed routes are /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/messages.`, {
        status: target === 'path' ? 404 : 400,
      })
    }
    const { format, route } = found
    c.set('format', format)
    const adapter = ADAPTERS[format]
    const incoming = c.env?.incoming
    const headers = incoming ? nodeHeaders(incoming) : c.req.raw.headers
    const origin = originOfIncoming(incoming)
    const provider = selectProvider(runtime, format, origin?.boundName, headers)
    if (provider.format !== format) {
      throw new DispatchError(DispatchReason.ROUTE_NOT_SUPPORTED, `provider "${provider.name}" speaks the ${provider.format} wire format, not ${path}.`, { status: 404 })
    }
    const endpoints = orderEndpoints(provider, headers.get('x-keel-upstream'))

    const declared = Number(headers.get('content-length') ?? '0')
    if (declared > MAX_BODY_BYTES) throw bodyTooLarge(c)
    const raw = await readBody(c)
    if (raw.byteLength > MAX_BODY_BYTES) throw bodyTooLarge(c)
    let body: unknown
    try {
      body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw))
    } catch {
      throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, 'keel could not evaluate this call: the request body is not valid UTF-8 JSON.', { status: 400 })
    }
    if (!isObject(body)) throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, 'keel could not evaluate this call: the request body must be a JSON object.', { status: 400 })
    const facts = adapter.facts(route, body)
    if (!facts) {
      throw new DispatchError(DispatchReason.REQUEST_UNEVALUABLE, `keel could not evaluate this call: the ${route} request has no "model"${format === 'anthropic' ? '' : ''}.`, { status: 400 })
    }

    const { defaultAgent, defaultProject } = runtime.config.identity
    const agent = origin ? origin.agent : identity(headers.get('x-keel-agent'), defaultAgent, 'agent')
    const project = origin ? (origin.project ?? defaultProject) : identity(headers.get('x-keel-project'), defaultProject, 'project')
    const bindingKey = origin?.bindingKey ?? headers.get('x-keel-binding-key') ?? ''
    const attrs: PermitAttributes = {
      provider: provider.name,
      model: facts.model,
      agent,
      project,
      route,
      ...workflowAttributes(headers),
    }
    const region = endpoints[0]?.region
    if (region !== undefined) attrs.region = region

    let strings: string[] | undefined
    const gone = clientGone(c)
    const call: CallContext = {
      startedAt: runtime.now(),
      format,
      adapter,
      route,
      provider,
      endpoints,
      raw,
      requestSha256: sha256Hex(raw),
      body,
      facts,
      attrs,
      bindingKey,
      origin,
      headers,
      get signal() {
        return gone.signal()
      },
      onClientGone: gone.onClientGone,
      strings: () => (strings ??= collectStrings(body)),
    }
    c.set('call', call)
    await next()
  })
}
