/**
 * The normalized policy domain model: what loadPolicy produces from the YAML file
 * format after validation, normalization and merging. Other packages read it
 * (e.g. `keel export netpol`); decisions go through the compiled matcher instead.
 * Everything here is deeply frozen.
 */
import type { CidrBlock } from '../net/cidr.js'
import type { HostnamePattern } from '../net/hostname.js'
import type { DenyResponse, Protocol, Registry, Via } from '../types.js'

export type DefaultPolicy = 'deny-all' | 'allow-all'

/** Where something was written: 1-based line and column. */
export interface SourceLocation {
  readonly file: string
  readonly line: number
  readonly column: number
}

export interface PolicyAgent {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly source: SourceLocation
}

/** Kubernetes label-selector operators. */
export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'

export interface LabelSelectorRequirement {
  readonly key: string
  readonly operator: SelectorOperator
  /** Non-empty for In/NotIn, empty for Exists/DoesNotExist. */
  readonly values: readonly string[]
}

/** Kubernetes semantics: every matchLabels pair and every expression must hold; an empty selector selects every agent. */
export interface LabelSelector {
  readonly matchLabels: Readonly<Record<string, string>>
  readonly matchExpressions: readonly LabelSelectorRequirement[]
}

/** Inclusive port range; a single port has start === end. */
export interface PortRange {
  readonly start: number
  readonly end: number
}

/**
 * One match: a destination is matched when it is one of the hostnames OR inside one
 * of the CIDRs, on one of the ports (all ports when `ports` is empty), with this
 * protocol, from an agent the selector selects (every agent when absent).
 */
export interface RouteMatch {
  readonly destinationHostnames: readonly HostnamePattern[]
  readonly destinationCIDRs: readonly CidrBlock[]
  /** Empty means every port of the protocol. */
  readonly ports: readonly PortRange[]
  readonly protocol: Protocol
  readonly sourceAgents?: LabelSelector
  readonly source: SourceLocation
}

export interface RouteRule {
  readonly matches: readonly RouteMatch[]
}

export interface PolicyRoute {
  readonly name: string
  readonly via: Via
  readonly registry?: Registry
  /** Who owns the exception (required with `expires`). */
  readonly owner?: string
  /** An exception: after this instant (ms since the epoch) the route denies with `exception_expired`. */
  readonly expires?: number
  /** `expires` as written (RFC 3339). */
  readonly expiresText?: string
  readonly rules: readonly RouteRule[]
  readonly source: SourceLocation
}

export interface DenyPolicy {
  readonly name: string
  readonly targetRef: { readonly route: string }
  readonly denyResponse: DenyResponse
  readonly source: SourceLocation
}

/** Guard rails are on unless one of these named opt-ins turns a part of them off. */
export interface GuardRails {
  /** Allow link-local / cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254). */
  readonly unsafeAllowMetadata: boolean
  /** Loopback/private ranges that a hostname may resolve to without a CIDR rule (test fake worlds). */
  readonly unsafeAllowResolvedRanges: readonly CidrBlock[]
}

export interface Policy {
  /** metadata.name; several documents with different names are joined with "+". */
  readonly name: string
  readonly defaultPolicy: DefaultPolicy
  readonly agents: readonly PolicyAgent[]
  readonly routes: readonly PolicyRoute[]
  readonly denyPolicies: readonly DenyPolicy[]
  readonly guardRails: GuardRails
}

export const SUPPORTED_API_VERSION = 'keel.dev/v1alpha1'
export const POLICY_KIND = 'EgressPolicy'
