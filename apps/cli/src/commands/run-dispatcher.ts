/**
 * `keel run --dispatcher-config`: wiring only. Builds the in-process dispatcher the sandbox
 * hands `via: dispatcher` connections to: the config, the hash-chained audit sink
 * (@keel/audit) as its governance sink, `createDispatcher` and `createInProcessServer`.
 * The sandbox does the TLS side (packages/sandbox/src/dispatcher-mount.ts).
 */
import { accessSync, constants, mkdirSync } from 'node:fs'
import { KeelError } from '@keel/core'
import { createAuditSink } from '@keel/audit'
import { createDispatcher, createInProcessServer, readDispatcherConfig, type DispatcherConfig } from '@keel/dispatcher'
import { checkDispatcherHosts, dispatcherRoutes, type SandboxDispatcher } from '@keel/sandbox'
import type { CompiledPolicy } from '@keel/core'

export interface RunDispatcher extends SandboxDispatcher {
  /** Stops serving, then closes the dispatcher (ledger) and the audit sink. */
  close(): Promise<void>
}

export interface OpenRunDispatcherOptions {
  configPath: string
  policy: CompiledPolicy
  /** Directory of the hash-chained governance logs (`<dir>/<project>.jsonl`). */
  auditDir: string
  env?: NodeJS.ProcessEnv
}

/** Variables the dispatcher reads secrets from: the agent never gets them. */
function secretEnvNames(config: DispatcherConfig): string[] {
  const sources = [
    ...config.providers.map((p) => p.credential),
    ...config.reviewers.map((r) => r.token),
    ...(config.permits.signingKey ? [config.permits.signingKey] : []),
  ]
  return sources.flatMap((s) => ('env' in s ? [s.env] : []))
}

/**
 * Fails fast, before the sandbox exists: a config that does not load, a policy name no
 * provider serves, an audit directory keel cannot write, a missing key.
 */
export async function openRunDispatcher(options: OpenRunDispatcherOptions): Promise<RunDispatcher> {
  const config = await readDispatcherConfig(options.configPath)
  const hosts = config.providers.flatMap((p) => p.hosts)
  checkDispatcherHosts(dispatcherRoutes(options.policy), hosts) // warnings are printed by the launcher
  try {
    mkdirSync(options.auditDir, { recursive: true, mode: 0o750 })
    accessSync(options.auditDir, constants.W_OK)
  } catch (err) {
    throw new KeelError('ERR_AUDIT_IO', `the audit directory ${options.auditDir} is not writable: ${(err as Error).message}`, { cause: err })
  }
  const sink = createAuditSink({ dir: options.auditDir, fsync: 'batch' })
  let dispatcher
  try {
    dispatcher = await createDispatcher({ config, governance: sink, ...(options.env ? { env: options.env } : {}) })
  } catch (err) {
    await sink.close()
    throw err
  }
  const server = createInProcessServer(dispatcher.app)
  const d = dispatcher
  return {
    hosts,
    secretEnv: secretEnvNames(config),
    secrets: () => d.credentials.secrets(),
    handleConnection: (socket, origin) => server.handleConnection(socket, origin),
    async close() {
      await server.close()
      await d.close()
      await sink.close()
    },
  }
}
