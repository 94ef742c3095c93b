/**
 * The `keel` command: wiring only. Each command group lives in `commands/<group>.ts`
 * and registers itself on the program; the logic lives in the packages.
 */
import { Command, CommanderError } from 'commander'
import { isKeelError } from '@keel/core'
import { registerPolicyCommands } from './commands/policy.js'
import { registerAuditCommands } from './commands/audit.js'
import { registerDispatcherCommands } from './commands/dispatcher.js'
import { registerRunCommands } from './commands/run.js'
import { VERSION } from './version.js'
import { EXIT_COMMAND_NOT_FOUND, EXIT_SANDBOX_FAILED, EXIT_USAGE } from './exit-codes.js'

export { EXIT_USAGE }

export function buildProgram(): Command {
  const program = new Command('keel')
    .description('Egress control for AI agents: sandbox, policy, dispatcher and audit')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .enablePositionalOptions()
    .exitOverride()
  registerPolicyCommands(program)
  registerAuditCommands(program)
  registerRunCommands(program)
  registerDispatcherCommands(program)
  return program
}

/** Runs the CLI and resolves to the process exit code; never calls process.exit itself. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram()
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
