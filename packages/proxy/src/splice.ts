/**
 * Bidirectional byte splice between the agent's socket and the upstream socket.
 *
 * - Backpressure: a direction pauses its source when the destination's buffer is full
 *   and resumes on `drain` (the semantics of `stream.pipe`, with byte counting).
 * - TCP_NODELAY on both sockets: small writes (a TLS ClientHello, an HTTP request) go
 *   out at once; with Nagle's algorithm a proxy adds ~40 ms per new HTTPS connection.
 * - Half-close: a FIN in one direction becomes `end()` on the other socket, so a client
 *   that shuts down its write side still reads the whole response. Both sockets must
 *   have `allowHalfOpen` set, or Node ends the write side on the first FIN.
 * - An error or reset on either side destroys both.
 *
 * The directions start separately so the proxy can let the upstream talk first (server-
 * first protocols) while it is still checking what the agent sends.
 */
import type { Socket } from 'node:net'
import { bulkReaderOf } from './bulk-read.js'

export interface SpliceResult {
  /** Bytes agent → upstream, including the replayed head. */
  bytesOut: number
  /** Bytes upstream → agent. */
  bytesIn: number
  durationMs: number
  /** The first error either socket reported, if any (ECONNRESET, idle timeout, ...). */
  error?: Error
}

export interface SpliceOptions {
  /** Destroy both sides after this long with no bytes in either direction. Default: none. */
  idleTimeoutMs?: number
}

export interface Splice {
  /** Start copying upstream → agent. Idempotent. */
  startInbound(): void
  /** Write `head` (bytes already read from the agent) upstream, then copy agent → upstream. Idempotent. */
  startOutbound(head?: Buffer): void
  /** Destroy both sockets. */
  abort(error?: Error): void
  readonly bytesOut: number
  readonly bytesIn: number
  /** Resolves when both sockets have closed. Never rejects. */
  readonly done: Promise<SpliceResult>
}

/** Splice both directions at once; `head` is replayed upstream first. */
export function splice(agent: Socket, upstream: Socket, options: SpliceOptions & { head?: Buffer } = {}): Promise<SpliceResult> {
  const s = createSplice(agent, upstream, options)
  s.startInbound()
  s.startOutbound(options.head)
  return s.done
}

/** Set up a splice whose directions the caller starts. See {@link splice}. */
export function createSplice(agent: Socket, upstream: Socket, options: SpliceOptions = {}): Splice {
  const started = performance.now()
  let bytesOut = 0
  let bytesIn = 0
  let firstError: Error | undefined
  let inboundStarted = false
  let outboundStarted = false
  let idleTimer: NodeJS.Timeout | undefined
  let lastActivity = started

  agent.setNoDelay(true)
  upstream.setNoDelay(true)

  const destroyBoth = (): void => {
    agent.destroy()
    upstream.destroy()
  }
  const onError = (error: Error): void => {
    firstError ??= error
    destroyBoth()
  }
  agent.on('error', onError)
  upstream.on('error', onError)

  const closed = (socket: Socket): Promise<void> =>
    new Promise((resolve) => (socket.closed ? resolve() : socket.once('close', () => resolve())))

  // When one side closes, the other may finish on its own only if both of its
  // directions are already done; otherwise nothing would ever close it.
  const onClose = (other: Socket) => (): void => {
    if (!(other.readableEnded && other.writableEnded)) other.destroy()
  }
  agent.once('close', onClose(upstream))
  upstream.once('close', onClose(agent))
  // A side that died before the splice was set up would never emit 'close' to us.
  if (agent.destroyed || upstream.destroyed) destroyBoth()

  // Only an idle timeout needs the time of the last byte (not a clock read per chunk otherwise).
  const touch =
    options.idleTimeoutMs !== undefined && options.idleTimeoutMs > 0
      ? (): void => {
          lastActivity = performance.now()
        }
      : (): void => {}
  if (options.idleTimeoutMs !== undefined && options.idleTimeoutMs > 0) {
    const idle = options.idleTimeoutMs
    const arm = (delay: number): void => {
      idleTimer = setTimeout(() => {
        const quiet = performance.now() - lastActivity
        if (quiet >= idle) onError(new Error(`idle for ${Math.round(quiet)} ms`))
        else arm(idle - quiet)
      }, delay)
      idleTimer.unref?.()
    }
    arm(idle)
  }

  const pump = (src: Socket, dst: Socket, count: (n: number) => void): void => {
    const forward = (chunk: Buffer): boolean => {
      count(chunk.length)
      touch()
      return dst.write(chunk)
    }
    // An upstream socket that reads into its own large buffers (bulk-read.ts) has no
    // 'data' events; it pauses itself when forward() says the destination is full.
    const reader = bulkReaderOf(src)
    let full = false
    if (reader === undefined) {
      src.on('data', (chunk: Buffer) => {
        if (!forward(chunk)) src.pause()
      })
    } else {
      full = !reader.take(forward, () => dst.writableLength === 0)
    }
    dst.on('drain', () => src.resume())
    const onEnd = (): void => {
      if (!dst.destroyed) dst.end()
    }
    if (src.readableEnded) onEnd()
    else {
      src.once('end', onEnd)
      // A destination already full from held chunks: 'drain' resumes.
      if (!full) src.resume()
    }
  }

  const done = Promise.all([closed(agent), closed(upstream)]).then((): SpliceResult => {
    clearTimeout(idleTimer)
    const result: SpliceResult = { bytesOut, bytesIn, durationMs: performance.now() - started }
    if (firstError !== undefined) result.error = firstError
    return result
  })

  return {
    startInbound() {
      if (inboundStarted) return
      inboundStarted = true
      pump(upstream, agent, (n) => (bytesIn += n))
    },
    startOutbound(head?: Buffer) {
      if (outboundStarted) return
      outboundStarted = true
      if (head !== undefined && head.length > 0) {
        bytesOut += head.length
        upstream.write(head)
      }
      pump(agent, upstream, (n) => (bytesOut += n))
    },
    abort(error?: Error) {
      if (error !== undefined) firstError ??= error
      destroyBoth()
    },
    get bytesOut() {
      return bytesOut
    },
    get bytesIn() {
      return bytesIn
    },
    done,
  }
}
