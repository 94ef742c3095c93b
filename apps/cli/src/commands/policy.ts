import type { Command } from 'commander'

/** Registers `keel policy ...`. */
export function registerPolicyCommands(program: Command): void {
  void program
}
