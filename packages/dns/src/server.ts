/**
 * The sandbox's DNS server (DESIGN.md, sandbox data path step 5).
 *
 * nftables inside the sandbox redirects every UDP/TCP port-53 packet here. For each query:
 *
 * 1. Parse strictly ({@link parseMessage}). Malformed → dropped (UDP) or the
 *    connection closed (TCP), and counted. Responses sent to us (QR=1) are dropped too,
 *    so nothing can bounce packets off the resolver.
 * 2. Exactly one question of class IN and opcode QUERY, else FORMERR / REFUSED / NOTIMP.
 *    EDNS version ≠ 0 → BADVERS (RFC 6891 §6.1.3).
 * 3. A PTR query for a synthetic address is answered from the pool (no policy needed:
 *    it only tells the agent what it already asked for).
 * 4. The name must be a plain hostname (letters, digits, `-`, `_`); anything else (escaped
 *    bytes, `*`, the root) is denied without asking the policy.
 * 5. `decideName({ agent, hostname, now })`. Deny → NXDOMAIN, locally, with an Extended DNS
 *    Error (RFC 8914) INFO-CODE 15 "Blocked" whose EXTRA-TEXT is the reason code. The name
 *    is **never** sent upstream, so no data leaves through DNS (tunnelling through
 *    `<data>.allowed-parent.example` fails unless the policy allows the subdomains).
 * 6. Allowed, A or AAAA: ask upstream first. NXDOMAIN stays NXDOMAIN; no address of that
 *    family stays NODATA (so a v4-only name gets no AAAA and clients do not try v6 in
 *    vain; the proxy dials the real address itself anyway); otherwise answer with the
 *    name's synthetic address, with TTL = upstream TTL clamped to [minAnswerTtl,
 *    maxAnswerTtl]. Upstream failure/timeout (bounded by the resolver, ~2 s) → SERVFAIL
 *    with EDE 22 "No Reachable Authority" (timeout) or 23 "Network Error", text
 *    `upstream_dns_failed`.
 * 7. Allowed, any other type (MX, TXT, SRV, HTTPS/SVCB, CNAME, ANY, …): NOERROR with no
 *    data and EDE 15 `dns_query_type_denied`; never forwarded. TXT and friends are the
 *    classic tunnelling carriers, and HTTPS/SVCB would hand the client ECH configs and
 *    alternative addresses that bypass the synthetic binding. Clients fall back to A/AAAA.
 *
 * EDNS: an OPT record (and so the EDE) is included only when the query had one, as
 * RFC 6891 §7 requires. dig sends EDNS by default and prints
 * `EDE: 15 (Blocked): (dns_name_denied)`.
 *
 * One {@link DecisionEvent} (`kind: 'dns'`) is emitted per answered query.
 *
 * Sockets are handed in already bound: in production a tiny child inside the sandbox's
 * netns creates them and passes them over IPC (step 3). Create the TCP server with
 * `allowHalfOpen: true` so a client that half-closes after its query still gets answers.
 * {@link listenDnsServer} binds both on one address and port, for tests and tools.
 */
import dgram from 'node:dgram'
import net from 'node:net'
import {
  NOOP_LOGGER,
  Reason,
  type AgentIdentity,
  type DecideNameArgs,
  type Decision,
  type DecisionEvent,
  type DecisionSink,
  type Logger,
  type Protocol,
} from '@keel/core'
import { addressFromReverseName, parseIPv4, parseIPv6 } from './ip.js'
import type { SyntheticPool } from './pool.js'
import { UpstreamDnsError, type UpstreamQuerier } from './upstream.js'
import {
  DNS_HEADER_SIZE,
  EdeCode,
  Opcode,
  RCode,
  RRClass,
  RRType,
  asciiLower,
  edeOption,
  encodeMessage,
  parseMessage,
  rdataName,
  typeName,
  type DnsMessage,
  type DnsRecordInput,
} from './wire.js'

