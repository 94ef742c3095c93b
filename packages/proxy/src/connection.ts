/**
 * One accepted connection, from original destination to the last byte.
 *
 * ```
 * original dst ──synthetic──▶ name ─▶ decide(name) ─deny─▶ 403 / alert / RST   (no upstream dial)
 *      │                                 │allow
 *      │                                 ▼
 *      │                       peek first bytes (deadline, byte cap)
 *      │                        TLS: SNI == name, no ECH │ HTTP: Host == name, no CONNECT
 *      │                        other bytes: opaque (allowed by default)
 *      │                        nothing yet: server-first (see below)
 *      │                                 ▼
 *      │               resolve(name) ─▶ checkResolved(each) ─▶ dial first allowed ─▶ splice
 *      └──literal IP──▶ decide(address): CIDR rules + guard rails ─▶ dial exactly it ─▶ splice
 * ```
 *
 * "dial ─▶ splice" is the addon's relay thread when keel run wires it in (`deps.relay`,
 * relay-handoff.ts): it dials, sends the peeked head, and moves the bytes off the event
 * loop. Server-first connections to names, and sockets it cannot take, use dial.ts and
 * splice.ts here.
 *
 * Design decisions (the open questions of the `keel run` issue):
 *
 * - **Opaque protocols** (first bytes neither TLS nor HTTP: SSH, Postgres, Redis RESP)
 *   to an allowed name are allowed by default (`opaque: 'deny'` turns that off with
 *   `protocol_unrecognized`). The name check exists because TLS and HTTP carry a name
 *   that a shared front end (CDN, virtual hosting) routes on: that is how domain
 *   fronting works. Protocols with no name in them reach whatever listens at the
 *   address, and keel dials only addresses it resolved itself for the allowed name.
 *   The HTTP detector is deliberately lenient so HTTP cannot pass as "opaque".
 * - **Server-first protocols** (SMTP, FTP, MySQL, POP3/IMAP: the client waits for a
 *   greeting) would stall until the peek deadline. So the first peek has a short
 *   first-byte window (`firstByteMs`, default 250 ms). If nothing arrives, keel dials
 *   and lets the upstream speak, but still holds the agent's first bytes until they
 *   are classified: a late ClientHello or HTTP head must still match the name
 *   (otherwise both sides are reset). So waiting cannot be used to skip the check; it
 *   only means the upstream was dialed before the deny. SSH is unaffected: its client
 *   sends its banner at once. Dispatcher routes have no first-byte window.
 * - **Deny responses.** HTTP gets a 403 (or the deny policy's status) whose body says
 *   what, why and how to allow it. TLS gets a fatal alert (`unrecognized_name` for SNI
 *   problems, `decode_error` for bad hellos, `access_denied` for policy denials,
 *   `internal_error` for upstream failures), then a lingering close. Anything else, and
 *   peek timeouts, get a TCP RST. To answer a policy deny in the client's own protocol,
 *   keel peeks briefly (the same first-byte window) before answering; it never dials.
 * - **Limitation:** only the first HTTP request head on a connection is checked. A
 *   client can send a second, pipelined or keep-alive request with another Host to
 *   the same upstream. That is the same trust as HTTP/2 connection reuse after an SNI
 *   check: the bytes still go only to the allowed name's address.
 */
import net, { type Socket } from 'node:net'
import {
  Reason,
  type AgentIdentity,
  type CheckResolvedArgs,
  type DecideArgs,
  type Decision,
  type DecisionEvent,
  type Logger,
  type NameBindings,
  type Resolve,
  type Verdict,
} from '@keel/core'
import { classifyFirstBytes, type FirstBytes } from './first-bytes.js'
import { peek, type PeekResult, type PeekStep } from './peek.js'
import {
  decideDestination,
  verifyFirstBytes,
  vetResolved,
  type DestinationDecision,
  type OriginalDestination,
} from './decide-connection.js'
import { dialFirst, type Connect } from './dial.js'
import { createSplice, type SpliceResult } from './splice.js'
import { dialThroughRelay, type RelayDial, type RelayedDial, type SocketRelay } from './relay-handoff.js'
import { httpDenyResponse, tlsAlert, tlsAlertFor, type DenyContext } from './deny-response.js'
import { lingeringClose, resetSocket, whenClosed } from './socket-close.js'

