/**
 * The dispatcher's domain model: what a validated config turns into, and the attributes
 * a permit is evaluated on. The YAML file format lives in config.ts; nothing here knows
 * about YAML (STYLE §4: file format and domain model are separate types).
 */

/** The two wire formats keel speaks. OpenAI-compatible covers chat completions, responses, embeddings. */
export type WireFormat = 'openai' | 'anthropic'

/** Managed routes, by wire format. */
export type RouteKind = 'chat.completions' | 'responses' | 'embeddings' | 'messages'

/** Where a secret comes from. Files must not be group- or world-accessible. */
export type CredentialSource = { env: string } | { file: string }

/** One allowlisted upstream base URL, e.g. `https://api.openai.com/v1`. No trailing slash. */
export interface Endpoint {
  url: string
  region?: string
}

export interface ProviderConfig {
  name: string
  format: WireFormat
  /** Names the sandbox routes to this provider (`via: dispatcher`), lower-case. */
  hosts: readonly string[]
  /** Allowlisted endpoints, in fallback order. Nothing else is ever dialed. */
  endpoints: readonly Endpoint[]
  credential: CredentialSource
}

export interface PriceEntry {
  /** Glob on the model name (`*` matches any run of characters). */
  model: string
  match: (model: string) => boolean
  /** USD per million input tokens. */
  inputPerMTok: number
  /** USD per million output tokens. */
  outputPerMTok: number
  /** Worst-case output when the request sets no max tokens. */
  maxOutputTokens: number
}

export type BudgetPeriod = 'total' | 'day' | 'month'

export interface BudgetLimit {
  /** Integer micro-dollars (1 USD = 1,000,000), so sums never drift. */
  limitMicroUsd: number
  period: BudgetPeriod
}

export interface BudgetsConfig {
  projects: Readonly<Record<string, BudgetLimit>>
  agents: Readonly<Record<string, BudgetLimit>>
  /** Applies to projects / agents without their own entry. */
  defaultProject?: BudgetLimit
  defaultAgent?: BudgetLimit
  /** Embedded JSONL ledger; in-memory only when absent. */
  ledgerPath?: string
}

export type RuleAction = 'allow' | 'deny' | 'throttle' | 'challenge'

/** The attributes a permit rule can test. Absent attributes never match a condition. */
export interface PermitAttributes {
  provider: string
  model: string
  region?: string
  agent: string
  project: string
  route: RouteKind
  /** Workflow attributes, from request headers (`x-keel-data-class`, …). */
  dataClass?: string
  program?: string
  exportControl?: string
  priority?: string
  /** Any other `x-keel-attr-<name>` header, name lower-case. */
  attributes: Readonly<Record<string, string>>
}

/** Condition keys of a rule's `when`, in the order they are tested. */
export const CONDITION_KEYS = [
  'provider',
  'model',
  'region',
  'agent',
  'project',
  'route',
  'dataClass',
  'program',
  'exportControl',
  'priority',
] as const
export type ConditionKey = (typeof CONDITION_KEYS)[number]

/** A compiled value test: any of the listed globs, case-insensitive. */
export type ValueMatcher = (value: string | undefined) => boolean

export interface CapacityWindow {
  /** 0 = Sunday … 6 = Saturday; all days when absent. */
  days?: readonly number[]
  /** Minutes after midnight in the window's offset. A window with start > end crosses midnight. */
  startMinute: number
  endMinute: number
  /** Minutes east of UTC. */
  utcOffsetMinutes: number
}

export interface PermitRule {
  name: string
  /** Compiled `when`: every listed key must match. */
  when: ReadonlyArray<{ key: ConditionKey | `attributes.${string}`; test: ValueMatcher }>
  window?: CapacityWindow
  action: RuleAction
  /** A message a model can act on, returned with deny / throttle. */
  message?: string
  retryAfterSeconds?: number
  reviewers?: readonly string[]
  timeoutSeconds?: number
}

export interface PermitsConfig {
  defaultAction: 'allow' | 'deny'
  /** Lifetime of permits issued by POST /v1/permits. */
  ttlSeconds: number
  rules: readonly PermitRule[]
  /** Deny calls that carry no permit from POST /v1/permits (permit-first only). */
  requirePermit: boolean
  /** Ed25519 private key (PKCS#8 PEM). An ephemeral key is generated when absent. */
  signingKey?: CredentialSource
}

export interface ReviewerConfig {
  name: string
  /** The reviewer's bearer token for POST /v1/attestations. */
  token: CredentialSource
}

export interface DetectorSpec {
  id: string
  description?: string
  pattern: RegExp
}

export interface FirewallConfig {
  /** Project additions that apply to every project, on top of the baseline. */
  detectors: readonly DetectorSpec[]
  /** Additions per project, on top of the baseline and the global additions. */
  projects: Readonly<Record<string, readonly DetectorSpec[]>>
}

export interface DispatcherConfig {
  name: string
  listen: { host: string; port: number }
  providers: readonly ProviderConfig[]
  /** Extra dummy-key globs the agent may use; any of them left in a forwarded header or the body is unresolved. */
  placeholders: readonly string[]
  pricing: readonly PriceEntry[]
  budgets?: BudgetsConfig
  permits: PermitsConfig
  reviewers: readonly ReviewerConfig[]
  firewall: FirewallConfig
  identity: { defaultAgent: string; defaultProject: string }
  upstream: { timeoutMs: number }
  /**
   * The hash-chained governance log (@keel/audit): one chain per project under `dir`, with
   * the fsync policy for appends (default `batch`: group commit, each append durable).
   */
  audit?: { dir: string; fsync: 'always' | 'batch' | 'never' }
}