export interface DnsServerOptions {
  /**
   * Bound UDP socket(s), e.g. 127.0.0.1 and ::1 inside the sandbox. The server takes
   * ownership and closes them on `close()`.
   */
  udp?: dgram.Socket | readonly dgram.Socket[]
  /** Listening TCP server(s), owned likewise. Prefer ones made with `allowHalfOpen: true`. */
  tcp?: net.Server | readonly net.Server[]
  /** The sandbox's agent: every decision is made for it. */
  agent: AgentIdentity
  /** The policy engine's DNS decision (core). Must be pure and synchronous; a throw fails closed. */
  decideName: (args: DecideNameArgs) => Decision
  pool: SyntheticPool
  upstream: UpstreamQuerier
  sink?: DecisionSink
  logger?: Logger
  /** Milliseconds since the epoch, for decisions and events. */
  now?: () => number
  /** Floor for answer TTLs, seconds. Default 1. */
  minAnswerTtl?: number
  /** Cap for answer TTLs, seconds. Default 300. */
  maxAnswerTtl?: number
  /** A TCP connection with no complete query for this long is closed. Default 10 000 ms (RFC 7766 §6.2.3). */
  tcpIdleTimeoutMs?: number
  /** Concurrent TCP connections; more are closed at once. Default 128. */
  maxTcpConnections?: number
  /** Largest query accepted over TCP, bytes. Larger → connection closed. Default 4096. */
  maxTcpMessageBytes?: number
  /**
   * UDP queries processed at once; more are dropped. Default 1024. (TCP is bounded by
   * `maxTcpConnections` × 16 queries per connection: reading pauses at 16.)
   */
  maxInFlight?: number
}

/** Plain counters, read at any time (e.g. for the exit report). */
export interface DnsServerCounters {
  /** Messages received (datagrams and TCP frames). */
  received: number
  /** Dropped as malformed (or as a response sent to us). */
  malformed: number
  /** Responses sent. */
  answered: number
  /** Names allowed by the policy. */
  allowed: number
  /** Names denied by the policy (or not hostnames): NXDOMAIN + EDE, never forwarded. */
  denied: number
  /** Allowed names asked for a type keel does not forward (NODATA + EDE). */
  typeDenied: number
  /** Upstream failed or timed out (SERVFAIL). */
  upstreamFailures: number
  /** FORMERR / NOTIMP / REFUSED / BADVERS answers. */
  rejected: number
  /** UDP queries dropped because `maxInFlight` were already in progress. */
  overload: number
  tcpConnections: number
  /** TCP connections closed at once because `maxTcpConnections` were open. */
  tcpRejected: number
}

export interface DnsServer {
  readonly counters: Readonly<DnsServerCounters>
  /**
   * Answers one raw query. Resolves to the response bytes (not length-framed), or
   * `undefined` when the message must be dropped. Never rejects.
   * `maxBytes` is the UDP size limit; omitted for TCP.
   */
  handle(query: Uint8Array, protocol: Protocol, maxBytes?: number): Promise<Buffer | undefined>
  /** Closes the sockets and every open TCP connection. */
  close(): Promise<void>
}

const HOSTNAME_LABEL = /^[a-z0-9_-]{1,63}$/
/** Queries one TCP connection may have in progress before keel stops reading from it. */
const PER_CONN_IN_FLIGHT = 16
/** Bytes buffered per TCP connection beyond one query (about one socket read). */
const MAX_TCP_BUFFER = 65_536

/** True when `name` (lower case, no trailing dot) is a plain hostname keel will decide on. */
export function isPlainHostname(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false
  return name.split('.').every((l) => HOSTNAME_LABEL.test(l))
}

const EMPTY_COUNTERS = (): DnsServerCounters => ({
  received: 0,
  malformed: 0,
  answered: 0,
  allowed: 0,
  denied: 0,
  typeDenied: 0,
  upstreamFailures: 0,
  rejected: 0,
  overload: 0,
  tcpConnections: 0,
  tcpRejected: 0,
})

