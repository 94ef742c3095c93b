/**
 * Errors for things that went wrong (bad config, missing kernel support, a failed
 * nft batch). A *deny* is not an error: it is a {@link Decision} with a reason code.
 * `code` is the contract; `message` is prose that may change.
 */
export type KeelErrorCode =
  | 'ERR_POLICY_INVALID'
  | 'ERR_POLICY_VERSION'
  | 'ERR_NFT_UNAVAILABLE'
  | 'ERR_NFT_COMMAND'
  | 'ERR_NO_ORIGINAL_DST'
  | 'ERR_NOT_ROOT'
  | 'ERR_COMMAND_NOT_FOUND'
  | 'ERR_USAGE'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_AUDIT_IO'
  | 'ERR_AUDIT_VERIFY'
  | 'ERR_PERMIT_EXPIRED'
  | 'ERR_INTERNAL'

export class KeelError extends Error {
  override readonly name = 'KeelError'
  constructor(
    readonly code: KeelErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/** Identify by brand and code, not `instanceof`, so it works across package copies. */
export const isKeelError = (e: unknown): e is KeelError =>
  e instanceof Error && e.name === 'KeelError' && typeof (e as { code?: unknown }).code === 'string'

/** One problem found in a policy file: where, what, the bad value and what would be valid. */
export interface PolicyIssue {
  file: string
  line: number
  column: number
  /** JSON-pointer-like path inside the document, e.g. `spec.routes[2].rules[0].matches[0].ports[1]`. */
  path: string
  message: string
  value?: unknown
}

/** Thrown by the policy loader with every issue found, never just the first. */
export class PolicyError extends KeelError {
  constructor(readonly issues: readonly PolicyIssue[]) {
    super(
      'ERR_POLICY_INVALID',
      issues.map((i) => `${i.file}:${i.line}:${i.column}: ${i.message}`).join('\n'),
    )
  }
}
