/**
 * The native socket relay (src/native/relay.cc): hand it two connected TCP sockets'
 * descriptors and it moves the bytes between them with splice(2) on a thread of its
 * own, with backpressure and half-close, until both directions have ended.
 *
 * The relay dup()s both descriptors before `startRelay` returns: the caller closes its
 * own copies (destroys its Node sockets) right after, and must not read or write them
 * in between. Bytes the caller already read and still owes a side go in as heads.
 */
import { getSystemErrorName } from 'node:util'
import { loadNative } from './native.js'

export interface RelayOptions {
  /** Written to the upstream before anything the agent sends next. */
  headOut?: Buffer | undefined
  /** Written to the agent before anything the upstream sends next. */
  headIn?: Buffer | undefined
  /** Close both sockets after this long with no bytes moved either way; 0 or unset: never. */
  idleTimeoutMs?: number | undefined
}

export interface RelayOutcome {
  /** Bytes written to the upstream, headOut included. */
  bytesOut: number
  /** Bytes written to the agent, headIn included. */
  bytesIn: number
  /**
   * What ended the relay early, as a Node system error (`code`: ECONNRESET, EPIPE,
   * ECANCELED for {@link RelayHandle.abort}, ...); an idle timeout is `idle for N ms`.
   * Unset when both directions ended with a FIN.
   */
  error?: Error
}

export interface RelayHandle {
  /** Close both sockets now; `done` then reports ECANCELED. */
  abort(): void
  /** Settles once both sockets are closed. Never rejects. */
  readonly done: Promise<RelayOutcome>
}

/** Why the relay could not take the sockets; they are untouched and still the caller's. */
export class RelayStartError extends Error {
  constructor(
    readonly code: string,
    readonly syscall: string,
  ) {
    super(`cannot start the socket relay: ${syscall}: ${code}`)
    this.name = 'RelayStartError'
  }
}

interface Engine {
  handle: unknown
  pending: Map<number, { resolve(outcome: RelayOutcome): void; idleTimeoutMs: number }>
}

let engine: Engine | undefined

function getEngine(): Engine {
  if (engine !== undefined) return engine
  const native = loadNative()
  const pending: Engine['pending'] = new Map()
  const handle = native.relayInit((id, bytesOut, bytesIn, errno, syscall) => {
    const waiter = pending.get(id)
    if (waiter === undefined) return
    pending.delete(id)
    const outcome: RelayOutcome = { bytesOut, bytesIn }
    if (errno !== 0) outcome.error = relayError(errno, syscall ?? 'relay', waiter.idleTimeoutMs)
    waiter.resolve(outcome)
  })
  engine = { handle, pending }
  return engine
}

/**
 * Relay between two connected TCP sockets, given by descriptor.
 * @throws RelayStartError when the descriptors could not be taken (dup failed: EMFILE,
 *   EBADF), in which case nothing changed; KeelError `ERR_NFT_UNAVAILABLE` when the
 *   addon cannot load.
 */
export function startRelay(agentFd: number, upstreamFd: number, options: RelayOptions = {}): RelayHandle {
  const e = getEngine()
  const idleTimeoutMs = options.idleTimeoutMs !== undefined && options.idleTimeoutMs > 0 ? options.idleTimeoutMs : 0
  const r = loadNative().relayStart(e.handle, agentFd, upstreamFd, options.headOut, options.headIn, idleTimeoutMs)
  if (typeof r !== 'number') throw new RelayStartError(getSystemErrorName(-r.errno), r.syscall)
  const done = new Promise<RelayOutcome>((resolve) => e.pending.set(r, { resolve, idleTimeoutMs }))
  const native = loadNative()
  return { abort: () => native.relayAbort(e.handle, r), done }
}

/** Relays running, and empty pipes kept for reuse (for tests and diagnostics). */
export function relayStats(): { active: number; pooledPipes: number } {
  return loadNative().relayStats(getEngine().handle)
}

function relayError(errno: number, syscall: string, idleTimeoutMs: number): Error {
  if (syscall === 'idle') return new Error(`idle for ${idleTimeoutMs} ms`)
  const code = getSystemErrorName(-errno)
  return Object.assign(new Error(`${syscall}: ${code}`), { errno: -errno, code, syscall })
}
