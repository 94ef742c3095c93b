/**
 * Shared setup for the dispatcher suites: a fake provider on loopback and a listening
 * dispatcher in front of it. Loopback only; everything is closed in afterAll.
 */
import { createApp, createMemoryGovernanceSink, loadDispatcherConfig, serveDispatcher, staticCredentials, BudgetLedger, type MemoryGovernanceSink, type ServedDispatcher } from '@keel/dispatcher'
import { startFakeProvider, type FakeProvider } from '../fake-provider/index.mjs'

export const OPENAI_KEY = 'sk-real-openai-integration-0123456789abcdef'
export const ANTHROPIC_KEY = 'sk-ant-real-integration-0123456789abcdef'
export const ALICE_TOKEN = 'alice-integration-token-0123456789'
export const DUMMY = 'sk-keel-dummy-agent-key'

export interface Stack {
  fake: FakeProvider
  backup: FakeProvider
  dispatcher: ServedDispatcher
  events: MemoryGovernanceSink['events']
  ledger: BudgetLedger
  close(): Promise<void>
}

export function specFor(fake: FakeProvider, backup: FakeProvider, extra = ''): string {
  return `apiVersion: keel.dev/v1alpha1
kind: DispatcherConfig
metadata: { name: integration }
spec:
  providers:
    - name: openai
      format: openai
      hosts: [api.openai.com]
      endpoints: ["${fake.openaiBaseUrl}", "${backup.openaiBaseUrl}"]
      credential: { env: KEEL_OPENAI_KEY }
    - name: anthropic
      format: anthropic
      hosts: [api.anthropic.com]
      endpoints: ["${fake.anthropicBaseUrl}"]
      credential: { env: KEEL_ANTHROPIC_KEY }
  placeholders: ["sk-keel-dummy*"]
  pricing:
    - { model: "gpt-*", inputPerMTok: 1, outputPerMTok: 2, maxOutputTokens: 1000 }
    - { model: "text-embedding-*", inputPerMTok: 1, outputPerMTok: 0, maxOutputTokens: 1 }
    - { model: "claude-*", inputPerMTok: 3, outputPerMTok: 15, maxOutputTokens: 1000 }
  budgets:
    defaultProject: { limitUsd: 100 }
    projects: { small: { limitUsd: ${SMALL_BUDGET_USD} } }
  reviewers:
    - { name: alice, token: { env: KEEL_ALICE } }
  permits:
    rules:
      - { name: no-cui-openai, when: { dataClass: [CUI], provider: [openai] }, action: deny, message: "CUI may not be sent to OpenAI. Remove it or use the anthropic provider." }
      - { name: itar-review, when: { exportControl: [ITAR] }, action: challenge, reviewers: [alice], timeoutSeconds: 20 }
      - { name: batch-later, when: { priority: [low] }, action: throttle, retryAfterSeconds: 30 }
      - { name: models, when: { model: ["gpt-*", "text-embedding-*", "claude-*"] }, action: allow }
${extra}`
}

/** Worst case of one small test chat call is below 0.0012 USD; three fit, the fourth does not. */
export const SMALL_BUDGET_USD = 0.0035

export async function startStack(options: { keys?: { openai?: string; anthropic?: string } } = {}): Promise<Stack> {
  const fake = await startFakeProvider({ name: 'primary', expectedKeys: { openai: OPENAI_KEY, anthropic: ANTHROPIC_KEY } })
  const backup = await startFakeProvider({ name: 'backup', expectedKeys: { openai: OPENAI_KEY, anthropic: ANTHROPIC_KEY } })
  const config = loadDispatcherConfig(specFor(fake, backup))
  const sink = createMemoryGovernanceSink()
  const ledger = BudgetLedger.inMemory()
  const app = createApp({
    config,
    credentials: staticCredentials({
      providers: { openai: options.keys?.openai ?? OPENAI_KEY, anthropic: options.keys?.anthropic ?? ANTHROPIC_KEY },
      reviewers: { alice: ALICE_TOKEN },
    }),
    governance: sink,
    ledger,
  })
  const dispatcher = await serveDispatcher(app)
  return {
    fake,
    backup,
    dispatcher,
    events: sink.events,
    ledger,
    async close() {
      await dispatcher.close()
      await fake.close()
      await backup.close()
    },
  }
}

/** Resolves with the value, or rejects after `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
    }),
  ])
}
