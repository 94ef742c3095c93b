/**
 * The `keel` command: wiring only. Each command group lives in `commands/<group>.ts`
 * and registers itself on the program; the logic lives in the packages.
 */
import { Command, CommanderError } from 'commander'
import { isKeelError } from '@keel/core'
import { VERSION } from './version.js'
import { EXIT_COMMAND_NOT_FOUND, EXIT_SANDBOX_FAILED, EXIT_USAGE } from './exit-codes.js'

export { EXIT_USAGE }

type Register = (program: Command) => void

/**
 * The command groups, each loaded only when needed: `keel run` must not pay for loading
 * the dispatcher, Hono and the audit code (tens of ms of every sandbox start, see
 * bench/sandbox). Keys are the top-level command names each group registers.
 */
const GROUPS: Record<string, () => Promise<Register>> = {
  policy: async () => (await import('./commands/policy.js')).registerPolicyCommands,
  audit: async () => (await import('./commands/audit.js')).registerAuditCommands,
  run: async () => (await import('./commands/run.js')).registerRunCommands,
  gc: async () => (await import('./commands/run.js')).registerRunCommands,
  dispatcher: async () => (await import('./commands/dispatcher.js')).registerDispatcherCommands,
}

/**
 * The program with the group of `argv[0]` when it names a command, else with every group
 * (help, version, unknown commands and their suggestions).
 */
export async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  const program = new Command('keel')
    .description('Egress control for AI agents: sandbox, policy, dispatcher and audit')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .enablePositionalOptions()
    .exitOverride()
  const first = argv[0]
  const group = first !== undefined && Object.hasOwn(GROUPS, first) ? GROUPS[first] : undefined
  const loaders = group ? [group] : [GROUPS.policy!, GROUPS.audit!, GROUPS.run!, GROUPS.dispatcher!]
  for (const register of await Promise.all(loaders.map((load) => load()))) register(program)
  return program
}

/** Runs the CLI and resolves to the process exit code; never calls process.exit itself. */
export async function main(argv: string[]): Promise<number> {
  const program = await buildProgram(argv)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version surface as "errors" with exit code 0.
      return err.exitCode === 0 ? 0 : EXIT_USAGE
    }
    if (isKeelError(err)) {
      process.stderr.write(`keel: ${err.message}\n`)
      return exitCodeFor(err.code)
    }
    process.stderr.write(`keel: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    return 1
  }
}

function exitCodeFor(code: string): number {
  switch (code) {
    case 'ERR_POLICY_INVALID':
    case 'ERR_POLICY_VERSION':
    case 'ERR_USAGE':
    case 'ERR_CONFIG_INVALID':
      return EXIT_USAGE
    case 'ERR_COMMAND_NOT_FOUND':
      return EXIT_COMMAND_NOT_FOUND
    case 'ERR_NOT_ROOT':
    case 'ERR_NFT_UNAVAILABLE':
      return EXIT_SANDBOX_FAILED
    default:
      return 1
  }
}
