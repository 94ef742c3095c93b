/**
 * TLS termination for `via: dispatcher` connections: a {@link DispatcherHook} that puts the
 * peeked bytes back, terminates TLS with a leaf for the bound name from the sandbox CA,
 * and hands the decrypted socket on once the handshake is done.
 *
 * ```
 * proxy ─(socket, ctx.head)─▶ unshift(head) ─▶ TLSSocket(isServer, leaf for ctx.name) ─secure─▶ handle(tls, ctx)
 *                                                     └─ error / timeout ─▶ onError, destroy (never thrown)
 * plain HTTP (ctx.protocol 'http') ─▶ unshift(head) ─▶ handle(socket, ctx)
 * ```
 *
 * The leaf is chosen by the name keel bound (the synthetic address the agent dialed), not
 * by the SNI: the proxy has already checked that the SNI, if any, equals that name. ALPN
 * offers HTTP/1.1 only (the dispatcher serves HTTP/1.1); a client that offers only h2
 * gets a `no_application_protocol` alert, as from any HTTP/1.1-only server.
 *
 * Failures before the handshake starts (a leaf cannot be issued) are thrown to the
 * proxy, which resets the socket and records `internal_error` against the connection.
 * Handshake failures and timeouts happen later, in socket callbacks: they go to `onError`
 * and the socket is destroyed; nothing is thrown from a callback (STYLE.md §5).
 */
import type { Socket } from 'node:net'
import { Duplex } from 'node:stream'
import tls from 'node:tls'
import { NOOP_LOGGER, type Logger } from '@keel/core'
import type { DispatcherContext, DispatcherHook } from '../connection.js'
import type { LeafCertificate } from './sandbox-ca.js'

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
const DEFAULT_ALPN: readonly string[] = ['http/1.1']

/** Why a terminated connection ended before it reached `handle`. */
export type TerminationFailure = 'handshake_error' | 'handshake_timeout' | 'closed_during_handshake'

export interface TlsTerminatorOptions {
  /** Where leaves come from: a {@link SandboxCa} (or anything with `leafFor`). */
  ca: { leafFor(name: string): LeafCertificate }
  /**
   * Gets each connection once it is ready to carry HTTP: the `TLSSocket` after the
   * handshake, or for plain HTTP the agent's socket with its head put back. It owns the
   * socket from then on.
   */
  handle(socket: Duplex, ctx: DispatcherContext): void
  /** ALPN protocols offered. Default `['http/1.1']`. */
  alpn?: readonly string[]
  /** Deadline for the handshake, from hand-over. Default 10 s. */
  handshakeTimeoutMs?: number
  /** Plain-HTTP connections to a dispatcher name: hand them over (default) or reset them. */
  plainHttp?: 'serve' | 'reject'
  /** Called once per connection that failed before `handle`. Default: a warning on `logger`. */
  onError?(failure: TerminationFailure, ctx: DispatcherContext, error?: Error): void
  logger?: Logger
}

export interface TlsTerminator {
  /** Pass this as `onDispatcher` to createProxy. */
  readonly hook: DispatcherHook
  /** Counters since creation. */
  readonly stats: { terminated: number; plain: number; failed: number }
}

/**
 * @example
 * const terminator = createTlsTerminator({ ca, handle: (socket, ctx) => mount.handleConnection(socket, { boundName: ctx.name, agent: ctx.agent.name }) })
 * createProxy({ ..., onDispatcher: terminator.hook })
 */
