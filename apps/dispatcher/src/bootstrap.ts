/**
 * Builds a ready dispatcher from a validated config: credentials (key-file mode checked),
 * permit signing key, budget ledger file, and a governance sink (the caller's, else the
 * hash-chained @keel/audit log in `spec.audit.dir`). Fails fast on any problem. Used by
 * `keel dispatcher serve`, and by `keel run` for its in-process mount.
 */
import { createAuditSink } from '@keel/audit'
import { NOOP_LOGGER, type GovernanceSink, type Logger } from '@keel/core'
import { createApp, type DispatcherApp } from './app.js'
import { BudgetLedger } from './budget/ledger.js'
import { ChallengeRegistry } from './challenge/registry.js'
import { loadCredentials, readSecret, type CredentialStore } from './credentials/store.js'
import { createMemoryGovernanceSink } from './governance.js'
import { createPermitSigner, type PermitSigner } from './permits/sign.js'
import type { DispatcherConfig } from './types.js'

/** Events a dispatcher without `spec.audit` keeps in memory. */
const MEMORY_EVENTS = 10_000

export interface CreateDispatcherOptions {
  config: DispatcherConfig
  /** Overrides `spec.audit` (e.g. `keel run` passes the sandbox's audit sink). */
  governance?: GovernanceSink
  logger?: Logger
  env?: NodeJS.ProcessEnv
  fetch?: typeof fetch
  /** See DispatcherDeps.ownsEventLoop (true for `keel dispatcher serve`). */
  ownsEventLoop?: boolean
}

export interface Dispatcher {
  app: DispatcherApp
  credentials: CredentialStore
  ledger: BudgetLedger
  signer: PermitSigner
  challenges: ChallengeRegistry
  /** True when the signing key was generated for this process (permits die with it). */
  ephemeralSigningKey: boolean
  close(): Promise<void>
}

export async function createDispatcher(options: CreateDispatcherOptions): Promise<Dispatcher> {
  const { config } = options
  const logger = options.logger ?? NOOP_LOGGER
  const credentials = await loadCredentials(config, options.env)
  const signingKey = config.permits.signingKey ? await readSecret(config.permits.signingKey, options.env) : undefined
  const signer = createPermitSigner(signingKey)
  const ledger = config.budgets?.ledgerPath
    ? await BudgetLedger.open({ path: config.budgets.ledgerPath, onError: (err) => logger.error('budget ledger write failed', { error: String(err) }) })
    : BudgetLedger.inMemory()
  const owned = options.governance === undefined && config.audit ? createAuditSink({ dir: config.audit.dir, fsync: config.audit.fsync }) : undefined
  const governance = options.governance ?? owned ?? createMemoryGovernanceSink(MEMORY_EVENTS)
  if (options.governance === undefined && owned === undefined) {
    logger.warn(`no governance log configured (spec.audit.dir); only the last ${MEMORY_EVENTS} events are kept, in memory`)
  }
  const challenges = new ChallengeRegistry()
  const app = createApp({
    config,
    credentials,
    governance,
    ledger,
    signer,
    challenges,
    logger,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ownsEventLoop: options.ownsEventLoop === true,
  })
  return {
    app,
    credentials,
    ledger,
    signer,
    challenges,
    ephemeralSigningKey: signingKey === undefined,
    async close() {
      challenges.close()
      await ledger.close()
      await owned?.close()
    },
  }
}
