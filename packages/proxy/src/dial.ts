/**
 * Dial upstream: try vetted addresses in order, one at a time, each with a timeout.
 * Only literal IPs are dialed (no DNS lookup can happen here: keel resolved the name
 * itself and checked every address it will dial).
 */
import net from 'node:net'
import { Reason } from '@keel/core'
import { BulkReader } from './bulk-read.js'

/** How a socket is opened; injected so tests can simulate timeouts. Defaults to `net.connect`. */
export type Connect = (options: net.TcpNetConnectOpts) => net.Socket

export interface DialOptions {
  timeoutMs: number
  /** At most this many addresses are tried. */
  maxAttempts: number
  connect?: Connect
  signal?: AbortSignal
}

export type DialResult =
  | { ok: true; socket: net.Socket; address: string }
  | {
      ok: false
      reason: typeof Reason.UPSTREAM_CONNECT_FAILED | typeof Reason.UPSTREAM_CONNECT_TIMEOUT | typeof Reason.CLIENT_ABORTED
      detail: string
    }

/** The addresses a dial tries: literal IPs only, in order, at most `maxAttempts` (at least one). */
export function dialCandidates(addresses: readonly string[], maxAttempts: number): string[] {
  return addresses.filter((a) => net.isIP(a) !== 0).slice(0, Math.max(1, maxAttempts))
}

/**
 * Connect to the first address that answers. The result's reason is
 * `upstream_connect_timeout` when every attempt timed out, `upstream_connect_failed`
 * otherwise (refused, reset, unreachable). Never rejects.
 */
export async function dialFirst(addresses: readonly string[], port: number, options: DialOptions): Promise<DialResult> {
  const candidates = dialCandidates(addresses, options.maxAttempts)
  if (candidates.length === 0) {
    return { ok: false, reason: Reason.UPSTREAM_CONNECT_FAILED, detail: 'no address to dial' }
  }
  const failures: string[] = []
  let allTimedOut = true
  for (const address of candidates) {
    if (options.signal?.aborted === true) return { ok: false, reason: Reason.CLIENT_ABORTED, detail: 'aborted while dialing' }
    const r = await dialOne(address, port, options)
    if (r.ok) return { ok: true, socket: r.socket, address }
    if (r.aborted) return { ok: false, reason: Reason.CLIENT_ABORTED, detail: 'aborted while dialing' }
    if (!r.timedOut) allTimedOut = false
    failures.push(`${fmt(address, port)} ${r.error}`)
  }
  return {
    ok: false,
    reason: allTimedOut ? Reason.UPSTREAM_CONNECT_TIMEOUT : Reason.UPSTREAM_CONNECT_FAILED,
    detail: failures.join('; '),
  }
}

type OneResult = { ok: true; socket: net.Socket } | { ok: false; timedOut: boolean; aborted: boolean; error: string }

function dialOne(address: string, port: number, options: DialOptions): Promise<OneResult> {
  return new Promise((resolve) => {
    let socket: net.Socket | undefined
    let settled = false
    const connect = options.connect ?? net.connect
    const finish = (r: OneResult): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      socket?.off('connect', onConnect)
      socket?.off('error', onError)
      if (!r.ok) socket?.destroy()
      // The caller attaches its own handlers; until then an error must not go unhandled
      // (the socket still closes, which the caller sees).
      socket?.on('error', ignore)
      resolve(r)
    }
    const onConnect = (): void => {
      if (socket !== undefined) finish({ ok: true, socket })
    }
    const onError = (e: Error): void =>
      finish({ ok: false, timedOut: false, aborted: false, error: (e as NodeJS.ErrnoException).code ?? e.message })
    const onAbort = (): void => finish({ ok: false, timedOut: false, aborted: true, error: 'aborted' })
    const timer = setTimeout(
      () => finish({ ok: false, timedOut: true, aborted: false, error: `no answer in ${options.timeoutMs} ms` }),
      options.timeoutMs,
    )
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      // allowHalfOpen: a FIN from the upstream must not end our write side (see splice.ts).
      // With the default connect, the socket reads in large chunks (bulk-read.ts); an
      // injected connect (tests) gets plain options and gives a 'data' socket.
      const reader = options.connect === undefined ? new BulkReader() : undefined
      socket = connect({ host: address, port, allowHalfOpen: true, noDelay: true, ...(reader ? { onread: reader.onread } : {}) })
      reader?.bind(socket)
    } catch (e) {
      finish({ ok: false, timedOut: false, aborted: false, error: e instanceof Error ? e.message : String(e) })
      return
    }
    socket.once('connect', onConnect)
    socket.on('error', onError)
  })
}

function ignore(): void {}

function fmt(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}
