/**
 * `keel run`: one sandbox's composition root. Makes the namespace, applies the ruleset,
 * takes over keel's sockets from inside it, serves DNS and the proxy from the host
 * namespace, runs the agent, and tears everything down on every exit path.
 *
 * Order matters for `keel gc`: the state file is written before the namespace exists and
 * removed after it is gone, so a namespace never exists without a state naming it.
 */
import { randomBytes } from 'node:crypto'
import type { Writable } from 'node:stream'
import { KeelError, type AgentIdentity, type CompiledPolicy, type DecisionSink, type Logger, NOOP_LOGGER } from '@keel/core'
import { createDnsServer, SyntheticPool, UpstreamResolver, type DnsServer } from '@keel/dns'
import { dialAndRelay, Nft, originalDestination } from '@keel/nftables-napi'
import { createProxy, type Proxy, type ProxyLimits } from '@keel/proxy'
import { combineSinks, createTelemetrySink, openFlowLog, type FlowLog } from '@keel/telemetry'
import { exitStatus, SignalRelay, spawnAgent, waitForAgent } from './agent.js'
import { receiveSandboxSockets, type SandboxSockets } from './handoff.js'
import type { RunAs } from './identity.js'
import { createNetns, deleteNetns } from './netns.js'
import { formatExitTable, ReportCollector, type Report } from './report.js'
import { buildRuleset, listTableRequest, parseRejections } from './ruleset.js'
import { checkDispatcherHosts, createDispatcherMount, dispatcherRoutes, type DispatcherMount, type SandboxDispatcher } from './dispatcher-mount.js'
import { processStartTime, removeStateDir, STATE_ROOT, writeState } from './state.js'
import { closeQuietly, invokingUser, openOutputFile, writeAll } from './output-file.js'

/** keel's own ports inside the namespace (each namespace has its own port space). */
export const SANDBOX_PROXY_PORT = 15001
export const SANDBOX_DNS_PORT = 15053

/** Exit code when `--fail-on-deny` is set, the agent succeeded, and something was denied. */
export const EXIT_DENIED = 3

export interface SandboxOptions {
  policy: CompiledPolicy
  /** Paths of the policy files, for the state file and messages. */
  policyFiles: readonly string[]
  agent: AgentIdentity
  command: string
  args: readonly string[]
  runAs: RunAs
  /** `host:port` of the upstream resolver; default: the host's (/etc/resolv.conf). */
  upstreamDns?: string
  reportPath?: string
  logPath?: string
  failOnDeny?: boolean
  quiet?: boolean
  env?: NodeJS.ProcessEnv
  /** Where the exit table and warnings go. Default process.stderr. */
  stderr?: Writable
  logger?: Logger
  limits?: Partial<ProxyLimits>
  /** Root of the state directories (tests use their own). */
  stateRoot?: string
  /**
   * Serves the policy's `via: dispatcher` names (TLS terminated with a per-sandbox CA).
   * The caller owns it and closes it after the run. Without it those names are denied
   * with `dispatcher_unavailable`, and a warning says so at start.
   */
  dispatcher?: SandboxDispatcher
  now?: () => number
}

export interface SandboxResult {
  exitCode: number
  agentExitCode: number
  report: Report
  id: string
}

export function newSandboxId(): string {
  return randomBytes(5).toString('hex')
}

function assertRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new KeelError('ERR_NOT_ROOT', 'keel run needs root to create the network namespace and its firewall: run it with sudo')
  }
}

function agentEnv(base: NodeJS.ProcessEnv, runAs: RunAs): NodeJS.ProcessEnv {
  const env = { ...base }
  if (runAs.uid !== 0 && runAs.user !== undefined) {
    env.USER = runAs.user
    env.LOGNAME = runAs.user
    if (runAs.home !== undefined) env.HOME = runAs.home
  }
  return env
}

