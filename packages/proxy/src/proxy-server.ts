/**
 * The transparent proxy for one sandbox: takes an already-listening `net.Server` (made
 * inside the sandbox's network namespace and handed over IPC), decides and splices
 * each connection, and emits one canonical {@link DecisionEvent} per connection when
 * it is over.
 *
 * Everything it talks to is injected: the original-destination lookup (SO_ORIGINAL_DST
 * from @keel/nftables-napi in production), the name bindings and resolver (@keel/dns),
 * the policy (`decide`/`checkResolved` from @keel/core), the sink and logger.
 *
 * The per-connection event: `time` is the accept time; `name` is the bound name (for
 * synthetic destinations); `address` is the upstream address keel dialed, or the
 * original destination when it dialed nothing; `bytesOut`/`bytesIn` count agent →
 * upstream and upstream → agent; a connection the policy allowed but keel could not
 * complete (upstream refused, DNS failed) has verdict `deny` and an `upstream_*` reason.
 */
import type { Server, Socket } from 'node:net'
import {
  NOOP_LOGGER,
  Reason,
  type AgentIdentity,
  type CheckResolvedArgs,
  type DecideArgs,
  type Decision,
  type DecisionEvent,
  type DecisionSink,
  type Logger,
  type NameBindings,
  type Resolve,
} from '@keel/core'
import {
  DEFAULT_LIMITS,
  handleConnection,
  type ConnectionHandle,
  type DispatcherHook,
  type ProxyLimits,
} from './connection.js'
import type { OriginalDestination } from './decide-connection.js'
import type { Connect } from './dial.js'
import type { SocketRelay } from './relay-handoff.js'
import { resetSocket } from './socket-close.js'

export interface ProxyOptions {
  /**
   * Listening server(s), e.g. the sandbox's 127.0.0.1 and ::1 sockets. They share one
   * connection limit and one set of stats. The proxy owns them and closes them in `close()`.
   */
  server: Server | readonly Server[]
  agent: AgentIdentity
  /** Reads the pre-redirect destination of an accepted socket. A throw denies with `original_destination_unknown`. */
  originalDestination: (socket: Socket) => OriginalDestination
  bindings: NameBindings
  decide: (args: DecideArgs) => Decision
  checkResolved: (args: CheckResolvedArgs) => Decision
  /** keel's own upstream resolution (never the agent's). */
  resolve: Resolve
  /** Its cached answer for a name, if any, without a promise (see ConnectionDeps). */
  resolveCached?: (name: string) => readonly string[] | undefined
  sink?: DecisionSink
  logger?: Logger
  /** Clock for event times (ms since the epoch). Default `Date.now`. */
  now?: () => number
  limits?: Partial<ProxyLimits>
  /** Bytes that are neither TLS nor HTTP, to an allowed name. Default `allow` (see connection.ts). */
  opaque?: 'allow' | 'deny'
  /** Takes over `via: dispatcher` connections. Without it they are denied (`dispatcher_unavailable`). */
  onDispatcher?: DispatcherHook
  /** Opens upstream sockets. Default `net.connect`. */
  connect?: Connect
  /** Relays allowed connections off the event loop (see ConnectionDeps.relay). Default: the JS splice. */
  relay?: SocketRelay
}

export interface ProxyStats {
  /** Connections open now. */
  active: number
  accepted: number
  allowed: number
  denied: number
  /** Finished connections by reason code. */
  reasons: Record<string, number>
  /** Agent → upstream bytes of finished connections. */
  bytesOut: number
  /** Upstream → agent bytes of finished connections. */
  bytesIn: number
}

export interface Proxy {
  stats(): ProxyStats
  /** Stop accepting, destroy open connections, wait for their events. Idempotent. */
  close(): Promise<void>
}

/** Structured log field names of the canonical per-connection line. */
export const LOG_FIELD = {
  agent: 'agent',
  verdict: 'verdict',
  reason: 'reason',
  route: 'route',
  name: 'name',
  address: 'address',
  port: 'port',
  bytesOut: 'bytes_out',
  bytesIn: 'bytes_in',
  durationMs: 'duration_ms',
  detail: 'detail',
} as const

/** The canonical log message, one per connection. */
export const CANONICAL_LOG_LINE = 'proxy.connection'

/**
 * Start serving connections on `options.server`.
 *
 * @example
 * const proxy = createProxy({ server, agent, originalDestination, bindings, decide, checkResolved, resolve, sink })
 * // ... later
 * await proxy.close()
 */
