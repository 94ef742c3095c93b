/**
 * The `keel` command: wiring only. Each command group lives in `commands/<group>.ts`
 * and registers itself on the program; the logic lives in the packages.
 */
import { Command, CommanderError } from 'commander'
import { isKeelError } from '@keel/core'
import { registerPolicyCommands } from './commands/policy.js'
import { registerAuditCommands } from './commands/audit.js'
import { VERSION } from './version.js'

/** Exit code for usage errors and invalid input (policy files, flags). */
export const EXIT_USAGE = 2

export function buildProgram(): Command {
  const program = new Command('keel')
    .description('Egress control for AI agents: sandbox, policy, dispatcher and audit')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
  registerPolicyCommands(program)
  registerAuditCommands(program)
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
      return err.code === 'ERR_POLICY_INVALID' || err.code === 'ERR_USAGE' ? EXIT_USAGE : 1
    }
    process.stderr.write(`keel: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    return 1
  }
}
