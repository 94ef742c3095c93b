/**
 * The domain model shared by every package: agents, destinations, decisions, and the
 * small interfaces (resolve, name bindings, decision sink, logger) that packages use
 * to talk to each other without importing each other.
 */
import type { Reason } from './reasons.js'

export type Protocol = 'TCP' | 'UDP'
export type Verdict = 'allow' | 'deny'
export type Via = 'direct' | 'dispatcher'

/** Who is asking: the agent's name and the labels that select routes. */
export interface AgentIdentity {
  name: string
  labels: Readonly<Record<string, string>>
}

/** Registry metadata a route carries; decisions carry it along for logs and audit. */
export interface Registry {
  owner?: string
  purpose?: string
  dataClass?: string
}

export interface DenyResponse {
  statusCode: number
  message: string
}

/** A decision about one destination. A deny is a value, never an exception. */
export interface Decision {
  verdict: Verdict
  reason: Reason
  /** Name of the route that decided (absent for default decisions). */
  route?: string
  /** Where in the route, e.g. `rules[0].matches[1]`. */
  rule?: string
  /** For allowed hostname routes: how to reach it. */
  via?: Via
  registry?: Registry
  /** From a deny policy. */
  denyResponse?: DenyResponse
  /** Name of the deny policy that flipped the route. */
  denyPolicy?: string
  /** Human explanation, for `policy explain` and 403 bodies. */
  detail?: string
}

/** Arguments for a connection decision. Exactly one of hostname / address is set. */
export interface DecideArgs {
  agent: AgentIdentity
  /** Normalized or raw hostname (the matcher normalizes: case, trailing dot, IDN). */
  hostname?: string
  /** Literal IP address (v4, v6, or IPv4-mapped v6). */
  address?: string
  port: number
  protocol: Protocol
  /** Milliseconds since the epoch: core never reads a clock. */
  now: number
}

/** Arguments for a DNS decision: may this agent resolve this name at all? */
export interface DecideNameArgs {
  agent: AgentIdentity
  hostname: string
  now: number
}

/** After keel resolved an allowed hostname upstream: may it dial this address? (guard rails) */
export interface CheckResolvedArgs {
  agent: AgentIdentity
  hostname: string
  address: string
  port: number
  protocol: Protocol
  now: number
}

/** Resolves a name upstream (keel's own resolution; never the agent's choice). */
export type Resolve = (hostname: string, options?: { signal?: AbortSignal }) => Promise<string[]>

/** Synthetic address ↔ name table kept by the DNS resolver and read by the proxy. */
export interface NameBindings {
  /** True when the address is in the synthetic pools (bound or not). */
  isSynthetic(address: string): boolean
  /** The name bound to a synthetic address, if any. */
  nameFor(address: string): string | undefined
}

/** One record per DNS query and per connection: the flow log. */
export interface DecisionEvent {
  time: number
  kind: 'dns' | 'connection' | 'udp'
  agent: string
  name?: string
  address?: string
  port?: number
  protocol: Protocol
  verdict: Verdict
  reason: Reason
  route?: string
  bytesOut?: number
  bytesIn?: number
  durationMs?: number
  detail?: string
}
export type DecisionSink = (event: DecisionEvent) => void

/** Injected structured logger. Packages never call `console`. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

export const NOOP_LOGGER: Logger = { debug() {}, info() {}, warn() {}, error() {} }

/**
 * A governance event as a producer (dispatcher, sandbox) hands it to the audit log.
 * The log adds sequence number, time (if absent) and the hash chain.
 */
export interface GovernanceEventInput {
  /** Stable event name, e.g. `dispatch.egress_bound`, `permit_request_hash_mismatch`. */
  event: string
  /** Stable reason code (a {@link Reason} or a dispatcher reason such as `provider_endpoint_not_allowed`). */
  reason: string
  /** Who acted: agent or workflow identity. */
  actor: string
  /** What it was about: provider endpoint, destination, permit id. */
  subject: string
  /** Per-project chains: the project this event belongs to. */
  project: string
  /** Milliseconds since the epoch; the log's clock is used when absent. */
  time?: number
  /** Extra structured detail. Never credentials. */
  data?: Record<string, unknown>
}

/** How long `GovernanceSink.record` makes its caller wait. */
export interface RecordOptions {
  /**
   * `sync` (default): resolve once the event is durable. `deferred`: resolve once it is
   * written in its place; the sink makes it durable shortly after. For events nothing
   * waits on (a call's completion), so they do not delay the ones that gate egress.
   */
  durability?: 'sync' | 'deferred'
  /**
   * The caller knows nothing else is waiting on this event loop (e.g. the only call in
   * flight): a sink may wait for the disk on it directly instead of handing the sync to a
   * worker thread, which saves the hand-off (~0.25 ms on a 2-core VM) but would stall
   * anything else the loop had to do.
   */
  inline?: boolean
}

/** Where governance events go (packages/audit implements it; tests use an in-memory one). */
export interface GovernanceSink {
  record(event: GovernanceEventInput, options?: RecordOptions): Promise<void>
}
