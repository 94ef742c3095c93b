import type { RouteKind, WireFormat } from '../types.js'

/** Token usage as reported by the provider. */
export interface Usage {
  inputTokens: number
  outputTokens: number
}

/** What keel needs to know about a request body to evaluate and price it. */
export interface RequestFacts {
  model: string
  stream: boolean
  /** Max output tokens the request asks for; absent when it sets none. */
  maxOutputTokens?: number
}

/** Reads usage out of a stream as events go by. */
export interface StreamUsageTracker {
  onEvent(event: string | undefined, data: string): void
  usage(): Usage | undefined
}

/** Wire-format knowledge for one vendor family. Pure: no I/O. */
export interface WireFormatAdapter {
  readonly format: WireFormat
  /** The managed route for an incoming path such as `/v1/chat/completions`, if any. */
  routeFor(path: string): RouteKind | undefined
  /**
   * The upstream path relative to an endpoint base URL. OpenAI-style bases include `/v1`
   * (`https://api.openai.com/v1` + `/chat/completions`); Anthropic bases do not
   * (`https://api.anthropic.com` + `/v1/messages`), matching each SDK's `baseURL`.
   */
  upstreamPath(route: RouteKind): string
  /** Facts from a parsed JSON body; undefined when the body is not a valid request (fail-closed). */
  facts(route: RouteKind, body: unknown): RequestFacts | undefined
  /**
   * The body to send upstream when keel must change it (e.g. ask for streamed usage so it
   * can settle); undefined to send the client's bytes unchanged.
   */
  prepareBody(route: RouteKind, body: Record<string, unknown>): Record<string, unknown> | undefined
  usageFromJson(route: RouteKind, body: unknown): Usage | undefined
  streamUsage(route: RouteKind): StreamUsageTracker
  /** Request headers that carry the agent's credential: dropped before the real one is set. */
  readonly credentialHeaders: readonly string[]
  /** The header(s) carrying the real key. */
  authHeaders(key: string): Record<string, string>
}

export const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0)

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

export function positiveInt(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined
}