interface ReplyOptions {
  rcode: number
  answers?: DnsRecordInput[]
  ede?: { code: number; text: string }
  /** Echo the question section (false for FORMERR on odd question counts). */
  echoQuestion?: boolean
}

/**
 * Serves DNS for one sandbox on the sockets given. See the module comment for the
 * full behaviour.
 *
 * @example
 * const server = createDnsServer({ udp, tcp, agent, decideName, pool: new SyntheticPool(), upstream })
 */
export function createDnsServer(options: DnsServerOptions): DnsServer {
  const { agent, decideName, pool, upstream } = options
  const log = options.logger ?? NOOP_LOGGER
  const now = options.now ?? Date.now
  const minTtl = options.minAnswerTtl ?? 1
  const maxTtl = options.maxAnswerTtl ?? 300
  const idleMs = options.tcpIdleTimeoutMs ?? 10_000
  const maxConns = options.maxTcpConnections ?? 128
  const maxTcpBytes = Math.min(options.maxTcpMessageBytes ?? 4096, 0xffff)
  const maxInFlight = options.maxInFlight ?? 1024
  const counters = EMPTY_COUNTERS()
  let inFlight = 0
  let closed = false

  const emit = (event: Omit<DecisionEvent, 'time' | 'kind' | 'agent'>): void => {
    if (!options.sink) return
    try {
      options.sink({ time: now(), kind: 'dns', agent: agent.name, ...event })
    } catch (err) {
      log.warn('decision sink threw', { error: String(err) })
    }
  }

  const reply = (q: DnsMessage, r: ReplyOptions, maxBytes: number | undefined): Buffer => {
    const base = {
      header: { id: q.header.id, qr: true, opcode: q.header.opcode, rd: q.header.rd, ra: true, cd: q.header.cd },
      rcode: r.rcode,
      questions: r.echoQuestion === false ? [] : q.questions,
      ...(q.edns ? { edns: { udpPayloadSize: 1232, options: r.ede ? [edeOption(r.ede.code, r.ede.text)] : [] } } : {}),
    }
    const wire = encodeMessage({ ...base, answers: r.answers ?? [] })
    if (maxBytes === undefined || wire.length <= maxBytes) return wire
    // RFC 1035 §4.2.1 / RFC 2181 §9: too big for UDP → TC=1 with no records; the client retries over TCP.
    return encodeMessage({ ...base, header: { ...base.header, tc: true } })
  }

  const answerTtl = (ttl: number): number => Math.max(minTtl, Math.min(maxTtl, ttl))

  async function answer(q: DnsMessage, protocol: Protocol, maxBytes: number | undefined): Promise<Buffer> {
    if (q.header.opcode !== Opcode.QUERY) {
      counters.rejected++
      return reply(q, { rcode: RCode.NOTIMP, echoQuestion: q.questions.length === 1 }, maxBytes)
    }
    if (q.edns && q.edns.version !== 0) {
      counters.rejected++
      return reply(q, { rcode: RCode.BADVERS, echoQuestion: q.questions.length === 1 }, maxBytes)
    }
    const question = q.questions[0]
    if (q.questions.length !== 1 || !question) {
      counters.rejected++
      return reply(q, { rcode: RCode.FORMERR, echoQuestion: false }, maxBytes)
    }
    if (question.class !== RRClass.IN) {
      counters.rejected++
      return reply(q, { rcode: RCode.REFUSED }, maxBytes)
    }
    const name = asciiLower(question.name)
    const qtype = typeName(question.type)

    // Reverse lookups of synthetic addresses: answered from the pool.
    if (question.type === RRType.PTR) {
      const address = addressFromReverseName(name)
      if (address !== undefined && pool.isSynthetic(address)) {
        const bound = pool.nameFor(address)
        emit({ name, address, protocol, verdict: 'allow', reason: Reason.ALLOWED, detail: 'PTR of a synthetic address' })
        return bound === undefined
          ? reply(q, { rcode: RCode.NXDOMAIN }, maxBytes)
          : reply(
              q,
              { rcode: RCode.NOERROR, answers: [{ name: question.name, type: RRType.PTR, ttl: maxTtl, data: rdataName(bound) }] },
              maxBytes,
            )
      }
    }

    let decision: Decision
    if (!isPlainHostname(name)) {
      decision = { verdict: 'deny', reason: Reason.DNS_NAME_DENIED, detail: 'not a plain hostname' }
    } else {
      try {
        decision = decideName({ agent, hostname: name, now: now() })
        if (decision === null || typeof decision !== 'object') throw new TypeError('decideName returned no decision')
      } catch (err) {
        log.error('decideName threw; failing closed', { name, error: String(err) })
        counters.denied++
        emit({ name, protocol, verdict: 'deny', reason: Reason.INTERNAL_ERROR, detail: `qtype=${qtype}` })
        return reply(q, { rcode: RCode.SERVFAIL, ede: { code: EdeCode.OTHER, text: Reason.INTERNAL_ERROR } }, maxBytes)
      }
    }
    const route = decision.route !== undefined ? { route: decision.route } : {}

    if (decision.verdict !== 'allow') {
      counters.denied++
      log.debug('dns name denied', { name, qtype, reason: decision.reason })
      emit({
        name,
        protocol,
        verdict: 'deny',
        reason: decision.reason,
        ...route,
        detail: decision.detail !== undefined ? `qtype=${qtype}; ${decision.detail}` : `qtype=${qtype}`,
      })
      return reply(q, { rcode: RCode.NXDOMAIN, ede: { code: EdeCode.BLOCKED, text: decision.reason } }, maxBytes)
    }

    if (question.type !== RRType.A && question.type !== RRType.AAAA) {
      counters.typeDenied++
      emit({ name, protocol, verdict: 'deny', reason: Reason.DNS_QUERY_TYPE_DENIED, ...route, detail: `qtype=${qtype}` })
      return reply(q, { rcode: RCode.NOERROR, ede: { code: EdeCode.BLOCKED, text: Reason.DNS_QUERY_TYPE_DENIED } }, maxBytes)
    }

    counters.allowed++
    const family = question.type === RRType.A ? 'A' : 'AAAA'
    let upstreamAnswer
    try {
      upstreamAnswer = await upstream.query(name, family)
    } catch (err) {
      counters.upstreamFailures++
      const timeout = err instanceof UpstreamDnsError && err.code === 'ERR_UPSTREAM_TIMEOUT'
      log.warn('upstream dns failed', { name, qtype, error: String(err) })
      emit({ name, protocol, verdict: 'deny', reason: Reason.UPSTREAM_DNS_FAILED, ...route, detail: `qtype=${qtype}` })
      return reply(
        q,
        {
          rcode: RCode.SERVFAIL,
          ede: { code: timeout ? EdeCode.NO_REACHABLE_AUTHORITY : EdeCode.NETWORK_ERROR, text: Reason.UPSTREAM_DNS_FAILED },
        },
        maxBytes,
      )
    }
    if (upstreamAnswer.rcode === RCode.NXDOMAIN || upstreamAnswer.addresses.length === 0) {
      const nx = upstreamAnswer.rcode === RCode.NXDOMAIN
      emit({ name, protocol, verdict: 'allow', reason: decision.reason, ...route, detail: `qtype=${qtype}; upstream ${nx ? 'NXDOMAIN' : 'NODATA'}` })
      return reply(q, { rcode: nx ? RCode.NXDOMAIN : RCode.NOERROR }, maxBytes)
    }
    const binding = pool.bind(name)
    if (!binding) {
      log.error('synthetic address pool exhausted', { name, capacity: pool.capacity })
      emit({ name, protocol, verdict: 'deny', reason: Reason.INTERNAL_ERROR, ...route, detail: 'synthetic address pool exhausted' })
      return reply(q, { rcode: RCode.SERVFAIL, ede: { code: EdeCode.OTHER, text: Reason.INTERNAL_ERROR } }, maxBytes)
    }
    const address = family === 'A' ? binding.ipv4 : binding.ipv6
    const data = family === 'A' ? parseIPv4(address) : parseIPv6(address)
    emit({ name, address, protocol, verdict: 'allow', reason: decision.reason, ...route, detail: `qtype=${qtype}` })
    return reply(
      q,
      {
        rcode: RCode.NOERROR,
        answers: [{ name: question.name, type: question.type, ttl: answerTtl(upstreamAnswer.ttl), data: data as Uint8Array }],
      },
      maxBytes,
    )
  }

  async function handle(raw: Uint8Array, protocol: Protocol, maxBytes?: number): Promise<Buffer | undefined> {
    counters.received++
    let q: DnsMessage
    try {
      q = parseMessage(raw)
      if (q.header.qr) throw new Error('response sent to the resolver')
    } catch (err) {
      counters.malformed++
      log.debug('dropping malformed dns message', { protocol, bytes: raw.length, error: String(err) })
      return undefined
    }
    let out: Buffer
    try {
      const limit = maxBytes === undefined ? undefined : Math.max(512, Math.min(maxBytes, q.edns ? q.edns.udpPayloadSize : 512))
      out = await answer(q, protocol, limit)
    } catch (err) {
      // Should not happen (answer() catches what it expects); fail closed, never throw out of a socket callback.
      log.error('dns query handling failed', { error: String(err) })
      try {
        out = reply(q, { rcode: RCode.SERVFAIL, ede: { code: EdeCode.OTHER, text: Reason.INTERNAL_ERROR }, echoQuestion: false }, undefined)
      } catch {
        return undefined
      }
    }
    counters.answered++
    return out
  }

  // ------------------------------------------------------------------ UDP
  const udps: readonly dgram.Socket[] = options.udp === undefined ? [] : Array.isArray(options.udp) ? options.udp : [options.udp as dgram.Socket]
  const udpListener = (udp: dgram.Socket) => (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    if (inFlight >= maxInFlight) {
      counters.received++
      counters.overload++
      return
    }
    inFlight++
    void handle(msg, 'UDP', 4096)
      .then((out) => {
        if (out && !closed) {
          udp.send(out, rinfo.port, rinfo.address, (err) => {
            if (err) log.debug('udp send failed', { error: String(err) })
          })
        }
      })
      .finally(() => {
        inFlight--
      })
  }
  const onUdpError = (err: Error): void => log.warn('dns udp socket error', { error: String(err) })
  const udpListeners = udps.map((udp) => {
    const onMessage = udpListener(udp)
    udp.on('message', onMessage)
    udp.on('error', onUdpError)
    return onMessage
  })

  // ------------------------------------------------------------------ TCP
  const tcps: readonly net.Server[] = options.tcp === undefined ? [] : Array.isArray(options.tcp) ? options.tcp : [options.tcp as net.Server]
  const conns = new Set<net.Socket>()
  const onConnection = (socket: net.Socket): void => {
    if (closed || conns.size >= maxConns) {
      counters.tcpRejected++
      socket.destroy()
      return
    }
    counters.tcpConnections++
    conns.add(socket)
    let pending: Buffer = Buffer.alloc(0)
    let active = 0
    let peerEnded = false
    socket.setTimeout(idleMs)
    socket.on('timeout', () => socket.destroy())
    socket.on('error', (err) => log.debug('dns tcp connection error', { error: String(err) }))
    socket.on('close', () => conns.delete(socket))
    socket.on('end', () => {
      peerEnded = true
      if (active === 0) socket.end()
    })
    const finishOne = (): void => {
      active--
      if (socket.isPaused() && active < PER_CONN_IN_FLIGHT) {
        socket.resume()
        drain()
      }
      if (peerEnded && active === 0 && !socket.destroyed) socket.end()
    }
    const malformed = (): void => {
      counters.received++
      counters.malformed++
      socket.destroy()
    }
    const drain = (): void => {
      // Each iteration consumes one frame or returns: bounded by the bytes buffered.
      while (!socket.destroyed && pending.length >= 2) {
        if (active >= PER_CONN_IN_FLIGHT) {
          socket.pause()
          return
        }
        const len = pending.readUInt16BE(0)
        if (len < DNS_HEADER_SIZE || len > maxTcpBytes) {
          malformed()
          return
        }
        if (pending.length < 2 + len) return
        const frame = Buffer.from(pending.subarray(2, 2 + len))
        pending = pending.subarray(2 + len)
        active++
        socket.setTimeout(idleMs)
        void handle(frame, 'TCP')
          .then((out) => {
            if (!out) {
              socket.destroy() // malformed: close (RFC 7766 §8 allows closing on unparseable input)
              return
            }
            if (!socket.destroyed && socket.writable) {
              const framed = Buffer.allocUnsafe(2 + out.length)
              framed.writeUInt16BE(out.length, 0)
              out.copy(framed, 2)
              socket.write(framed)
            }
          })
          .finally(finishOne)
      }
    }
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      if (pending.length > MAX_TCP_BUFFER + maxTcpBytes) {
        malformed() // reads pause at PER_CONN_IN_FLIGHT queries, so only a flood gets here
        return
      }
      drain()
    })
  }
  const onTcpError = (err: Error): void => log.warn('dns tcp server error', { error: String(err) })
  for (const tcp of tcps) {
    tcp.on('connection', onConnection)
    tcp.on('error', onTcpError)
  }

  return {
    counters,
    handle,
    async close(): Promise<void> {
      if (closed) return
      closed = true
      const waits: Promise<void>[] = []
      udps.forEach((udp, i) => {
        const onMessage = udpListeners[i]
        if (onMessage) udp.off('message', onMessage)
        waits.push(
          new Promise<void>((resolve) => {
            try {
              udp.close(() => resolve())
            } catch {
              resolve() // already closed
            }
          }),
        )
      })
      for (const tcp of tcps) {
        tcp.off('connection', onConnection)
        waits.push(new Promise<void>((resolve) => (tcp.listening ? tcp.close(() => resolve()) : resolve())))
      }
      for (const s of conns) s.destroy()
      await Promise.all(waits)
    },
  }
}

