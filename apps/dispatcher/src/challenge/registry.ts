/**
 * Held calls awaiting attestation. A challenge rule opens a challenge naming its
 * reviewers; the call waits on it until one of them records a decision through
 * POST /v1/attestations, or the timeout passes (denied, `challenge_timeout`), or the
 * client goes away (cancelled). Only a listed reviewer's attestation counts.
 */
import { randomUUID } from 'node:crypto'

export type ChallengeOutcome =
  | { decision: 'approve' | 'reject'; reviewer: string; note?: string }
  | { decision: 'timeout' }
  | { decision: 'cancelled' }

export interface ChallengeSummary {
  id: string
  rule: string
  reviewers: readonly string[]
  createdAt: number
  expiresAt: number
  /** What is held: provider, model, agent, project, workflow attributes. Never the prompt. */
  subject: Record<string, unknown>
}

export interface OpenChallenge {
  summary: ChallengeSummary
  outcome: Promise<ChallengeOutcome>
}

export type AttestResult = 'recorded' | 'unknown' | 'reviewer_not_allowed'

interface Entry {
  summary: ChallengeSummary
  resolve: (o: ChallengeOutcome) => void
  timer: NodeJS.Timeout
}

export interface ChallengeRegistryOptions {
  now?: () => number
  /** Upper bound on challenges held at once; beyond it new ones time out at once. */
  maxPending?: number
}

export class ChallengeRegistry {
  private readonly pending = new Map<string, Entry>()
  private readonly now: () => number
  private readonly maxPending: number

  constructor(options: ChallengeRegistryOptions = {}) {
    this.now = options.now ?? Date.now
    this.maxPending = options.maxPending ?? 1000
  }

  open(args: { rule: string; reviewers: readonly string[]; timeoutMs: number; subject: Record<string, unknown>; signal?: AbortSignal }): OpenChallenge {
    const createdAt = this.now()
    const summary: ChallengeSummary = {
      id: randomUUID(),
      rule: args.rule,
      reviewers: [...args.reviewers],
      createdAt,
      expiresAt: createdAt + args.timeoutMs,
      subject: args.subject,
    }
    if (this.pending.size >= this.maxPending) {
      return { summary, outcome: Promise.resolve({ decision: 'timeout' }) }
    }
    const outcome = new Promise<ChallengeOutcome>((resolve) => {
      const finish = (o: ChallengeOutcome): void => {
        const e = this.pending.get(summary.id)
        if (!e) return
        clearTimeout(e.timer)
        this.pending.delete(summary.id)
        args.signal?.removeEventListener('abort', onAbort)
        resolve(o)
      }
      const onAbort = (): void => finish({ decision: 'cancelled' })
      const timer = setTimeout(() => finish({ decision: 'timeout' }), args.timeoutMs)
      timer.unref()
      this.pending.set(summary.id, { summary, resolve: finish, timer })
      if (args.signal?.aborted) onAbort()
      else args.signal?.addEventListener('abort', onAbort, { once: true })
    })
    return { summary, outcome }
  }

  /** Records a reviewer's decision. Only a reviewer the challenge names is accepted. */
  attest(args: { challengeId: string; reviewer: string; decision: 'approve' | 'reject'; note?: string }): AttestResult {
    const e = this.pending.get(args.challengeId)
    if (!e) return 'unknown'
    if (!e.summary.reviewers.includes(args.reviewer)) return 'reviewer_not_allowed'
    e.resolve(args.note === undefined ? { decision: args.decision, reviewer: args.reviewer } : { decision: args.decision, reviewer: args.reviewer, note: args.note })
    return 'recorded'
  }

  get(id: string): ChallengeSummary | undefined {
    return this.pending.get(id)?.summary
  }

  /** Pending challenges, optionally only those a reviewer may decide. */
  list(reviewer?: string): ChallengeSummary[] {
    const out: ChallengeSummary[] = []
    for (const e of this.pending.values()) if (reviewer === undefined || e.summary.reviewers.includes(reviewer)) out.push(e.summary)
    return out
  }

  /** Times out every pending challenge (shutdown). */
  close(): void {
    for (const e of [...this.pending.values()]) e.resolve({ decision: 'timeout' })
  }
}
