/**
 * Read the first bytes of an accepted socket until a classifier says it has seen enough,
 * within a deadline and a byte cap. Nothing is lost: the bytes read are returned so the
 * caller can replay them upstream, and the socket is left paused with anything read
 * after them still in its buffer.
 */
import type { Socket } from 'node:net'

/** What a classifier says about the bytes so far. `need`: skip re-classifying until this many bytes. */
export type PeekStep<T> = { done: false; need?: number } | { done: true; value: T }

export interface PeekOptions<T> {
  classify(buf: Buffer): PeekStep<T>
  /** Hard cap on bytes buffered while the classifier is not done. */
  maxBytes: number
  /** Deadline for a complete head, in ms (slowloris protection). */
  timeoutMs: number
  /**
   * When set: if no byte arrives within this many ms, stop and report `no-data`
   * (a server-speaks-first protocol such as SMTP or MySQL is waiting for the upstream).
   */
  firstByteMs?: number
  /**
   * `start` (default): the deadline runs from the call. `first-byte`: it runs from the
   * first byte, and the wait before it is unbounded unless `firstByteMs` is set.
   */
  deadlineFrom?: 'start' | 'first-byte'
}

export type PeekResult<T> =
  | { kind: 'complete'; value: T; head: Buffer }
  /** No byte within `firstByteMs`, or the agent half-closed without sending any. */
  | { kind: 'no-data'; ended: boolean }
  /** The agent half-closed in the middle of a head. */
  | { kind: 'ended'; head: Buffer }
  | { kind: 'timeout'; head: Buffer }
  | { kind: 'oversize'; head: Buffer }
  /** The socket failed or closed. */
  | { kind: 'closed'; head: Buffer; error?: Error }

/**
 * Peek at `socket`. Resolves once; never rejects.
 *
 * Precondition: nobody else is consuming `socket` (no `data` listener, not piped).
 * Postcondition: `socket` is paused; the returned head is exactly the bytes consumed.
 */
export function peek<T>(socket: Socket, options: PeekOptions<T>): Promise<PeekResult<T>> {
  return new Promise((resolve) => {
    let buf = Buffer.allocUnsafe(0)
    let length = 0
    let need = 1
    let settled = false
    let deadline: NodeJS.Timeout | undefined
    let firstByteTimer: NodeJS.Timeout | undefined

    const head = (): Buffer => Buffer.from(buf.subarray(0, length))
    const finish = (result: PeekResult<T>): void => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      clearTimeout(firstByteTimer)
      socket.pause()
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.off('close', onClose)
      socket.off('error', onError)
      resolve(result)
    }
    const startDeadline = (): void => {
      deadline = setTimeout(() => finish({ kind: 'timeout', head: head() }), options.timeoutMs)
      deadline.unref?.()
    }
    const append = (chunk: Buffer): void => {
      if (length + chunk.length > buf.length) {
        const grown = Buffer.allocUnsafe(Math.max(length + chunk.length, buf.length * 2, 1024))
        buf.copy(grown, 0, 0, length)
        buf = grown
      }
      chunk.copy(buf, length)
      length += chunk.length
    }
    function onData(chunk: Buffer): void {
      if (settled) return
      if (length === 0) {
        clearTimeout(firstByteTimer)
        if (options.deadlineFrom === 'first-byte') startDeadline()
      }
      append(chunk)
      if (length < need && length < options.maxBytes) return
      const step = options.classify(buf.subarray(0, length))
      if (step.done) return finish({ kind: 'complete', value: step.value, head: head() })
      if (length >= options.maxBytes) return finish({ kind: 'oversize', head: head() })
      need = Math.max(length + 1, step.need ?? 0)
    }
    function onEnd(): void {
      finish(length === 0 ? { kind: 'no-data', ended: true } : { kind: 'ended', head: head() })
    }
    function onClose(): void {
      finish({ kind: 'closed', head: head() })
    }
    function onError(error: Error): void {
      finish({ kind: 'closed', head: head(), error })
    }

    if (socket.destroyed) return finish({ kind: 'closed', head: head() })
    if (socket.readableEnded) return finish({ kind: 'no-data', ended: true })
    socket.on('data', onData)
    socket.on('end', onEnd)
    socket.on('close', onClose)
    socket.on('error', onError)
    if (options.deadlineFrom !== 'first-byte') startDeadline()
    if (options.firstByteMs !== undefined) {
      firstByteTimer = setTimeout(() => {
        if (length === 0) finish({ kind: 'no-data', ended: false })
      }, options.firstByteMs)
      firstByteTimer.unref?.()
    }
    socket.resume()
  })
}
