/** @module @keel/core: policy schema, validation, compiled matcher, decisions and reason codes. Pure: no I/O. */
export { KeelError, PolicyError, isKeelError } from './errors.js'
export type { KeelErrorCode, PolicyIssue } from './errors.js'
export { Reason, ALL_REASONS } from './reasons.js'
export { DispatchReason, DispatchEvent, ALL_DISPATCH_REASONS } from './dispatch-reasons.js'
export { NOOP_LOGGER } from './types.js'
export type {
  AgentIdentity,
  CheckResolvedArgs,
  DecideArgs,
  DecideNameArgs,
  Decision,
  GovernanceEventInput,
  GovernanceSink,
  RecordOptions,
  DecisionEvent,
  DecisionSink,
  DenyResponse,
  Logger,
  NameBindings,
  Protocol,
  Registry,
  Resolve,
  Verdict,
  Via,
} from './types.js'

// Policy engine: load (parse, validate, merge), compile, decide.
export { loadPolicy } from './policy/load.js'
export type { PolicySource } from './policy/load.js'
export type { CompiledPolicy } from './decide.js'
export { POLICY_KIND, SUPPORTED_API_VERSION } from './policy/model.js'
export type {
  DefaultPolicy,
  DenyPolicy,
  GuardRails,
  LabelSelector,
  LabelSelectorRequirement,
  Policy,
  PolicyAgent,
  PolicyRoute,
  PortRange,
  RouteMatch,
  RouteRule,
  SelectorOperator,
  SourceLocation,
} from './policy/model.js'

// Address and name helpers shared with dns, proxy and the CLI.
export { normalizeHostname, parseHostnamePattern } from './net/hostname.js'
export type { HostnameMatchKind, HostnamePattern } from './net/hostname.js'
export { parseIp, parseIpBytes, formatIp } from './net/ip.js'
export type { ParsedIp } from './net/ip.js'
export { parseCidr, cidrContains } from './net/cidr.js'
export type { CidrBlock } from './net/cidr.js'
export { classifyAddress } from './net/special-ranges.js'
export type { GuardClass } from './net/special-ranges.js'
export { parseDestination } from './net/destination.js'
export type { Destination } from './net/destination.js'
