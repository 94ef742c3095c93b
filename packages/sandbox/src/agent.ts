/**
 * Starts the agent inside the sandbox's namespace, as the chosen user, with stdio
 * inherited; forwards signals; and turns its end into keel's exit code.
 *
 * `nsenter --net=<ns>` enters the namespace and `setpriv` drops to the user (with
 * no_new_privs, so a setuid binary cannot climb back to root); both exec, so the child
 * pid is the agent itself. Arguments are passed as an array, never through a shell.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, statSync } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { delimiter, isAbsolute, join } from 'node:path'
import { KeelError } from '@keel/core'
import type { RunAs } from './identity.js'

/** Finds an executable the way execvp would, so "command not found" is keel's clear error. */
export function findExecutable(command: string, path = process.env.PATH ?? ''): string | undefined {
  const candidates = command.includes('/') ? [command] : path.split(delimiter).filter(Boolean).map((dir) => join(dir, command))
  for (const candidate of candidates) {
    try {
      if (!statSync(candidate).isFile()) continue
      accessSync(candidate, constants.X_OK)
      return isAbsolute(candidate) ? candidate : join(process.cwd(), candidate)
    } catch {
      // not this one
    }
  }
  return undefined
}

export interface AgentLaunch {
  command: string
  args: readonly string[]
  netnsPath: string
  runAs: RunAs
  env: NodeJS.ProcessEnv
  cwd?: string
}

export function agentArgv(launch: AgentLaunch, executable: string): string[] {
  const drop =
    launch.runAs.uid === 0
      ? []
      : [
          'setpriv',
          `--reuid=${launch.runAs.uid}`,
          `--regid=${launch.runAs.gid}`,
          launch.runAs.user !== undefined ? '--init-groups' : '--clear-groups',
          '--no-new-privs',
          '--',
        ]
  return ['nsenter', `--net=${launch.netnsPath}`, '--', ...drop, executable, ...launch.args]
}

export function spawnAgent(launch: AgentLaunch): ChildProcess {
  const executable = findExecutable(launch.command, launch.env.PATH)
  if (!executable) {
    throw new KeelError('ERR_COMMAND_NOT_FOUND', `command not found: ${launch.command} (not an executable file, nor on PATH)`)
  }
  const [file, ...args] = agentArgv(launch, executable)
  return spawn(file!, args, { stdio: 'inherit', env: launch.env, cwd: launch.cwd ?? process.cwd() })
}

/** Signals keel passes on to the agent. */
const FORWARDED: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH', 'SIGINT']
/** Signals that, before the agent runs, mean "stop": the launcher tears down instead. */
const TERMINATING: ReadonlySet<NodeJS.Signals> = new Set(['SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGINT'])

/**
 * Owns keel's signal handling for the whole run, from before the namespace exists, so
 * that no signal kills the launcher with a half-built sandbox. Before the agent starts,
 * a terminating signal is remembered (`pending`); the launcher checks it between steps and
 * tears down. Once the agent runs, signals are forwarded to it, pending ones first.
 * Ctrl-C at a terminal already reaches the agent (same process group), so SIGINT is
 * forwarded only when stdin is not a terminal, i.e. when someone sent it to keel alone.
 */
export class SignalRelay {
  private child: ChildProcess | undefined
  private readonly handlers = new Map<NodeJS.Signals, () => void>()
  pending: NodeJS.Signals | undefined

  constructor() {
    for (const signal of FORWARDED) {
      const handler = () => this.onSignal(signal)
      this.handlers.set(signal, handler)
      process.on(signal, handler)
    }
  }

  /** Starts forwarding to the agent, beginning with a signal that arrived during set-up. */
  attach(child: ChildProcess): void {
    this.child = child
    if (this.pending) this.forward(this.pending)
  }

  dispose(): void {
    for (const [signal, handler] of this.handlers) process.off(signal, handler)
    this.handlers.clear()
  }

  private onSignal(signal: NodeJS.Signals): void {
    if (!this.child) {
      if (TERMINATING.has(signal)) this.pending ??= signal
      return
    }
    if (signal === 'SIGINT' && process.stdin.isTTY) return
    this.forward(signal)
  }

  private forward(signal: NodeJS.Signals): void {
    const child = this.child
    if (child && child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
}

/** Exit status as a shell reports it: the code, or 128 + the signal's number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code
  return 128 + (signal ? ((osConstants.signals as Record<string, number>)[signal] ?? 0) : 0)
}

/** Waits for the agent and resolves to its exit status. */
export function waitForAgent(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new KeelError('ERR_INTERNAL', `could not start the agent: ${err.message}`, { cause: err })))
    child.once('exit', (code, signal) => resolve(exitStatus(code, signal)))
  })
}