export function createProxy(options: ProxyOptions): Proxy {
  const limits: ProxyLimits = { ...DEFAULT_LIMITS, ...options.limits }
  const logger = options.logger ?? NOOP_LOGGER
  const clock = options.now ?? Date.now
  // Called inside socket callbacks: a broken clock must not throw out of them.
  const now = (): number => {
    try {
      return clock()
    } catch {
      return Date.now()
    }
  }
  const servers: readonly Server[] = Array.isArray(options.server) ? options.server : [options.server as Server]
  const open = new Set<ConnectionHandle>()
  const pending = new Set<Promise<void>>()
  const stats: ProxyStats = { active: 0, accepted: 0, allowed: 0, denied: 0, reasons: {}, bytesOut: 0, bytesIn: 0 }
  let closing: Promise<void> | undefined

  // Accepted sockets must be half-open capable, or Node ends our write side on the
  // agent's FIN and `shutdown(SHUT_WR)` clients lose their response. A server received
  // over IPC is created with defaults, so set it here; it is read per accept.
  for (const server of servers) (server as Server & { allowHalfOpen?: boolean }).allowHalfOpen = true

  const deps = {
    agent: options.agent,
    originalDestination: options.originalDestination,
    bindings: options.bindings,
    decide: options.decide,
    checkResolved: options.checkResolved,
    resolve: options.resolve,
    ...(options.resolveCached === undefined ? {} : { resolveCached: options.resolveCached }),
    now,
    limits,
    opaque: options.opaque ?? 'allow',
    logger,
    ...(options.connect === undefined ? {} : { connect: options.connect }),
    ...(options.relay === undefined ? {} : { relay: options.relay }),
    ...(options.onDispatcher === undefined ? {} : { onDispatcher: options.onDispatcher }),
  }

  const record = (event: DecisionEvent): void => {
    if (event.verdict === 'allow') stats.allowed++
    else stats.denied++
    stats.reasons[event.reason] = (stats.reasons[event.reason] ?? 0) + 1
    stats.bytesOut += event.bytesOut ?? 0
    stats.bytesIn += event.bytesIn ?? 0
    try {
      options.sink?.(event)
    } catch (e) {
      // Telemetry must never break the data path.
      safeLog(logger, 'warn', 'proxy.sink_failed', { error: e instanceof Error ? e.message : String(e) })
    }
    safeLog(logger, 'info', CANONICAL_LOG_LINE, {
      [LOG_FIELD.agent]: event.agent,
      [LOG_FIELD.verdict]: event.verdict,
      [LOG_FIELD.reason]: event.reason,
      [LOG_FIELD.route]: event.route,
      [LOG_FIELD.name]: event.name,
      [LOG_FIELD.address]: event.address,
      [LOG_FIELD.port]: event.port,
      [LOG_FIELD.bytesOut]: event.bytesOut,
      [LOG_FIELD.bytesIn]: event.bytesIn,
      [LOG_FIELD.durationMs]: event.durationMs,
      [LOG_FIELD.detail]: event.detail,
    })
  }

  const onConnection = (socket: Socket): void => {
    stats.accepted++
    // Whatever happens later, an 'error' on this socket must never be unhandled.
    socket.on('error', ignore)
    try {
      socket.setNoDelay(true)
    } catch {
      // a socket that is already gone: the handler below sees it closed
    }
    if (closing !== undefined || stats.active >= limits.maxConnections) {
      rejectAtLimit(socket)
      return
    }
    stats.active++
    const handle = handleConnection(socket, deps)
    open.add(handle)
    const finished = handle.done
      .then(record, (e: unknown) => {
        // handleConnection never rejects; this is belt and braces.
        safeLog(logger, 'error', 'proxy.connection_failed', { error: e instanceof Error ? e.message : String(e) })
        socket.destroy()
      })
      .finally(() => {
        stats.active--
        open.delete(handle)
        pending.delete(finished)
      })
    pending.add(finished)
  }

  /** Over the limit (or shutting down): reset at once, record it, no peek and no dial. */
  const rejectAtLimit = (socket: Socket): void => {
    const event: DecisionEvent = {
      time: now(),
      kind: 'connection',
      agent: options.agent.name,
      protocol: 'TCP',
      verdict: 'deny',
      reason: Reason.CONNECTION_LIMIT,
      bytesOut: 0,
      bytesIn: 0,
      durationMs: 0,
      detail:
        closing !== undefined ? 'the proxy is closing' : `${stats.active} connections open, limit ${limits.maxConnections}`,
    }
    try {
      const dst = options.originalDestination(socket)
      event.address = dst.address
      event.port = dst.port
      // Name the destination as every other record for it does (the report groups by name).
      const name = options.bindings.isSynthetic(dst.address) ? options.bindings.nameFor(dst.address) : undefined
      if (name !== undefined) event.name = name
    } catch {
      // the record is still worth having without it
    }
    resetSocket(socket)
    record(event)
  }

  const onServerError = (e: Error): void => {
    // e.g. EMFILE on accept: log, keep serving.
    safeLog(logger, 'error', 'proxy.server_error', { error: e.message, code: (e as NodeJS.ErrnoException).code })
  }

  for (const server of servers) {
    server.on('connection', onConnection)
    server.on('error', onServerError)
  }

  return {
    stats() {
      return { ...stats, reasons: { ...stats.reasons } }
    },
    close() {
      closing ??= (async () => {
        await Promise.all(
          servers.map(
            (server) =>
              new Promise<void>((resolve) => {
                try {
                  server.close(() => resolve())
                } catch {
                  resolve()
                }
              }),
          ),
        )
        for (const server of servers) {
          server.off('connection', onConnection)
          server.off('error', onServerError)
        }
      })()
      // server.close() waits for nothing of ours (we track sockets ourselves), but
      // its callback runs only once all server connections are gone: abort them now.
      for (const handle of open) handle.abort()
      return Promise.all([closing, ...pending]).then(() => undefined)
    },
  }
}

function ignore(): void {}

function safeLog(logger: Logger, level: keyof Logger, msg: string, fields: Record<string, unknown>): void {
  try {
    logger[level](msg, fields)
  } catch {
    // a broken logger must not break the proxy
  }
}
