import { Option, type Command } from 'commander'
import { collectGarbage, dispatcherRoutes, EXIT_DENIED, findExecutable, resolveRunAs, runSandbox } from '@keel/sandbox'
import { KeelError, type CompiledPolicy } from '@keel/core'
import { defaultAuditDir } from '@keel/audit'
import { collect, loadPolicyOrReport, parseLabels } from '../policy-files.js'
import type { RunDispatcher } from './run-dispatcher.js'

const RUN_HELP = `
Runs <command> in a network namespace where it reaches only what the policy allows.
DNS goes to keel's resolver (denied names get NXDOMAIN and never leave the machine),
every TCP connection goes through keel's proxy (which checks the name, SNI or Host),
everything else is rejected at once. Needs root; the agent runs as the invoking user
(SUDO_UID/SUDO_GID), or --user, and as root only with --as-root.

Names the policy routes \`via: dispatcher\` (LLM providers) go to keel's dispatcher, in
process: keel terminates their TLS with a per-sandbox CA (name-constrained to those
names; the agent trusts it through NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
CURL_CA_BUNDLE and GIT_SSL_CAINFO), checks a permit, swaps the agent's dummy key for the
real one and records governance events in the audit log. That needs --dispatcher-config;
without it those names are denied (dispatcher_unavailable). The variables the config reads
keys from are removed from the agent's environment.

Exit code: the agent's; 127 command not found, 125 the sandbox could not start,
2 invalid policy or flags, ${EXIT_DENIED} with --fail-on-deny when the agent succeeded but
something was denied.

Examples:
  $ sudo keel run --policy keel.yaml -- curl https://api.example.com/
  $ sudo keel run --policy ci.yaml --agent ci --report egress.json --fail-on-deny -- npm test
  $ sudo keel run --policy keel.yaml --upstream-dns 127.0.0.1:5353 --log flows.jsonl -- python3 agent.py
  $ sudo KEEL_ANTHROPIC_KEY=sk-ant-... keel run --policy keel.yaml --dispatcher-config dispatcher.yaml -- node agent.js
`

interface RunOptions {
  policy: string[]
  agent?: string
  label: string[]
  user?: string
  asRoot?: boolean
  upstreamDns?: string
  report?: string
  log?: string
  failOnDeny?: boolean
  quiet?: boolean
  dispatcherConfig?: string
  auditDir?: string
}

/** --agent, or the policy's only agent, or an unlisted identity named "default". */
function pickAgent(policy: CompiledPolicy, options: RunOptions) {
  const labels = parseLabels(options.label)
  if (options.agent !== undefined) return policy.agent(options.agent, labels)
  const listed = policy.model.agents
  if (listed.length === 1) return policy.agent(listed[0]!.name, labels)
  if (listed.length === 0) return policy.agent('default', labels)
  throw new KeelError('ERR_USAGE', `the policy lists several agents (${listed.map((a) => a.name).join(', ')}): choose one with --agent <name>`)
}