export async function runSandbox(options: SandboxOptions): Promise<SandboxResult> {
  assertRoot()
  const now = options.now ?? Date.now
  const stderr = options.stderr ?? process.stderr
  const logger = options.logger ?? NOOP_LOGGER
  const stateRoot = options.stateRoot ?? STATE_ROOT
  const id = newSandboxId()
  const netnsName = `keel-${id}`
  const collector = new ReportCollector()

  // Fail fast on things the user must fix, before anything is created.
  const upstream = options.upstreamDns
    ? new UpstreamResolver({ servers: options.upstreamDns, logger })
    : UpstreamResolver.fromResolvConf({ logger })

  const viaDispatcher = dispatcherRoutes(options.policy)
  const withDispatcher = viaDispatcher.routes.length > 0 && options.dispatcher !== undefined
  if (withDispatcher) {
    for (const w of checkDispatcherHosts(viaDispatcher, options.dispatcher!.hosts)) stderr.write(`keel: ${w}\n`)
  } else if (viaDispatcher.routes.length > 0) {
    // Fail closed, but do not refuse to start: a policy is shared between uses that need
    // the dispatcher and uses that do not (CI running `npm test` under the same file).
    const routes = viaDispatcher.routes.map((r) => `"${r}"`).join(', ')
    stderr.write(
      `keel: ${viaDispatcher.routes.length === 1 ? 'route' : 'routes'} ${routes} ${viaDispatcher.routes.length === 1 ? 'is' : 'are'} via: dispatcher, but no --dispatcher-config was given: ` +
        `${viaDispatcher.patterns.join(', ')} will be denied (dispatcher_unavailable)\n`,
    )
  }

  // Files written for the user are opened now, before the agent runs, with the invoking
  // user's permissions and without following links (see output-file.ts for the attack).
  const fileOwner = invokingUser(options.env ?? process.env)
  const owner = fileOwner ? { owner: fileOwner } : {}
  const reportFd = options.reportPath ? openOutputFile(options.reportPath, { append: false, what: 'the report', ...owner }) : undefined
  let flowLog: FlowLog | undefined
  if (options.logPath) {
    let logFd: number
    try {
      logFd = openOutputFile(options.logPath, { append: true, what: 'the flow log', mode: 0o600, ...owner })
    } catch (err) {
      closeQuietly(reportFd)
      throw err
    }
    flowLog = openFlowLog({
      path: options.logPath,
      fd: logFd,
      onError: (err) => stderr.write(`keel: the flow log ${options.logPath} failed (${err.message}); the sandbox goes on without it\n`),
    })
  }
  const sink: DecisionSink = combineSinks(collector.sink, createTelemetrySink(), ...(flowLog ? [flowLog.sink] : []))

  const signals = new SignalRelay()
  /** Between set-up steps: a terminating signal means tear down now, not start the agent. */
  const checkSignal = () => {
    if (signals.pending) throw new SetupInterrupted(signals.pending)
  }

  const stateDir = writeState(
    {
      id,
      netns: netnsName,
      launcherPid: process.pid,
      launcherStart: processStartTime(process.pid) ?? '',
      createdAt: new Date(now()).toISOString(),
      policy: [...options.policyFiles],
      agent: options.agent.name,
    },
    stateRoot,
  )

  let sockets: SandboxSockets | undefined
  let dns: DnsServer | undefined
  let proxy: Proxy | undefined
  let nft: Nft | undefined
  let mount: DispatcherMount | undefined
  const pool = new SyntheticPool()
  try {
    const baseEnv = agentEnv(options.env ?? process.env, options.runAs)
    if (withDispatcher) {
      mount = await createDispatcherMount({
        policy: options.policy,
        dispatcher: options.dispatcher!,
        agent: options.agent,
        sandboxId: id,
        dir: stateDir,
        env: baseEnv,
        logger,
      })
      for (const w of mount.warnings) stderr.write(`keel: ${w}\n`)
      checkSignal()
    }
    const netns = await createNetns(netnsName)
    if (netns.loopbackGsoError) logger.debug('sandbox lo keeps 64 KiB packets', { reason: netns.loopbackGsoError })
    checkSignal()
    nft = new Nft({ netns: netns.path })
    try {
      nft.runJson(buildRuleset({ proxyPort: SANDBOX_PROXY_PORT, dnsPort: SANDBOX_DNS_PORT }))
    } catch (err) {
      throw new KeelError(
        'ERR_NFT_UNAVAILABLE',
        `could not apply the sandbox firewall (does this kernel have nftables with nat and conntrack?): ${(err as Error).message}`,
        { cause: err },
      )
    }
    sockets = await receiveSandboxSockets(netns.path, { proxyPort: SANDBOX_PROXY_PORT, dnsPort: SANDBOX_DNS_PORT })
    checkSignal()

    const { policy, agent } = options
    dns = createDnsServer({
      udp: sockets.dnsUdp,
      tcp: sockets.dnsTcp,
      agent,
      decideName: (args) => policy.decideName(args),
      pool,
      upstream,
      sink,
      logger,
      now,
    })
    proxy = createProxy({
      server: sockets.proxy,
      agent,
      originalDestination,
      bindings: pool,
      decide: (args) => policy.decide(args),
      checkResolved: (args) => policy.checkResolved(args),
      resolve: upstream.resolve,
      resolveCached: upstream.resolveCached,
      // Allowed connections are dialed and relayed on the addon's thread, not the event loop.
      relay: dialAndRelay,
      sink,
      logger,
      now,
      ...(options.limits ? { limits: options.limits } : {}),
      ...(mount ? { onDispatcher: mount.hook } : {}),
    })

    const child = spawnAgent({
      command: options.command,
      args: options.args,
      netnsPath: netns.path,
      runAs: options.runAs,
      env: mount?.env ?? baseEnv,
    })
    signals.attach(child)
    const agentExitCode = await waitForAgent(child)

    // Connections the agent left open end with it; give the proxy a moment to record them.
    await proxy.close()
    await dns.close()
    try {
      collector.addRejections(parseRejections(nft.runJson(listTableRequest())).rejections, (a) => pool.nameFor(a))
    } catch (err) {
      stderr.write(`keel: could not read the sandbox's reject counters: ${(err as Error).message}\n`)
    }

    const report = collector.report()
    if (options.reportPath) {
      // A full disk (or a bad path) must not turn the agent's exit code into keel's internal error.
      try {
        writeAll(reportFd!, JSON.stringify(report, null, 2) + '\n')
      } catch (err) {
        stderr.write(`keel: could not write the report ${options.reportPath} (${(err as Error).message}); the agent's exit code stands\n`)
      }
    }
    if (!options.quiet) stderr.write(formatExitTable(report))
    const denied = collector.deniedCount()
    const exitCode = options.failOnDeny && agentExitCode === 0 && denied > 0 ? EXIT_DENIED : agentExitCode
    if (options.failOnDeny && denied > 0 && !options.quiet) {
      stderr.write(`keel: --fail-on-deny: ${denied} denied destination${denied === 1 ? '' : 's'}\n`)
    }
    return { exitCode, agentExitCode, report, id }
  } catch (err) {
    if (err instanceof SetupInterrupted) {
      const status = exitStatus(null, err.signal)
      return { exitCode: status, agentExitCode: status, report: collector.report(), id }
    }
    throw err
  } finally {
    signals.dispose()
    await proxy?.close().catch(() => {})
    await dns?.close().catch(() => {})
    if (!proxy && sockets) for (const s of sockets.proxy) s.close()
    if (!dns && sockets) {
      for (const s of sockets.dnsTcp) s.close()
      for (const s of sockets.dnsUdp) s.close()
    }
    await flowLog?.close()
    closeQuietly(reportFd)
    await deleteNetns(netnsName).catch((err: Error) => stderr.write(`keel: teardown: ${err.message} (run keel gc)\n`))
    removeStateDir(stateDir)
  }
}

/** A terminating signal arrived while the sandbox was being built. */
class SetupInterrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal} during set-up`)
  }
}
