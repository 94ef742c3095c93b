/** @module @keel/core: policy schema, validation, compiled matcher, decisions and reason codes. Pure: no I/O. */
export { KeelError, PolicyError, isKeelError } from './errors.js'
export type { KeelErrorCode, PolicyIssue } from './errors.js'
export { Reason, ALL_REASONS } from './reasons.js'
export { NOOP_LOGGER } from './types.js'
export type {
  AgentIdentity,
  CheckResolvedArgs,
  DecideArgs,
  DecideNameArgs,
  Decision,
  GovernanceEventInput,
  GovernanceSink,
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
