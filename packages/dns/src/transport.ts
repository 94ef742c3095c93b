/**
 * Client-side DNS transports: one query out over UDP or TCP (RFC 1035 §4.2, RFC 7766),
 * one accepted answer back, within a deadline. Used by the upstream resolver and by tests.
 *
 * UDP sockets are `connect()`ed, so the kernel drops datagrams from any other source
 * and an ICMP port-unreachable surfaces at once as ECONNREFUSED instead of a timeout.
 * Each exchange uses a fresh socket, hence a fresh random source port (RFC 5452 §4).
 */
import { randomInt } from 'node:crypto'
import dgram from 'node:dgram'
import net from 'node:net'
import {
  RRClass,
  RRType,
  asciiLower,
  encodeMessage,
  parseMessage,
  type DnsMessage,
  type EdnsInput,
} from './wire.js'

/** Where to send DNS queries. IPv6 hosts are written without brackets. */
export interface DnsEndpoint {
  host: string
  port: number
}

export type DnsTransportErrorCode = 'ERR_DNS_TIMEOUT' | 'ERR_DNS_NETWORK' | 'ERR_DNS_ABORTED'

export class DnsTransportError extends Error {
  override readonly name = 'DnsTransportError'
  constructor(
    readonly code: DnsTransportErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

export interface ExchangeOptions {
  timeoutMs: number
  signal?: AbortSignal
}

/** Runs `body` with a deadline and an abort signal; `cleanup` always runs once. */
function withDeadline<T>(
  opts: ExchangeOptions,
  what: string,
  body: (settle: (err: Error | undefined, value?: T) => void) => () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new DnsTransportError('ERR_DNS_ABORTED', `${what}: aborted`))
      return
    }
    let done = false
    let cleanup: () => void = () => {}
    const settle = (err: Error | undefined, value?: T): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      cleanup()
      if (err) reject(err)
      else resolve(value as T)
    }
    const onAbort = (): void => settle(new DnsTransportError('ERR_DNS_ABORTED', `${what}: aborted`))
    const timer = setTimeout(
      () => settle(new DnsTransportError('ERR_DNS_TIMEOUT', `${what}: no answer within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    )
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    cleanup = body(settle)
    if (done) cleanup()
  })
}

/**
 * Sends `query` over UDP and resolves with `accept(datagram)` for the first datagram
 * it accepts (`undefined` = ignore it and keep waiting, e.g. wrong ID).
 */
export function udpExchange<T>(
  server: DnsEndpoint,
  query: Uint8Array,
  accept: (datagram: Buffer) => T | undefined,
  opts: ExchangeOptions,
): Promise<T> {
  const what = `udp ${server.host}:${server.port}`
  return withDeadline<T>(opts, what, (settle) => {
    const socket = dgram.createSocket(net.isIPv6(server.host.split('%')[0] ?? '') ? 'udp6' : 'udp4')
    socket.on('error', (err) => settle(new DnsTransportError('ERR_DNS_NETWORK', `${what}: ${err.message}`, { cause: err })))
    socket.on('message', (msg) => {
      let value: T | undefined
      try {
        value = accept(msg)
      } catch {
        value = undefined // malformed answer: ignore it, as if it never came
      }
      if (value !== undefined) settle(undefined, value)
    })
    socket.connect(server.port, server.host, () => {
      socket.send(query, (err) => {
        if (err) settle(new DnsTransportError('ERR_DNS_NETWORK', `${what}: ${err.message}`, { cause: err }))
      })
    })
    return () => {
      try {
        socket.close()
      } catch {
        // already closed
      }
    }
  })
}

/**
 * Sends `query` over TCP with the 2-byte length prefix and resolves with
 * `accept(message)` for the first framed message it accepts.
 */
export function tcpExchange<T>(
  server: DnsEndpoint,
  query: Uint8Array,
  accept: (message: Buffer) => T | undefined,
  opts: ExchangeOptions,
): Promise<T> {
  const what = `tcp ${server.host}:${server.port}`
  return withDeadline<T>(opts, what, (settle) => {
    const socket = net.connect({ host: server.host, port: server.port })
    let pending: Buffer = Buffer.alloc(0)
    socket.on('error', (err) => settle(new DnsTransportError('ERR_DNS_NETWORK', `${what}: ${err.message}`, { cause: err })))
    socket.on('close', () => settle(new DnsTransportError('ERR_DNS_NETWORK', `${what}: connection closed before an answer`)))
    socket.on('connect', () => {
      const frame = Buffer.allocUnsafe(2 + query.length)
      frame.writeUInt16BE(query.length, 0)
      frame.set(query, 2)
      socket.write(frame)
    })
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      // Each iteration consumes one frame, so this loop is bounded by the bytes received.
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0)
        if (pending.length < 2 + len) return
        const message = pending.subarray(2, 2 + len)
        pending = pending.subarray(2 + len)
        let value: T | undefined
        try {
          value = accept(message)
        } catch {
          value = undefined
        }
        if (value !== undefined) {
          settle(undefined, value)
          return
        }
      }
    })
    return () => socket.destroy()
  })
}

export interface DnsQueryOptions {
  transport?: 'udp' | 'tcp'
  timeoutMs?: number
  /** Send an OPT record (EDNS(0)). Default true. */
  edns?: boolean | EdnsInput
  /** Recursion desired. Default true. */
  rd?: boolean
  signal?: AbortSignal
}

/** Builds a standard query with a random ID (RFC 5452 §3). */
export function buildQuery(
  name: string,
  type: number,
  options: { edns?: boolean | EdnsInput; rd?: boolean; id?: number } = {},
): { id: number; wire: Buffer } {
  const id = options.id ?? randomInt(0x10000)
  const edns = options.edns ?? true
  const wire = encodeMessage({
    header: { id, rd: options.rd ?? true },
    questions: [{ name, type, class: RRClass.IN }],
    ...(edns ? { edns: edns === true ? { udpPayloadSize: 1232 } : edns } : {}),
  })
  return { id, wire }
}

/** True when `reply` answers `query` (RFC 5452 §9.1: ID, QR and the question must match). */
export function isReplyTo(reply: DnsMessage, id: number, name: string, type: number): boolean {
  const q = reply.questions[0]
  return (
    reply.header.qr &&
    reply.header.id === id &&
    reply.questions.length === 1 &&
    q !== undefined &&
    q.type === type &&
    q.class === RRClass.IN &&
    asciiLower(q.name).replace(/\.$/, '') === asciiLower(name).replace(/\.$/, '')
  )
}

/**
 * One DNS query, one parsed reply: a small stub client for tests, health checks and
 * the upstream resolver. Does not follow TC; callers choose the transport.
 *
 * @example
 * const reply = await dnsQuery({ host: '127.0.0.1', port: 5353 }, 'example.test', RRType.A)
 */
export async function dnsQuery(
  server: DnsEndpoint,
  name: string,
  type: number = RRType.A,
  options: DnsQueryOptions = {},
): Promise<DnsMessage> {
  const { id, wire } = buildQuery(name, type, options)
  const accept = (buf: Buffer): DnsMessage | undefined => {
    const msg = parseMessage(buf, { strict: false, maxRecords: 4096 })
    return isReplyTo(msg, id, name, type) ? msg : undefined
  }
  const opts: ExchangeOptions = {
    timeoutMs: options.timeoutMs ?? 2000,
    ...(options.signal ? { signal: options.signal } : {}),
  }
  return options.transport === 'tcp' ? tcpExchange(server, wire, accept, opts) : udpExchange(server, wire, accept, opts)
}