export interface ProxyLimits {
  /** Connections open at once (per sandbox); beyond it: `connection_limit`. */
  maxConnections: number
  /** Deadline for the first bytes (ClientHello / request head), from accept. */
  peekTimeoutMs: number
  /** Wait this long for a first byte before treating the protocol as server-first. */
  firstByteMs: number
  /** Per-address upstream connect timeout. */
  dialTimeoutMs: number
  /** Timeout for keel's own upstream resolution of the name. */
  resolveTimeoutMs: number
  /** Cap on an HTTP request head (431 beyond). */
  maxHeadBytes: number
  /** Cap on a ClientHello handshake message. */
  maxHelloBytes: number
  /** Resolved addresses tried at most. */
  maxDialAttempts: number
  /** How long a denied socket lingers (reading and discarding) after the response. */
  lingerMs: number
  /** Close a spliced connection after this long with no bytes either way; 0 = never. */
  idleTimeoutMs: number
}

export const DEFAULT_LIMITS: Readonly<ProxyLimits> = Object.freeze({
  maxConnections: 1024,
  peekTimeoutMs: 5_000,
  firstByteMs: 250,
  dialTimeoutMs: 10_000,
  resolveTimeoutMs: 5_000,
  maxHeadBytes: 16_384,
  maxHelloBytes: 65_536,
  maxDialAttempts: 3,
  lingerMs: 2_000,
  idleTimeoutMs: 0,
})

/** What a dispatcher hook gets with the socket. */
export interface DispatcherContext {
  agent: AgentIdentity
  /** The bound name (the provider endpoint the agent resolved). */
  name: string
  port: number
  decision: Decision
  /** Bytes already read from the agent (the ClientHello or request head): replay them first. */
  head: Buffer
  protocol: 'tls' | 'http'
  sni?: string
  alpn?: string[]
}

/**
 * Takes over a connection to a `via: dispatcher` route (TLS termination with the
 * sandbox CA, then the Hono app). The socket is paused, and `ctx.head` holds the bytes
 * already read from it. Put them back before wrapping:
 * `socket.unshift(ctx.head); new tls.TLSSocket(socket, { isServer: true, ... })`
 * (TLSSocket feeds already-buffered bytes to the TLS engine; tested in proxy-server.test.ts).
 * The hook owns the socket from then on; the proxy records the connection when it closes.
 * A throw from the hook resets the socket and records `internal_error`.
 */
export type DispatcherHook = (socket: Socket, ctx: DispatcherContext) => void

export interface ConnectionDeps {
  agent: AgentIdentity
  originalDestination(socket: Socket): OriginalDestination
  bindings: NameBindings
  decide(args: DecideArgs): Decision
  checkResolved(args: CheckResolvedArgs): Decision
  resolve: Resolve
  /** The answer `resolve` would give, when it is cached; `undefined` sends the lookup to `resolve`. */
  resolveCached?: (name: string) => readonly string[] | undefined
  connect?: Connect
  /**
   * Dials allowed connections and moves their bytes off the event loop (the native
   * relay of @keel/nftables-napi; see relay-handoff.ts). Used when `connect` is not
   * injected. Without it, for server-first connections to names (whose late first
   * bytes are still checked here), and when a socket cannot be handed over, keel dials
   * with `net.connect` and splices in JS.
   */
  relay?: SocketRelay
  onDispatcher?: DispatcherHook
  now(): number
  limits: ProxyLimits
  opaque: 'allow' | 'deny'
  logger: Logger
}

export interface ConnectionHandle {
  /** Destroy everything this connection holds (proxy shutdown). */
  abort(): void
  /** The connection's one event, once it is over. Never rejects. */
  readonly done: Promise<DecisionEvent>
}

/** Take charge of an accepted socket. Never throws; every path ends in exactly one event. */
export function handleConnection(socket: Socket, deps: ConnectionDeps): ConnectionHandle {
  const c = new Connection(socket, deps)
  return { abort: () => c.abort(), done: c.run() }
}

