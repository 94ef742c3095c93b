/**
 * Dial through the native relay (a thread of @keel/nftables-napi) and hand it
 * the agent's socket, instead of dialing with `net.connect` and copying bytes through
 * the JS event loop.
 *
 * The relay dials the vetted addresses itself and, the moment one connects, writes the
 * head (the ClientHello or request head the peek read) and lets the upstream's answer
 * through to the agent: no round trip through JS sits between the connect and the first
 * bytes. JS then takes what Node read from the agent after the head, destroys its Node
 * socket (closing only its own descriptor: the relay holds a dup, and no shutdown(2) is
 * involved) and commits; only from then on does the relay read the agent, so the
 * stream never has two readers. If no address connects, the socket was never touched
 * and the proxy answers the agent as for any failed dial.
 *
 * Not handed over (the caller dials in JS and uses splice.ts): a socket without a
 * descriptor (a test double), one already closing or with bytes queued for writing, or
 * when the relay refuses (e.g. EMFILE).
 */
import type { Socket } from 'node:net'
import { Reason } from '@keel/core'
import { dialCandidates, type DialResult } from './dial.js'
import type { SpliceResult } from './splice.js'

/** Where the relay dials: vetted literal IPs, in order. */
export interface RelayTarget {
  addresses: readonly string[]
  port: number
  /** Per address. */
  timeoutMs: number
}

/**
 * Dials `target` and relays between it and the agent's socket, given by descriptor
 * (`dialAndRelay` of @keel/nftables-napi). Throws, taking nothing, when it cannot.
 */
export type SocketRelay = (
  agentFd: number,
  target: RelayTarget,
  options: { headOut?: Buffer | undefined; idleTimeoutMs?: number | undefined },
) => {
  readonly connected: Promise<{ ok: true; address: string } | { ok: false; reason: 'timeout' | 'failed' | 'aborted'; detail: string }>
  commit(bytes?: Buffer): void
  abort(): void
  readonly done: Promise<{ bytesOut: number; bytesIn: number; error?: Error }>
}

/** A dial through the relay: connected and relaying, or failed as a JS dial would. */
export type RelayedDial = { ok: true; address: string; relayed: Promise<SpliceResult> } | Extract<DialResult, { ok: false }>

export interface RelayDial {
  abort(): void
  readonly result: Promise<RelayedDial>
}

/**
 * Dial `target` through `relay` and give it `agent` once connected, `head` going
 * upstream first. Returns undefined, with the socket untouched, when it cannot be
 * handed over.
 */
export function dialThroughRelay(
  agent: Socket,
  relay: SocketRelay,
  target: RelayTarget & { maxAttempts: number },
  options: { head?: Buffer | undefined; idleTimeoutMs?: number | undefined },
): RelayDial | undefined {
  const fd = fdOf(agent)
  if (fd === undefined || agent.destroyed || agent.writableEnded || agent.writableLength > 0) return undefined
  const addresses = dialCandidates(target.addresses, target.maxAttempts)
  let handle: ReturnType<SocketRelay>
  try {
    handle = relay(fd, { addresses, port: target.port, timeoutMs: target.timeoutMs }, { headOut: options.head, idleTimeoutMs: options.idleTimeoutMs })
  } catch {
    return undefined
  }
  const started = performance.now()
  const result = handle.connected.then((c): RelayedDial => {
    if (!c.ok) {
      const reason =
        c.reason === 'aborted'
          ? Reason.CLIENT_ABORTED
          : c.reason === 'timeout'
            ? Reason.UPSTREAM_CONNECT_TIMEOUT
            : Reason.UPSTREAM_CONNECT_FAILED
      return { ok: false, reason, detail: c.reason === 'aborted' ? 'aborted while dialing' : c.detail }
    }
    // One turn of the event loop: nothing can be read from the agent between these lines.
    const rest = buffered(agent)
    agent.destroy()
    handle.commit(rest)
    const relayed = handle.done.then((r): SpliceResult => {
      const out: SpliceResult = { bytesOut: r.bytesOut, bytesIn: r.bytesIn, durationMs: performance.now() - started }
      if (r.error !== undefined) out.error = r.error
      return out
    })
    return { ok: true, address: c.address, relayed }
  })
  return { abort: () => handle.abort(), result }
}

/** A socket's descriptor (`_handle.fd`, Node's TCPWrap on Linux), when it has one. */
function fdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined
}

/** What Node has read from a paused socket and nobody has consumed yet, in order. */
function buffered(socket: Socket): Buffer | undefined {
  const chunks: Buffer[] = []
  for (let i = 0; i < 1024 && socket.readableLength > 0; i++) {
    const chunk = socket.read() as Buffer | null
    if (chunk === null) break
    chunks.push(chunk)
  }
  if (chunks.length === 0) return undefined
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
}
