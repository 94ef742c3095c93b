import { InvalidArgumentError, type Command } from 'commander'
import {
  createDispatcher,
  createJsonLogger,
  readDispatcherConfig,
  serveDispatcher,
  type Dispatcher,
} from '@keel/dispatcher'

function parsePort(value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number (0-65535)')
  return n
}

export interface DispatcherServeOptions {
  config: string
  port?: number
  host?: string
}

/**
 * `keel dispatcher serve`: loads the config (fail fast: bad config, unreadable or
 * group/world-readable key files, unset key variables), listens, and runs until SIGINT or
 * SIGTERM. Logs are JSON lines on stderr with every known secret scrubbed.
 */
export async function serveCommand(options: DispatcherServeOptions, signal?: AbortSignal): Promise<void> {
  const config = await readDispatcherConfig(options.config)
  let dispatcher: Dispatcher | undefined
  const logger = createJsonLogger((line) => process.stderr.write(line), () => dispatcher?.credentials.secrets() ?? [])
  // Serving calls is all this process does: a lone call may sync its audit record inline.
  dispatcher = await createDispatcher({ config, logger, ownsEventLoop: true })
  const host = options.host ?? config.listen.host
  const port = options.port ?? config.listen.port
  const served = await serveDispatcher(dispatcher.app, { host, port })
  process.stdout.write(`keel dispatcher "${config.name}" listening on ${served.url}\n`)
  process.stdout.write(`permit signing key ${dispatcher.signer.keyId}${dispatcher.ephemeralSigningKey ? ' (ephemeral: set spec.permits.signingKey to keep permits valid across restarts)' : ''}\n`)
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      signal?.removeEventListener('abort', stop)
      resolve()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    if (signal?.aborted) stop()
    else signal?.addEventListener('abort', stop, { once: true })
  })
  await served.close()
  await dispatcher.close()
  process.stdout.write('keel dispatcher stopped\n')
}

/** Registers `keel dispatcher ...`. */
export function registerDispatcherCommands(program: Command): void {
  const dispatcher = program
    .command('dispatcher')
    .description('Governed dispatcher for LLM provider calls: permits, budgets, prompt firewall, credential injection, audit')

  dispatcher
    .command('serve')
    .description('Serve the dispatcher on a TCP port (OpenAI-compatible and Anthropic wire formats)')
    .requiredOption('--config <file>', 'dispatcher config (YAML, kind: DispatcherConfig); see examples/dispatcher.yaml')
    .option('--port <n>', 'port to listen on (default: spec.listen.port, else 8787; 0 picks a free one)', parsePort)
    .option('--host <addr>', 'address to listen on (default: spec.listen.host, else 127.0.0.1)')
    .addHelpText(
      'after',
      `
Point an SDK at it with a dummy key; keel injects the real one:
  OpenAI:    new OpenAI({ baseURL: 'http://127.0.0.1:8787/v1', apiKey: 'sk-keel-dummy' })
  Anthropic: new Anthropic({ baseURL: 'http://127.0.0.1:8787', apiKey: 'sk-keel-dummy' })
Identity and workflow attributes travel as headers: x-keel-agent, x-keel-project,
x-keel-data-class, x-keel-program, x-keel-export-control, x-keel-priority, x-keel-attr-<name>.
Permit-first: POST /v1/permits?target=/v1/chat/completions (same body and headers, plus
x-keel-binding-key), then send the call with x-keel-permit.
Reviewers attest held calls: GET /v1/challenges, POST /v1/attestations (bearer token).

Example:
  KEEL_OPENAI_KEY=... keel dispatcher serve --config examples/dispatcher.yaml --port 8787`,
    )
    .action(async (opts: DispatcherServeOptions) => {
      await serveCommand(opts)
    })

  dispatcher
    .command('check')
    .description('Validate a dispatcher config file and exit (errors name file:line:column)')
    .requiredOption('--config <file>', 'dispatcher config (YAML)')
    .action(async (opts: { config: string }) => {
      const config = await readDispatcherConfig(opts.config)
      process.stdout.write(
        `${opts.config}: ok (${config.providers.length} provider(s), ${config.permits.rules.length} permit rule(s), default ${config.permits.defaultAction})\n`,
      )
    })
}