type Classified = Exclude<FirstBytes, { kind: 'incomplete' }>

interface Denial {
  reason: Reason
  detail?: string
  decision?: Decision
  status?: number
}

interface Outcome {
  verdict: Verdict
  reason: Reason
  detail?: string
  route?: string
  bytesOut?: number
  bytesIn?: number
}

class Connection {
  private readonly started = performance.now()
  private readonly time: number
  private name: string | undefined
  private address: string | undefined
  private port: number | undefined
  private upstream: Socket | undefined
  private relayed: RelayDial | undefined
  private aborted = false
  /** Made on first use: a relayed connection with a cached name never needs a signal, and an AbortController costs tens of µs per connection. */
  private controller: AbortController | undefined

  constructor(
    private readonly socket: Socket,
    private readonly deps: ConnectionDeps,
  ) {
    this.time = deps.now()
  }

  /** Aborted by abort(), including when abort() came before the first use. */
  private get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController()
      if (this.aborted) this.controller.abort()
    }
    return this.controller.signal
  }

  abort(): void {
    this.aborted = true
    this.controller?.abort()
    this.socket.destroy()
    this.upstream?.destroy()
    this.relayed?.abort()
  }

  async run(): Promise<DecisionEvent> {
    let outcome: Outcome
    try {
      outcome = await this.decideAndConnect()
    } catch (e) {
      // Fail closed: an injected function threw (or a bug). One record, then destroy.
      outcome = { verdict: 'deny', reason: Reason.INTERNAL_ERROR, detail: errorText(e) }
      resetSocket(this.socket)
      this.upstream?.destroy()
      this.relayed?.abort()
    }
    return this.event(outcome)
  }

  private event(o: Outcome): DecisionEvent {
    const e: DecisionEvent = {
      time: this.time,
      kind: 'connection',
      agent: this.deps.agent.name,
      protocol: 'TCP',
      verdict: o.verdict,
      reason: o.reason,
      bytesOut: o.bytesOut ?? 0,
      bytesIn: o.bytesIn ?? 0,
      durationMs: Math.round((performance.now() - this.started) * 1000) / 1000,
    }
    if (this.name !== undefined) e.name = this.name
    if (this.address !== undefined) e.address = this.address
    if (this.port !== undefined) e.port = this.port
    if (o.route !== undefined) e.route = o.route
    if (o.detail !== undefined) e.detail = o.detail
    return e
  }

  private async decideAndConnect(): Promise<Outcome> {
    const { socket, deps } = this
    let dst: OriginalDestination
    try {
      dst = deps.originalDestination(socket)
      if (typeof dst?.address !== 'string' || net.isIP(dst.address) === 0 || !isPort(dst.port)) {
        throw new Error(`not an address and port: ${JSON.stringify(dst)}`)
      }
    } catch (e) {
      return this.denyWithPeek({ reason: Reason.ORIGINAL_DESTINATION_UNKNOWN, detail: errorText(e) })
    }
    // An IPv4 destination seen through a dual-stack socket: use the plain IPv4 form.
    dst = { ...dst, address: unmapV4(dst.address) }
    this.address = dst.address
    this.port = dst.port
    if (isOwnSocketAddress(dst, socket)) {
      return this.denyWithPeek({
        reason: Reason.PROXY_LOOP,
        detail: `the destination ${dst.address}:${dst.port} is keel's proxy socket itself`,
      })
    }
    const dest = decideDestination(dst, { agent: deps.agent, bindings: deps.bindings, decide: deps.decide, now: deps.now })
    if (dest.kind === 'name') this.name = dest.name
    if (dest.decision.verdict !== 'allow') {
      return this.denyWithPeek(denialOf(dest.decision))
    }
    return dest.kind === 'address' ? this.connectAddress(dest) : this.connectName(dest)
  }

  /** A literal address allowed by a CIDR rule: dial exactly it, no peek, splice. */
  private async connectAddress(dest: Extract<DestinationDecision, { kind: 'address' }>): Promise<Outcome> {
    const dialed = await (this.relayDial([dest.address], dest.port, undefined) ?? this.dial([dest.address], dest.port))
    if (!dialed.ok) {
      if (dialed.reason !== Reason.CLIENT_ABORTED) resetSocket(this.socket)
      await whenClosed(this.socket)
      return { verdict: 'deny', reason: dialed.reason, detail: dialed.detail, ...route(dest.decision) }
    }
    if ('relayed' in dialed) return this.relayedTo(dialed, dest.decision, 'address')
    return this.spliceTo(dialed.socket, dialed.address, dest.decision, { head: undefined, serverFirst: false, detail: 'address' })
  }

  /** A name keel's DNS bound: check the first bytes against it, resolve it ourselves, dial, splice. */
  private async connectName(dest: Extract<DestinationDecision, { kind: 'name' }>): Promise<Outcome> {
    const { deps } = this
    const dispatcher = dest.decision.via === 'dispatcher'
    const p = await this.peekFirst(dispatcher ? undefined : deps.limits.firstByteMs)
    let first: Classified | undefined
    let head: Buffer | undefined
    let detail: string
    switch (p.kind) {
      case 'complete': {
        first = p.value
        const v = verifyFirstBytes(first, dest.name, deps.opaque)
        if (!v.ok) return this.denyAs(first, { reason: v.reason, detail: v.detail, decision: dest.decision, ...statusOf(first) })
        head = p.head
        detail = v.detail
        break
      }
      case 'no-data':
        if (dispatcher) {
          return this.denyAs(undefined, { reason: Reason.PROTOCOL_UNRECOGNIZED, detail: 'the agent sent nothing to a dispatcher route' })
        }
        detail = p.ended ? 'server-first (agent half-closed without sending)' : 'server-first'
        break
      default:
        return this.peekFailed(p)
    }

    if (dispatcher) {
      if (first === undefined || (first.kind !== 'tls' && first.kind !== 'http')) {
        return this.denyAs(first, {
          reason: Reason.PROTOCOL_UNRECOGNIZED,
          detail: 'dispatcher routes take TLS or HTTP',
          decision: dest.decision,
        })
      }
      return this.handOff(dest, first, head ?? Buffer.alloc(0), detail)
    }

    const resolved = await this.resolveName(dest.name)
    if (!resolved.ok) {
      return this.denyAs(first, { reason: resolved.reason, detail: resolved.detail, decision: dest.decision })
    }
    const vetted = vetResolved(dest.name, dest.port, resolved.addresses, {
      agent: deps.agent,
      checkResolved: deps.checkResolved,
      now: deps.now,
    })
    if (!vetted.ok) return this.denyAs(first, denialOf(vetted.decision))
    // Server-first (nothing peeked yet) stays in JS: the agent's late first bytes must still be checked.
    const relayDial = first === undefined ? undefined : this.relayDial(vetted.addresses, dest.port, head)
    const dialed = await (relayDial ?? this.dial(vetted.addresses, dest.port))
    if (!dialed.ok) {
      if (dialed.reason === Reason.CLIENT_ABORTED) {
        await whenClosed(this.socket)
        return { verdict: 'deny', reason: dialed.reason, detail: dialed.detail }
      }
      return this.denyAs(first, { reason: dialed.reason, detail: dialed.detail, decision: dest.decision })
    }
    if ('relayed' in dialed) return this.relayedTo(dialed, dest.decision, detail)
    return this.spliceTo(dialed.socket, dialed.address, dest.decision, {
      head,
      serverFirst: first === undefined,
      detail,
      name: dest.name,
    })
  }

  private async spliceTo(
    upstream: Socket,
    address: string,
    decision: Decision,
    o: { head: Buffer | undefined; serverFirst: boolean; detail: string; name?: string },
  ): Promise<Outcome> {
    const { socket, deps } = this
    this.upstream = upstream
    this.address = address
    if (this.aborted) upstream.destroy()
    const sp = createSplice(socket, upstream, deps.limits.idleTimeoutMs > 0 ? { idleTimeoutMs: deps.limits.idleTimeoutMs } : {})
    sp.startInbound()
    let detail = o.detail
    let denial: Denial | undefined
    if (!o.serverFirst) {
      sp.startOutbound(o.head)
    } else {
      // Server-first: the upstream may talk; the agent's first bytes are still checked.
      const p = await this.peekLate()
      switch (p.kind) {
        case 'complete': {
          const v = verifyFirstBytes(p.value, o.name ?? '', deps.opaque)
          if (v.ok) {
            detail = `${detail}; ${v.detail}`
            sp.startOutbound(p.head)
          } else {
            denial = { reason: v.reason, detail: `after the upstream spoke first: ${v.detail}` }
          }
          break
        }
        case 'no-data':
          sp.startOutbound()
          break
        case 'closed':
          detail = `${detail}; the agent closed without sending`
          break
        case 'ended':
          denial = { reason: Reason.MALFORMED_REQUEST, detail: 'the agent half-closed inside a TLS ClientHello or HTTP head' }
          break
        case 'timeout':
          denial = { reason: Reason.PEEK_TIMEOUT, detail: `no complete first message within ${deps.limits.peekTimeoutMs} ms of its first byte` }
          break
        case 'oversize':
          denial = { reason: Reason.MALFORMED_REQUEST, detail: 'first bytes exceed the peek cap' }
          break
        default: {
          const _exhaustive: never = p
          return _exhaustive
        }
      }
      if (denial !== undefined) {
        resetSocket(socket)
        sp.abort()
      }
    }
    const r = await sp.done
    if (denial !== undefined) return { verdict: 'deny', ...denial, bytesOut: r.bytesOut, bytesIn: r.bytesIn, ...route(decision) }
    return spliced(r, detail, decision)
  }

  private async handOff(
    dest: Extract<DestinationDecision, { kind: 'name' }>,
    first: Extract<Classified, { kind: 'tls' | 'http' }>,
    head: Buffer,
    detail: string,
  ): Promise<Outcome> {
    const { socket, deps } = this
    const hook = deps.onDispatcher
    if (hook === undefined) {
      return this.denyAs(first, {
        reason: Reason.DISPATCHER_UNAVAILABLE,
        detail: `route "${dest.decision.route ?? '?'}" is via: dispatcher, and no dispatcher is wired in`,
        decision: dest.decision,
      })
    }
    const ctx: DispatcherContext = {
      agent: deps.agent,
      name: dest.name,
      port: dest.port,
      decision: dest.decision,
      head,
      protocol: first.kind,
    }
    if (first.kind === 'tls') {
      if (first.hello.sni !== undefined) ctx.sni = first.hello.sni
      if (first.hello.alpn !== undefined) ctx.alpn = first.hello.alpn
    }
    hook(socket, ctx) // a throw is caught in run(): internal_error, socket reset
    await whenClosed(socket)
    return {
      verdict: 'allow',
      reason: Reason.ALLOWED,
      detail: `via dispatcher; ${detail}`,
      bytesOut: socket.bytesRead,
      bytesIn: socket.bytesWritten,
      ...route(dest.decision),
    }
  }

  /** A peek that ended without a complete first message. */
  private async peekFailed(p: Exclude<PeekResult<Classified>, { kind: 'complete' | 'no-data' }>): Promise<Outcome> {
    const { limits } = this.deps
    switch (p.kind) {
      case 'closed':
        return {
          verdict: 'deny',
          reason: Reason.CLIENT_ABORTED,
          detail: p.error === undefined ? 'closed before sending a complete first message' : errorText(p.error),
        }
      case 'timeout':
        return this.denyAs(undefined, {
          reason: Reason.PEEK_TIMEOUT,
          detail: `no complete ClientHello or request head within ${limits.peekTimeoutMs} ms (${p.head.length} bytes)`,
        })
      case 'ended':
        return this.denyAs(undefined, {
          reason: Reason.MALFORMED_REQUEST,
          detail: `the agent half-closed inside a TLS ClientHello or HTTP head (${p.head.length} bytes)`,
        })
      case 'oversize':
        return this.denyAs(undefined, { reason: Reason.MALFORMED_REQUEST, detail: 'first bytes exceed the peek cap' })
      default: {
        const _exhaustive: never = p
        return _exhaustive
      }
    }
  }

  /**
   * Deny before any dial, answering in the client's own protocol: peek briefly (the
   * first-byte window) to tell HTTP from TLS from anything else.
   */
  private async denyWithPeek(d: Denial): Promise<Outcome> {
    const p = await this.peekFirst(this.deps.limits.firstByteMs)
    if (p.kind === 'closed') {
      return { verdict: 'deny', ...d, ...route(d.decision) }
    }
    const first = p.kind === 'complete' ? p.value : undefined
    // An agent using keel's socket as a forward proxy (HTTP_PROXY pointing at it): a
    // direct connection, which SO_ORIGINAL_DST reports as "no original destination"
    // (nftables-napi's ERR_NO_ORIGINAL_DST) or as the proxy's own address.
    const direct = d.reason === Reason.PROXY_LOOP || d.reason === Reason.ORIGINAL_DESTINATION_UNKNOWN
    if (direct && first?.kind === 'http') {
      const r = first.request
      if (r.method.toUpperCase() === 'CONNECT' || r.targetForm === 'absolute') {
        d = { ...d, reason: Reason.HTTP_CONNECT_NOT_ALLOWED, detail: `${r.method} ${r.target} sent to keel's proxy socket` }
      }
    }
    return this.denyAs(first, { ...d, ...(first === undefined ? {} : statusOf(first, d.status)) })
  }

  /** Answer a deny: HTTP → 403-style response, TLS → alert, else RST. Waits for the socket to close. */
  private async denyAs(first: Classified | undefined, d: Denial): Promise<Outcome> {
    const { socket, deps } = this
    const ctx: DenyContext = {
      agent: deps.agent.name,
      host: this.name ?? this.address ?? 'unknown',
      isAddress: this.name === undefined,
      port: this.port ?? 0,
      reason: d.reason,
    }
    if (d.detail !== undefined) ctx.detail = d.detail
    if (d.decision !== undefined) ctx.decision = d.decision
    if (d.status !== undefined) ctx.status = d.status
    const kind = first === undefined ? 'none' : first.kind === 'malformed' ? first.protocol : first.kind
    if (kind === 'http') await lingeringClose(socket, httpDenyResponse(ctx), deps.limits.lingerMs)
    else if (kind === 'tls') await lingeringClose(socket, tlsAlert(tlsAlertFor(d.reason)), deps.limits.lingerMs)
    else {
      resetSocket(socket)
      await whenClosed(socket)
    }
    return { verdict: 'deny', ...d, ...route(d.decision) }
  }

  private classifier(): (buf: Buffer) => PeekStep<Classified> {
    const { limits } = this.deps
    const options = { maxHeadBytes: limits.maxHeadBytes, maxHelloBytes: limits.maxHelloBytes }
    return (buf) => {
      const r = classifyFirstBytes(buf, options)
      if (r.kind === 'incomplete') return r.need === undefined ? { done: false } : { done: false, need: r.need }
      return { done: true, value: r }
    }
  }

  /** Upper bound on the bytes a peek buffers: the larger cap plus TLS record framing. */
  private peekCap(): number {
    const { limits } = this.deps
    const records = Math.ceil((limits.maxHelloBytes + 4) / 16_384) + 1
    return Math.max(limits.maxHeadBytes, limits.maxHelloBytes + 4 + records * 5) + 1
  }

  private peekFirst(firstByteMs: number | undefined): Promise<PeekResult<Classified>> {
    return peek(this.socket, {
      classify: this.classifier(),
      maxBytes: this.peekCap(),
      timeoutMs: this.deps.limits.peekTimeoutMs,
      ...(firstByteMs === undefined ? {} : { firstByteMs }),
    })
  }

  private peekLate(): Promise<PeekResult<Classified>> {
    return peek(this.socket, {
      classify: this.classifier(),
      maxBytes: this.peekCap(),
      timeoutMs: this.deps.limits.peekTimeoutMs,
      deadlineFrom: 'first-byte',
    })
  }

  private async resolveName(
    name: string,
  ): Promise<{ ok: true; addresses: string[] } | { ok: false; reason: Reason; detail: string }> {
    const { deps } = this
    const cached = deps.resolveCached?.(name)
    if (cached !== undefined && cached.length > 0) return { ok: true, addresses: [...cached] }
    const ac = new AbortController()
    const onAbort = (): void => ac.abort(new Error('connection aborted'))
    this.signal.addEventListener('abort', onAbort, { once: true })
    const timer = setTimeout(() => ac.abort(new Error(`no answer in ${deps.limits.resolveTimeoutMs} ms`)), deps.limits.resolveTimeoutMs)
    const aborted = new Promise<never>((_, reject) => {
      ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true })
    })
    try {
      const addresses = await Promise.race([deps.resolve(name, { signal: ac.signal }), aborted])
      if (!Array.isArray(addresses) || addresses.length === 0) {
        return { ok: false, reason: Reason.UPSTREAM_DNS_FAILED, detail: `${name} resolved to no address` }
      }
      return { ok: true, addresses }
    } catch (e) {
      if (this.aborted) return { ok: false, reason: Reason.CLIENT_ABORTED, detail: 'aborted while resolving' }
      return { ok: false, reason: Reason.UPSTREAM_DNS_FAILED, detail: `resolving ${name}: ${errorText(e)}` }
    } finally {
      clearTimeout(timer)
      this.signal.removeEventListener('abort', onAbort)
    }
  }

  /** Dial and relay on the native relay; undefined when this connection cannot use it. */
  private relayDial(addresses: readonly string[], port: number, head: Buffer | undefined): Promise<RelayedDial> | undefined {
    const { relay, connect, limits } = this.deps
    if (relay === undefined || connect !== undefined || this.aborted) return undefined
    const target = { addresses, port, timeoutMs: limits.dialTimeoutMs, maxAttempts: limits.maxDialAttempts }
    this.relayed = dialThroughRelay(this.socket, relay, target, {
      head,
      ...(limits.idleTimeoutMs > 0 ? { idleTimeoutMs: limits.idleTimeoutMs } : {}),
    })
    return this.relayed?.result
  }

  private async relayedTo(dialed: Extract<RelayedDial, { ok: true }>, decision: Decision, detail: string): Promise<Outcome> {
    this.address = dialed.address
    return spliced(await dialed.relayed, detail, decision)
  }

  private dial(addresses: readonly string[], port: number): ReturnType<typeof dialFirst> {
    const { limits, connect } = this.deps
    return dialFirst(addresses, port, {
      timeoutMs: limits.dialTimeoutMs,
      maxAttempts: limits.maxDialAttempts,
      signal: this.signal,
      ...(connect === undefined ? {} : { connect }),
    })
  }
}