export interface ListenDnsServerOptions extends Omit<DnsServerOptions, 'udp' | 'tcp'> {
  /** Default `127.0.0.1`. */
  host?: string
  /** Default 0: a free port, the same one for UDP and TCP. */
  port?: number
}

/** Binds `dgram`/`net` on one address:port, refreshing the port when TCP's is taken. */
async function bindPair(host: string, port: number): Promise<{ udp: dgram.Socket; tcp: net.Server; port: number }> {
  const family = net.isIPv6(host) ? 'udp6' : 'udp4'
  let lastError: unknown
  for (let attempt = 0; attempt < 20; attempt++) {
    const udp = dgram.createSocket(family)
    const udpPort = await new Promise<number>((resolve, reject) => {
      udp.once('error', reject)
      udp.bind(port, host, () => {
        udp.off('error', reject)
        resolve(udp.address().port)
      })
    })
    const tcp = net.createServer({ allowHalfOpen: true })
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject)
        tcp.listen(udpPort, host, () => {
          tcp.off('error', reject)
          resolve()
        })
      })
      return { udp, tcp, port: udpPort }
    } catch (err) {
      lastError = err
      udp.close()
      if (port !== 0) break // a fixed port that is taken will stay taken
    }
  }
  throw lastError instanceof Error ? lastError : new Error('could not bind the DNS server')
}

/**
 * Binds UDP and TCP on `host:port` (same port for both) and serves DNS there.
 * For tests and tools; the sandbox passes its own sockets to {@link createDnsServer}.
 */
export async function listenDnsServer(options: ListenDnsServerOptions): Promise<DnsServer & { host: string; port: number }> {
  const host = options.host ?? '127.0.0.1'
  const { udp, tcp, port } = await bindPair(host, options.port ?? 0)
  const server = createDnsServer({ ...options, udp, tcp })
  return Object.assign(server, { host, port })
}