async function run(commandLine: string[], options: RunOptions): Promise<void> {
  const [command, ...args] = commandLine
  if (command === undefined) throw new KeelError('ERR_USAGE', 'no command given: keel run --policy <file> -- <command> [args...]')
  if (options.policy.length === 0) throw new KeelError('ERR_USAGE', 'keel run needs --policy <file> (repeatable)')
  // The user lookup (`getent`, a process start) runs while the policy loads; its error,
  // if any, is reported where it was before, after the checks above and below.
  const runAsLookup = resolveRunAs({
    ...(options.user !== undefined ? { user: options.user } : {}),
    ...(options.asRoot ? { asRoot: true } : {}),
  })
  runAsLookup.catch(() => {})
  const policy = await loadPolicyOrReport(options.policy)
  if (!policy) return
  if (!findExecutable(command)) {
    throw new KeelError('ERR_COMMAND_NOT_FOUND', `command not found: ${command} (not an executable file, nor on PATH)`)
  }
  if (process.getuid?.() !== 0) {
    throw new KeelError('ERR_NOT_ROOT', 'keel run needs root to create the network namespace and its firewall: run it with sudo')
  }
  const agent = pickAgent(policy, options)
  const runAs = await runAsLookup
  let dispatcher: RunDispatcher | undefined
  if (options.dispatcherConfig !== undefined) {
    if (dispatcherRoutes(policy).routes.length === 0) {
      process.stderr.write(`keel: --dispatcher-config: the policy routes nothing via: dispatcher, so the dispatcher is not started\n`)
    } else {
      // Loaded only here: the dispatcher, Hono and the audit log are startup cost for every other run.
      const { openRunDispatcher } = await import('./run-dispatcher.js')
      dispatcher = await openRunDispatcher({ configPath: options.dispatcherConfig, policy, auditDir: options.auditDir ?? defaultAuditDir() })
    }
  }
  try {
    const result = await runSandbox({
      policy,
      policyFiles: options.policy,
      agent,
      command,
      args,
      runAs,
      ...(options.upstreamDns !== undefined ? { upstreamDns: options.upstreamDns } : {}),
      ...(options.report !== undefined ? { reportPath: options.report } : {}),
      ...(options.log !== undefined ? { logPath: options.log } : {}),
      ...(options.failOnDeny ? { failOnDeny: true } : {}),
      ...(options.quiet ? { quiet: true } : {}),
      ...(dispatcher ? { dispatcher } : {}),
    })
    process.exitCode = result.exitCode
  } finally {
    await dispatcher?.close()
  }
}

/** Registers `keel run` and `keel gc`. */
export function registerRunCommands(program: Command): void {
  program
    .command('run')
    .description('run a command in an egress sandbox that enforces a policy')
    .argument('<command...>', 'the agent command and its arguments (after --)')
    .option('-p, --policy <file>', 'policy file (repeatable; files merge)', collect, [])
    .option('-a, --agent <name>', "agent identity whose labels select routes (default: the policy's only agent)")
    .option('-l, --label <key=value>', 'extra label for the agent (repeatable)', collect, [])
    .option('-u, --user <name|uid>', 'run the agent as this user (default: SUDO_UID/SUDO_GID)')
    .option('--as-root', 'run the agent as root inside the sandbox (only when you mean it)')
    .option('--upstream-dns <host:port>', "resolver keel asks for allowed names (default: the host's, from /etc/resolv.conf)")
    .option('--report <file.json>', 'write every destination tried, with verdict, reason, counts and bytes')
    .option('--log <file.jsonl>', 'write one JSON line per DNS query and connection')
    .option('--fail-on-deny', `exit ${EXIT_DENIED} when the agent succeeded but anything was denied (for CI)`)
    .option('-q, --quiet', 'do not print the destination table at exit')
    .option('--dispatcher-config <file>', 'serve the via: dispatcher names with this dispatcher config (kind: DispatcherConfig)')
    .addOption(
      new Option('--audit-dir <dir>', "the dispatcher's governance logs (<dir>/<project>.jsonl; default /var/lib/keel/audit as root)").env('KEEL_AUDIT_DIR'),
    )
    .passThroughOptions()
    .addHelpText('after', RUN_HELP)
    .action(run)

  program
    .command('gc')
    .description('remove namespaces and state that killed `keel run` launchers left behind')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nLive sandboxes are never touched.\n\nExample:\n  $ sudo keel gc\n')
    .action(async (options: { json?: boolean }) => {
      if (process.getuid?.() !== 0) throw new KeelError('ERR_NOT_ROOT', 'keel gc needs root to delete network namespaces: run it with sudo')
      const result = await collectGarbage()
      if (options.json) {
        process.stdout.write(JSON.stringify(result) + '\n')
      } else {
        for (const r of result.removed) process.stdout.write(`removed ${r.netns ?? r.dir}: ${r.why}\n`)
        for (const k of result.kept) process.stdout.write(`kept sandbox ${k.id} (launcher pid ${k.pid} is running)\n`)
        for (const e of result.errors) process.stderr.write(`keel gc: ${e}\n`)
        if (result.removed.length === 0 && result.errors.length === 0) process.stdout.write('nothing to clean up\n')
      }
      if (result.errors.length > 0) process.exitCode = 1
    })
}
