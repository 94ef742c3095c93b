/**
 * Hand an allowed, dialed connection to a native relay (the splice(2) thread of
 * @keel/nftables-napi) instead of copying its bytes through the JS event loop.
 *
 * Done only at a quiet point: both sockets open and connected, nothing queued for
 * writing, the agent paused after its peek. Bytes Node has already read and nobody has
 * forwarded (the rest of the agent's read buffer, a greeting the upstream sent early)
 * go to the relay as heads, in order, so nothing is lost or reordered. The relay dup()s
 * both descriptors; then the Node sockets are destroyed, which closes only our copies.
 * No shutdown(2) is involved, so the connections themselves stay up.
 *
 * When a socket cannot be handed over (no descriptor, e.g. a test double; already
 * closing; bytes queued for writing; the relay refused, e.g. EMFILE), nothing has been
 * touched and the caller uses the JS splice (splice.ts).
 */
import type { Socket } from 'node:net'
import { bulkReaderOf } from './bulk-read.js'
import type { SpliceResult } from './splice.js'

/**
 * Relays between two connected TCP sockets given by descriptor, and owns them from the
 * call on. Throws, taking nothing, when it cannot. `startRelay` of @keel/nftables-napi.
 */
export type SocketRelay = (
  agentFd: number,
  upstreamFd: number,
  options: { headOut?: Buffer | undefined; headIn?: Buffer | undefined; idleTimeoutMs?: number | undefined },
) => {
  abort(): void
  readonly done: Promise<{ bytesOut: number; bytesIn: number; error?: Error }>
}

export interface Relayed {
  abort(): void
  /** Settles when both sockets are closed. Never rejects. */
  readonly done: Promise<SpliceResult>
}

/**
 * Give `agent` and `upstream` to `relay`, `head` (bytes already read from the agent)
 * first. Returns undefined, with both sockets untouched, when they cannot be handed over.
 */
export function handOffToRelay(
  agent: Socket,
  upstream: Socket,
  relay: SocketRelay,
  options: { head?: Buffer | undefined; idleTimeoutMs?: number },
): Relayed | undefined {
  const agentFd = fdOf(agent)
  const upstreamFd = fdOf(upstream)
  if (agentFd === undefined || upstreamFd === undefined) return undefined
  if (!quiet(agent) || !quiet(upstream) || upstream.connecting) return undefined
  const started = performance.now()
  // Read last, right before the relay takes over: nothing can arrive in between, since
  // Node reads sockets only from its event loop and this runs in one turn of it.
  const headOut = concat([options.head, ...buffered(agent)])
  const headIn = concat(buffered(upstream))
  let handle: ReturnType<SocketRelay>
  try {
    handle = relay(agentFd, upstreamFd, { headOut, headIn, idleTimeoutMs: options.idleTimeoutMs })
  } catch {
    // Nothing taken. The bytes read back out of the sockets go back in front.
    if (headIn !== undefined) unread(upstream, headIn)
    const agentRest = headOut?.subarray(options.head?.length ?? 0)
    if (agentRest !== undefined && agentRest.length > 0) agent.unshift(agentRest)
    return undefined
  }
  agent.destroy()
  upstream.destroy()
  const done = handle.done.then((r): SpliceResult => {
    const result: SpliceResult = { bytesOut: r.bytesOut, bytesIn: r.bytesIn, durationMs: performance.now() - started }
    if (r.error !== undefined) result.error = r.error
    return result
  })
  return { abort: () => handle.abort(), done }
}

/** A socket's descriptor (`_handle.fd`, Node's TCPWrap on Linux), when it has one. */
function fdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined
}

/** Open, not closing, and with nothing queued for writing. */
function quiet(socket: Socket): boolean {
  return !socket.destroyed && !socket.writableEnded && socket.writableLength === 0
}

/** What Node has read from `socket` and nobody has consumed yet, in order. */
function buffered(socket: Socket): Buffer[] {
  const reader = bulkReaderOf(socket)
  if (reader !== undefined) return reader.takeHeld()
  const chunks: Buffer[] = []
  // A paused socket keeps what it read in its Readable buffer; read() hands it over.
  for (let i = 0; i < 1024 && socket.readableLength > 0; i++) {
    const chunk = socket.read() as Buffer | null
    if (chunk === null) break
    chunks.push(chunk)
  }
  return chunks
}

function unread(socket: Socket, bytes: Buffer): void {
  const reader = bulkReaderOf(socket)
  if (reader !== undefined) reader.hold(bytes)
  else socket.unshift(bytes)
}

function concat(chunks: (Buffer | undefined)[]): Buffer | undefined {
  const present = chunks.filter((c): c is Buffer => c !== undefined && c.length > 0)
  if (present.length === 0) return undefined
  return present.length === 1 ? present[0] : Buffer.concat(present)
}
