import type { Command } from 'commander'

/** Registers `keel audit ...`. */
export function registerAuditCommands(program: Command): void {
  void program
}
