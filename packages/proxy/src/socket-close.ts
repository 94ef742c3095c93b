/** Ways to end an agent's socket after a deny. */
import type { Socket } from 'node:net'

/** Resolves when `socket` has closed (at once if it already has). */
export function whenClosed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed) resolve()
    else socket.once('close', () => resolve())
  })
}

/**
 * Abort with a TCP RST, so the client fails at once ("connection reset") instead of
 * seeing an empty reply. Falls back to a plain destroy where a reset is not possible.
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return
  try {
    socket.resetAndDestroy()
  } catch {
    socket.destroy()
  }
}

/** Cap on bytes read and thrown away while lingering. */
const MAX_LINGER_DISCARD = 256 * 1024

/**
 * Send `data`, close our write side, then keep reading (and discarding) for up to
 * `lingerMs` before destroying. Closing with unread bytes in the kernel's receive
 * buffer makes the kernel send RST, and an RST can make the client drop the response
 * before reading it; lingering lets the 403 or the TLS alert arrive (as Apache's
 * lingering close does).
 */
export function lingeringClose(socket: Socket, data: Buffer, lingerMs: number): Promise<void> {
  const closed = whenClosed(socket)
  if (socket.destroyed) return closed
  let discarded = 0
  const timer = setTimeout(() => socket.destroy(), lingerMs)
  timer.unref?.()
  socket.once('close', () => clearTimeout(timer))
  socket.on('data', (chunk: Buffer) => {
    discarded += chunk.length
    if (discarded > MAX_LINGER_DISCARD) socket.destroy()
  })
  // The client closed its side: we are done once our response is flushed.
  socket.once('end', () => {
    if (socket.writableFinished) socket.destroy()
    else socket.once('finish', () => socket.destroy())
  })
  socket.end(data)
  socket.resume()
  return closed
}
