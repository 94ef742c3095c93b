/**
 * The native socket relay (src/native/relay.cc): give it an accepted socket's
 * descriptor and the upstream addresses, and a thread of its own dials the upstream,
 * writes the head, and moves the bytes both ways, with backpressure and half-close,
 * until both directions have ended.
 *
 * The sequence, for the caller:
 * 1. `dialAndRelay(fd, target, { headOut })`. The agent's socket must be paused (Node
 *    may still read from it; the relay will not, yet).
 * 2. `connected` settles. On `ok: false` the relay has let go of the descriptor and
 *    the socket is the caller's as before (answer the agent, close it). On `ok: true`
 *    the head is on its way upstream and the upstream's answer is reaching the agent.
 * 3. The caller takes whatever Node read from the socket after the head, destroys the
 *    Node socket (closing only its own descriptor), and calls `commit(bytes)`. From
 *    then on the relay alone reads the agent.
 * 4. `done` settles when both sockets are closed.
 */
import { constants } from 'node:os'
import { getSystemErrorName } from 'node:util'
import { systemError } from './errors.js'
import { loadNative, type NativeRelayEvent } from './native.js'

export interface DialTarget {
  /** Literal IPs, tried in order, one at a time. */
  addresses: readonly string[]
  port: number
  /** Per address. */
  timeoutMs: number
}

export interface RelayOptions {
  /** Written upstream as soon as it connects, before anything else from the agent. */
  headOut?: Buffer | undefined
  /** Close both sockets after this long with no bytes moved either way; 0 or unset: never. */
  idleTimeoutMs?: number | undefined
}

export type DialOutcome =
  | { ok: true; address: string }
  /**
   * `timeout`: every address timed out; `failed`: at least one refused, reset or was
   * unreachable, or the relay itself failed (the detail says which); `aborted`:
   * {@link RelayHandle.abort} came first.
   * `detail` lists each attempt (`127.0.0.8:443 ECONNREFUSED; ...`).
   */
  | { ok: false; reason: 'timeout' | 'failed' | 'aborted'; detail: string }

export interface RelayOutcome {
  /** Bytes written upstream, the head included. */
  bytesOut: number
  /** Bytes written to the agent. */
  bytesIn: number
  /**
   * What ended the relay early, as a Node system error (`code`: ECONNRESET, EPIPE,
   * ECANCELED for an abort, ...); an idle timeout is `idle for N ms`. Unset when both
   * directions ended with a FIN.
   */
  error?: Error
}

export interface RelayHandle {
  readonly connected: Promise<DialOutcome>
  /** The agent's socket is the relay's alone now; `bytes` go upstream first. Once. */
  commit(bytes?: Buffer): void
  /** Close everything now; `done` then reports ECANCELED (or `connected` an abort). */
  abort(): void
  /** Settles once both sockets are closed (after a failed dial: at once, no bytes). Never rejects. */
  readonly done: Promise<RelayOutcome>
}

/** Why the relay could not take the socket; it is untouched and still the caller's. */
export class RelayStartError extends Error {
  constructor(
    readonly code: string,
    readonly syscall: string,
  ) {
    super(`cannot start the socket relay: ${syscall}: ${code}`)
    this.name = 'RelayStartError'
  }
}

const ECANCELED = constants.errno.ECANCELED

interface Waiter {
  connected(outcome: DialOutcome): void
  done(outcome: RelayOutcome): void
  idleTimeoutMs: number
}

let engine: { handle: unknown; waiters: Map<number, Waiter> } | undefined

function getEngine(): NonNullable<typeof engine> {
  if (engine !== undefined) return engine
  const waiters = new Map<number, Waiter>()
  const handle = loadNative().relayInit((id, event) => {
    const w = waiters.get(id)
    if (w !== undefined) deliver(id, w, event, waiters)
  })
  engine = { handle, waiters }
  return engine
}

function deliver(id: number, w: Waiter, e: NativeRelayEvent, waiters: Map<number, Waiter>): void {
  switch (e.kind) {
    case 'connected':
      w.connected({ ok: true, address: e.text ?? '' })
      return
    case 'dialFailed': {
      waiters.delete(id)
      // ECANCELED: relayAbort. Any other errno is the relay's own failure (epoll_ctl, ...): a failed dial.
      const reason = e.errno === ECANCELED ? 'aborted' : e.timedOut === true ? 'timeout' : 'failed'
      w.connected({ ok: false, reason, detail: e.text ?? 'the dial failed' })
      w.done({ bytesOut: 0, bytesIn: 0, ...(e.errno === undefined ? {} : { error: systemError(e.errno, e.syscall ?? 'relay') }) })
      return
    }
    case 'done': {
      waiters.delete(id)
      const outcome: RelayOutcome = { bytesOut: e.bytesOut ?? 0, bytesIn: e.bytesIn ?? 0 }
      if (e.errno !== undefined) {
        outcome.error = e.syscall === 'idle' ? new Error(`idle for ${w.idleTimeoutMs} ms`) : systemError(e.errno, e.syscall ?? 'relay')
      }
      w.done(outcome)
      return
    }
  }
}

/**
 * Dial `target` from a thread of the addon and relay between it and the agent's socket
 * (by descriptor); see the sequence at the top of this module.
 * @throws RelayStartError when the descriptor could not be taken (EBADF, EMFILE): the
 *   socket is untouched; TypeError for an address that is not a literal IP;
 *   KeelError `ERR_NFT_UNAVAILABLE` when the addon cannot load.
 */
export function dialAndRelay(agentFd: number, target: DialTarget, options: RelayOptions = {}): RelayHandle {
  const e = getEngine()
  const native = loadNative()
  const idleTimeoutMs = options.idleTimeoutMs !== undefined && options.idleTimeoutMs > 0 ? options.idleTimeoutMs : 0
  const id = native.relayStart(e.handle, agentFd, [...target.addresses], target.port, target.timeoutMs, options.headOut, idleTimeoutMs)
  if (typeof id !== 'number') throw new RelayStartError(getSystemErrorName(-id.errno), id.syscall)
  let resolveConnected!: (o: DialOutcome) => void
  let resolveDone!: (o: RelayOutcome) => void
  const connected = new Promise<DialOutcome>((resolve) => (resolveConnected = resolve))
  const done = new Promise<RelayOutcome>((resolve) => (resolveDone = resolve))
  e.waiters.set(id, { connected: resolveConnected, done: resolveDone, idleTimeoutMs })
  let committed = false
  return {
    connected,
    commit(bytes?: Buffer) {
      if (committed) return
      committed = true
      native.relayCommit(e.handle, id, bytes)
    },
    abort: () => native.relayAbort(e.handle, id),
    done,
  }
}

/** Relays running (for tests and diagnostics). */
export function relayStats(): { active: number } {
  return loadNative().relayStats(getEngine().handle)
}