/** The outcome of an allowed connection whose bytes were spliced or relayed. */
function spliced(r: SpliceResult, detail: string, decision: Decision): Outcome {
  const ended = r.error === undefined ? '' : `; ended by ${errorCode(r.error)}`
  return { verdict: 'allow', reason: Reason.ALLOWED, detail: detail + ended, bytesOut: r.bytesOut, bytesIn: r.bytesIn, ...route(decision) }
}

function denialOf(decision: Decision): Denial {
  const d: Denial = { reason: decision.reason, decision }
  if (decision.detail !== undefined) d.detail = decision.detail
  return d
}

function route(decision: Decision | undefined): { route?: string } {
  return decision?.route === undefined ? {} : { route: decision.route }
}

/** The HTTP status a malformed head asks for (431 oversize, 414, 505), else the given one. */
function statusOf(first: Classified, fallback?: number): { status?: number } {
  if (first.kind === 'malformed' && first.protocol === 'http' && first.status !== undefined) return { status: first.status }
  return fallback === undefined ? {} : { status: fallback }
}

function isPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535
}

/** `::ffff:192.0.2.1` → `192.0.2.1`; other addresses lowercased. */
function unmapV4(a: string): string {
  return a.toLowerCase().startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a.toLowerCase()
}

/** True when the "original" destination is the proxy socket itself: a direct connection, not a redirect. */
function isOwnSocketAddress(dst: OriginalDestination, socket: Socket): boolean {
  const local = socket.localAddress
  return local !== undefined && socket.localPort === dst.port && unmapV4(local) === unmapV4(dst.address)
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code
    return code === undefined ? e.message : `${code}: ${e.message}`
  }
  return String(e)
}

function errorCode(e: Error): string {
  return (e as NodeJS.ErrnoException).code ?? e.message
}