export function createTlsTerminator(options: TlsTerminatorOptions): TlsTerminator {
  const logger = options.logger ?? NOOP_LOGGER
  const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS
  const alpn = [...(options.alpn ?? DEFAULT_ALPN)]
  const plainHttp = options.plainHttp ?? 'serve'
  const stats = { terminated: 0, plain: 0, failed: 0 }
  // One SecureContext per leaf (a renewed leaf gets a new one).
  const contexts = new Map<string, { leaf: LeafCertificate; context: tls.SecureContext }>()

  const report = (failure: TerminationFailure, ctx: DispatcherContext, error?: Error): void => {
    stats.failed++
    try {
      if (options.onError) options.onError(failure, ctx, error)
      else logger.warn('dispatcher TLS termination failed', { failure, name: ctx.name, agent: ctx.agent.name, error: error?.message })
    } catch {
      // A broken observer never breaks the data path.
    }
  }

  const secureContextFor = (name: string): tls.SecureContext => {
    const leaf = options.ca.leafFor(name) // throws to the proxy: internal_error
    const cached = contexts.get(name)
    if (cached !== undefined && cached.leaf === leaf) return cached.context
    const context = tls.createSecureContext({ key: leaf.key, cert: leaf.cert })
    contexts.set(name, { leaf, context })
    return context
  }

  function terminateTls(socket: Socket, ctx: DispatcherContext): void {
    if (ctx.protocol === 'http') {
      if (plainHttp === 'reject') throw new Error('plain HTTP to a dispatcher name is turned off (plainHttp: reject)')
      stats.plain++
      options.handle(replayHead(socket, ctx.head), ctx)
      return
    }
    const secureContext = secureContextFor(ctx.name)
    socket.unshift(ctx.head)
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext,
      ALPNProtocols: alpn,
      requestCert: false,
      rejectUnauthorized: false,
    })
    let settled = false
    const fail = (failure: TerminationFailure, error?: Error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      report(failure, ctx, error)
      tlsSocket.destroy()
      socket.destroy()
    }
    const timer = setTimeout(() => fail('handshake_timeout'), timeoutMs)
    timer.unref?.()
    // Stays attached after the hand-over too, so a late error is never unhandled; the
    // HTTP server that gets the socket adds its own handling.
    tlsSocket.on('error', (err: Error) => {
      if (!settled) fail('handshake_error', err)
      else logger.debug('dispatcher TLS socket error', { name: ctx.name, error: err.message })
    })
    // The proxy's sockets allow half-open, so a client that gives up mid-handshake may
    // only send a FIN: 'end' is the signal then, not 'close'.
    tlsSocket.once('end', () => fail('closed_during_handshake'))
    tlsSocket.once('close', () => fail('closed_during_handshake'))
    tlsSocket.once('secure', () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      stats.terminated++
      try {
        options.handle(tlsSocket, ctx)
      } catch (err) {
        logger.error('dispatcher handler threw', { name: ctx.name, error: (err as Error).message })
        tlsSocket.destroy()
      }
    })
  }

  return { hook: terminateTls, stats }
}

/**
 * The agent's socket as a JS-only Duplex that yields `head` first. Plain HTTP needs this:
 * Node's HTTP server reads a fresh net.Socket's native handle directly (bypassing bytes
 * unshifted into the JS stream), while any other Duplex is read through the stream API,
 * which node documents as supported for `server.emit('connection', duplex)`.
 * TLSSocket needs none of this: it feeds already-buffered bytes to its TLS engine.
 */
function replayHead(socket: Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      socket.resume()
    },
    write(chunk: Buffer, encoding, callback) {
      socket.write(chunk, encoding, callback)
    },
    final(callback) {
      socket.end(() => callback())
    },
    destroy(err, callback) {
      socket.destroy()
      callback(err)
    },
  })
  if (head.length > 0) duplex.push(head)
  socket.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause()
  })
  socket.on('end', () => duplex.push(null))
  socket.on('error', (err) => duplex.destroy(err))
  socket.on('close', () => {
    if (!duplex.destroyed) duplex.destroy()
  })
  // What the HTTP server and request handlers read from a socket.
  socket.on('timeout', () => duplex.emit('timeout'))
  Object.assign(duplex, {
    setTimeout(ms: number, callback?: () => void) {
      socket.setTimeout(ms)
      if (callback) duplex.once('timeout', callback)
      return duplex
    },
    setNoDelay: (noDelay?: boolean) => (socket.setNoDelay(noDelay), duplex),
    setKeepAlive: (enable?: boolean, delay?: number) => (socket.setKeepAlive(enable, delay), duplex),
  })
  for (const key of ['remoteAddress', 'remotePort', 'remoteFamily', 'localAddress', 'localPort'] as const) {
    Object.defineProperty(duplex, key, { get: () => socket[key], enumerable: true })
  }
  return duplex
}
