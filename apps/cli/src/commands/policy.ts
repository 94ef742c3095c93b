/**
 * `keel policy check <file>...` and `keel policy explain <file>... --agent --dest`.
 * This file reads the policy files and prints; validation, merging and decisions
 * are @keel/core's. Exit codes: 0 valid / decided (allow or deny alike: the verdict
 * is the output), 2 invalid policy or bad usage.
 */
import type { Command } from 'commander'
import { KeelError, parseDestination, type CompiledPolicy, type Decision, type Destination } from '@keel/core'
import { collect, loadPolicyOrReport, parseLabels } from '../policy-files.js'

const CHECK_HELP = `
Every problem in every file is reported at once, one per line, as
file:line:col: message (exit code 2). Several files, or several YAML documents in
one file, merge into one policy. Reference: docs/policy.md.

Examples:
  $ keel policy check keel.yaml
  ok: 1 file, 4 routes, 1 deny policy, 1 agent (policy "dev-laptop", defaultPolicy deny-all)
  $ keel policy check base.yaml ci-overrides.yaml
`

const EXPLAIN_HELP = `
Prints the decision and why: the matched route and rule, the reason code and, for
a hostname, whether the agent may resolve the name at all. Exit code 0 whether the
verdict is allow or deny; 2 for an invalid policy or bad arguments.

Destinations: host:port, host:port/udp, 10.0.0.5:5432, [2001:db8::1]:5432
(protocol defaults to tcp). Literal IPs are checked against destinationCIDRs only.

Examples:
  $ keel policy explain keel.yaml --agent coder --dest api.anthropic.com:443
  $ keel policy explain keel.yaml --agent ci --label team=platform --dest 10.20.0.5:5432
  $ keel policy explain keel.yaml --agent coder --dest gist.github.com:443 --json
  $ keel policy explain keel.yaml --agent coder --dest registry.npmjs.org:443 --at 2027-01-01T00:00:00Z
`

const plural = (n: number, word: string, many = `${word}s`) => `${n} ${n === 1 ? word : many}`

function summary(policy: CompiledPolicy, files: number): string {
  const { routes, denyPolicies, agents } = policy.model
  return `ok: ${plural(files, 'file')}, ${plural(routes.length, 'route')}, ${plural(denyPolicies.length, 'deny policy', 'deny policies')}, ${plural(agents.length, 'agent')} (policy "${policy.name}", defaultPolicy ${policy.defaultPolicy})`
}

async function check(files: string[]): Promise<void> {
  const policy = await loadPolicyOrReport(files)
  if (!policy) return
  const now = Date.now()
  // Valid, but worth knowing: these exceptions already deny with exception_expired.
  for (const r of policy.model.routes) {
    if (r.expires !== undefined && r.expires <= now) {
      process.stderr.write(`${r.source.file}:${r.source.line}:${r.source.column}: warning: route "${r.name}" expired at ${r.expiresText} (owner: ${r.owner}); it now denies with exception_expired\n`)
    }
  }
  process.stdout.write(`${summary(policy, files.length)}\n`)
}

export interface ExplainOptions {
  agent: string
  dest: string
  label?: string[]
  json?: boolean
  at?: string
}

function parseAt(text: string | undefined): number {
  if (text === undefined) return Date.now()
  const ms = Date.parse(text)
  if (!Number.isFinite(ms)) throw new KeelError('ERR_USAGE', `bad --at "${text}": expected an RFC 3339 time, e.g. 2026-12-31T00:00:00Z`)
  return ms
}

const destinationText = (d: Destination) =>
  `${d.address?.includes(':') ? `[${d.address}]` : (d.address ?? d.host)}:${d.port}/${d.protocol.toLowerCase()}`

const formatLabels = (labels: Readonly<Record<string, string>>) =>
  Object.keys(labels).length === 0 ? '(no labels)' : Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(' ')

const formatRegistry = (r: NonNullable<Decision['registry']>) =>
  Object.entries(r)
    .map(([k, v]) => `${k}=${/\s/.test(String(v)) ? JSON.stringify(v) : v}`)
    .join(' ')

