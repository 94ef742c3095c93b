/**
 * Upstream sockets read into buffers of their own (`net.connect`'s `onread`), up to
 * 256 KiB per read, instead of Node's 64 KiB `'data'` chunks, and reuse them: a download
 * through the splice then costs a quarter of the read calls, JS callbacks and writes, and
 * no allocation (and so no garbage collection) per chunk. On a 2-core VM, where the
 * agent, the server and keel share the CPUs, that is keel's CPU per downloaded byte
 * (bench/sandbox): a fresh 64 KiB buffer per read kept V8's garbage collector at ~20% of
 * keel's CPU during a download.
 *
 * A chunk is a view of the reader's buffer. Once the sink has taken it, the buffer is
 * read into again only if `released()` says the chunk is no longer referenced (the
 * destination wrote it to the kernel synchronously); otherwise the next read gets a new
 * buffer, and the old one belongs to the queued write.
 *
 * Memory: an idle socket holds one 16 KiB buffer. A read that fills its buffer (bulk
 * data is flowing) makes the next buffer 256 KiB; a read that does not brings it back
 * to 16 KiB.
 *
 * `onread` replaces `'data'` events, so whatever arrives before the splice takes the
 * socket over (a server-first greeting) is held here (copied), and reading stops until
 * then. Pause/resume work as on any socket: Node restarts reading on `resume()` for
 * `onread` sockets (lib/net.js).
 */
import type { OnReadOpts, Socket } from 'node:net'

/** Size of a read while bulk data is flowing. */
export const BULK_READ_BYTES = 256 * 1024
/** Size of a read otherwise (what an idle socket holds). */
export const IDLE_READ_BYTES = 16 * 1024

/** Takes a chunk; returns false when the destination is full (the source pauses until resumed). */
export type ChunkSink = (chunk: Buffer) => boolean

const READER = Symbol('keel.bulkReader')

export class BulkReader {
  #sink: ChunkSink | undefined
  #released: (() => boolean) | undefined
  #socket: Socket | undefined
  #pending: Buffer[] = []
  #buf: Buffer | undefined
  #nextSize = IDLE_READ_BYTES

  /** Pass as `net.connect({ ..., onread })`, then {@link bind} the returned socket. */
  readonly onread: OnReadOpts = {
    buffer: () => {
      if (this.#buf === undefined || this.#buf.length !== this.#nextSize) this.#buf = Buffer.allocUnsafeSlow(this.#nextSize)
      return this.#buf
    },
    callback: (nread: number, buf: Uint8Array): boolean => {
      this.#nextSize = nread === buf.length ? BULK_READ_BYTES : IDLE_READ_BYTES
      const view = Buffer.from(buf.buffer, buf.byteOffset, nread)
      if (this.#sink === undefined) {
        this.#pending.push(Buffer.from(view)) // a copy: the buffer is read into again
        return false // nobody takes bytes yet: stop reading (resume() starts again)
      }
      const more = this.#sink(view)
      // Still referenced by a queued write: the next read must not overwrite it.
      if (this.#released?.() !== true) this.#buf = undefined
      // The 'data' path's src.pause() on a full destination, for this path.
      if (!more) this.#socket?.pause()
      return more
    },
  }

  bind(socket: Socket): void {
    this.#socket = socket
    ;(socket as Socket & { [READER]?: BulkReader })[READER] = this
  }

  /**
   * Hand every chunk to `sink` from now on: first what arrived before (in order), then
   * new reads. `released()`, asked right after the sink took a chunk, says whether the
   * chunk is no longer referenced (so its buffer can be read into again); without it,
   * every read gets a new buffer. Returns false when the destination is full after the
   * held chunks (the caller waits for its 'drain' before resuming the socket).
   */
  take(sink: ChunkSink, released?: () => boolean): boolean {
    this.#sink = sink
    this.#released = released
    let more = true
    for (const chunk of this.#pending.splice(0)) more = sink(chunk) && more
    return more
  }
}

/** The bulk reader of a socket opened with one, or undefined (a `'data'` socket). */
export function bulkReaderOf(socket: Socket): BulkReader | undefined {
  return (socket as Socket & { [READER]?: BulkReader })[READER]
}
