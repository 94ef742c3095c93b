/**
 * The Hono context, typed once (STYLE §7), and the runtime the middlewares share.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Span } from '@opentelemetry/api'
import type { Logger } from '@keel/core'
import type { BudgetLedger, Reservation } from './budget/ledger.js'
import type { ChallengeRegistry } from './challenge/registry.js'
import type { CredentialStore } from './credentials/store.js'
import type { PlaceholderDetector } from './credentials/placeholders.js'
import type { Detector } from './firewall/detectors.js'
import type { Governance } from './governance.js'
import type { SandboxOrigin } from './origin.js'
import type { PermitDecision } from './permits/evaluate.js'
import type { PermitClaims, PermitSigner } from './permits/sign.js'
import type { RequestFacts, WireFormatAdapter } from './providers/types.js'
import type { UpstreamClient } from './upstream.js'
import type { DispatcherConfig, Endpoint, PermitAttributes, PriceEntry, ProviderConfig, RouteKind, WireFormat } from './types.js'

/**
 * The request headers keel reads, by lower-case name; a fetch `Headers` fits. On Node they
 * come straight from the IncomingMessage: building a fetch Headers per call is not free.
 */
export interface RequestHeaders {
  get(name: string): string | null
  forEach(fn: (value: string, name: string) => void): void
}

/** Everything known about one managed call, filled in by the middlewares in order. */
export interface CallContext {
  readonly startedAt: number
  readonly format: WireFormat
  readonly adapter: WireFormatAdapter
  readonly route: RouteKind
  readonly provider: ProviderConfig
  /** Allowlisted endpoints to try, in order; the first is the one the permit binds. */
  endpoints: readonly Endpoint[]
  /** The exact bytes the client sent. */
  readonly raw: Uint8Array
  readonly requestSha256: string
  readonly body: Record<string, unknown>
  readonly facts: RequestFacts
  readonly attrs: PermitAttributes
  readonly bindingKey: string
  readonly origin: SandboxOrigin | undefined
  /** Headers the client sent, lower-case. */
  readonly headers: RequestHeaders
  /** Aborts when the client goes away (created on first use). */
  readonly signal: AbortSignal
  /** Calls `fn` once if the client goes away before the response is finished; returns an unsubscribe. */
  onClientGone(fn: () => void): () => void
  /** Every string value of the body (firewall and placeholder scans). */
  strings(): readonly string[]
  /** A verified permit-first permit. */
  permit?: { token: string; claims: PermitClaims }
  decision?: PermitDecision
  price?: PriceEntry
  worstCaseMicroUsd?: number
  reservation?: Reservation
  /** Headers to send upstream (allowlisted + the real credential), set by inject-credentials. */
  outbound?: Record<string, string>
}

export type Env = {
  Bindings: { incoming?: IncomingMessage; outgoing?: ServerResponse }
  Variables: {
    call: CallContext
    /** Set as soon as the route is known, so errors use the provider's error shape. */
    format: WireFormat | undefined
    span: Span | undefined
    /**
     * The reason code and permit id of the response, for the trace middleware's span and log
     * line (reading them back from the response headers would make Hono's node adapter build
     * a full Headers object per call).
     */
    outcome: { reason: string; permitId?: string } | undefined
  }
}

/** What the middlewares share; built once by createApp. */
export interface Runtime {
  config: DispatcherConfig
  credentials: CredentialStore
  governance: Governance
  /** See DispatcherDeps.ownsEventLoop. */
  ownsEventLoop: boolean
  /** Managed calls between their first middleware and their response (kept by trace). */
  calls: { inFlight: number }
  ledger: BudgetLedger
  signer: PermitSigner
  challenges: ChallengeRegistry
  logger: Logger
  now: () => number
  upstream: UpstreamClient
  detectorsFor: (project: string) => readonly Detector[]
  placeholders: PlaceholderDetector
}