async function explain(files: string[], options: ExplainOptions): Promise<void> {
  const policy = await loadPolicyOrReport(files)
  if (!policy) return
  const destination = parseDestination(options.dest)
  const now = parseAt(options.at)
  const extraLabels = parseLabels(options.label ?? [])
  const listed = policy.model.agents.find((a) => a.name === options.agent)
  for (const [key, value] of Object.entries(extraLabels)) {
    if (listed && key in listed.labels && listed.labels[key] !== value) {
      process.stderr.write(`note: agent "${listed.name}" is listed with ${key}=${listed.labels[key]}; the policy's label wins over --label ${key}=${value}\n`)
    }
  }
  const agent = policy.agent(options.agent, extraLabels)
  const decision = policy.decide({ agent, hostname: destination.host, address: destination.address, port: destination.port, protocol: destination.protocol, now })
  const dns = destination.host !== undefined ? policy.decideName({ agent, hostname: destination.host, now }) : undefined
  const route = decision.route === undefined ? undefined : policy.model.routes.find((r) => r.name === decision.route)
  const source = route ? `${route.source.file}:${route.source.line}:${route.source.column}` : undefined

  if (options.json) {
    const out = {
      verdict: decision.verdict,
      reason: decision.reason,
      route: decision.route ?? null,
      rule: decision.rule ?? null,
      source: source ?? null,
      via: decision.via ?? null,
      registry: decision.registry ?? null,
      denyPolicy: decision.denyPolicy ?? null,
      denyResponse: decision.denyResponse ?? null,
      detail: decision.detail ?? null,
      agent: { name: agent.name, labels: agent.labels, listed: listed !== undefined },
      destination,
      dns: dns ? { verdict: dns.verdict, reason: dns.reason, route: dns.route ?? null } : null,
      policy: policy.name,
      at: new Date(now).toISOString(),
    }
    process.stdout.write(`${JSON.stringify(out)}\n`)
    return
  }

  const rows: [string, string][] = [
    ['agent', `${agent.name}  ${formatLabels(agent.labels)}${listed ? '' : '  (not listed in the policy)'}`],
    ['destination', destinationText(destination)],
  ]
  if (decision.route !== undefined) rows.push(['route', `${decision.route}  ${decision.rule ?? ''}${source ? `  (${source})` : ''}`])
  if (decision.denyPolicy !== undefined) {
    rows.push(['deny policy', `${decision.denyPolicy}: ${decision.denyResponse?.statusCode} ${JSON.stringify(decision.denyResponse?.message)}`])
  }
  if (decision.via !== undefined) rows.push(['via', decision.via])
  if (decision.registry !== undefined) rows.push(['registry', formatRegistry(decision.registry)])
  if (dns) rows.push(['dns', dns.verdict === 'allow' ? 'the name resolves for this agent' : `the name is not resolved (${dns.reason})`])
  if (decision.detail !== undefined) rows.push(['why', decision.detail])
  const width = Math.max(...rows.map(([k]) => k.length))
  process.stdout.write(`${decision.verdict} ${decision.reason}\n`)
  for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`)
}


/** Registers `keel policy check` and `keel policy explain`. */
export function registerPolicyCommands(program: Command): void {
  const policy = program
    .command('policy')
    .description('Validate policy files and explain decisions')
    .addHelpText('after', '\nExamples:\n  $ keel policy check keel.yaml\n  $ keel policy explain keel.yaml --agent coder --dest api.anthropic.com:443\n')

  policy
    .command('check')
    .description('Validate policy files: print a one-line summary (exit 0) or every problem as file:line:col: message (exit 2)')
    .argument('<file...>', 'policy files (YAML); several files merge into one policy')
    .addHelpText('after', CHECK_HELP)
    .action(async (files: string[]) => check(files))

  policy
    .command('explain')
    .description('Explain the decision for one agent and destination: verdict, reason code, route and rule')
    .argument('<file...>', 'policy files (YAML); several files merge into one policy')
    .requiredOption('--agent <name>', 'agent name (labels come from the policy when it lists the agent)')
    .requiredOption('--dest <host-or-ip:port[/tcp|/udp]>', 'destination, e.g. api.example.com:443, 10.0.0.5:5432/tcp, [2001:db8::1]:53/udp')
    .option('--label <key=value>', 'agent label, repeatable; for agents the policy does not list (policy labels win)', collect)
    .option('--at <time>', 'decide as of this RFC 3339 time instead of now (for exceptions with expires)')
    .option('--json', 'print exactly one JSON object: verdict, reason, route, rule, via, registry, detail, agent, destination, …')
    .addHelpText('after', EXPLAIN_HELP)
    .action(async (files: string[], options: ExplainOptions) => explain(files, options))
}
