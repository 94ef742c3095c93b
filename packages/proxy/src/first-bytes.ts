/**
 * Classify the first bytes an agent sends on a connection: a TLS ClientHello, an HTTP
 * request head, something else (opaque), or a TLS/HTTP message keel will not accept.
 * Pure and total, like the two parsers it combines.
 */
import { parseClientHello, type ClientHello } from './tls/client-hello.js'
import { parseRequestHead, type RequestHead } from './http/request-head.js'

export type FirstBytes =
  | { kind: 'incomplete'; need?: number }
  | { kind: 'tls'; hello: ClientHello }
  | { kind: 'http'; request: RequestHead }
  /** Neither TLS nor HTTP (SSH, Postgres, Redis RESP, ...). */
  | { kind: 'opaque' }
  /** TLS or HTTP that keel refuses to pass. `status` is the HTTP status to answer with. */
  | { kind: 'malformed'; protocol: 'tls' | 'http'; detail: string; status?: number }

export interface FirstBytesOptions {
  maxHelloBytes?: number
  maxHeadBytes?: number
}

/** Classify `buf`, the bytes read so far. */
export function classifyFirstBytes(buf: Buffer, options: FirstBytesOptions = {}): FirstBytes {
  const tls = parseClientHello(buf, options.maxHelloBytes === undefined ? {} : { maxHelloBytes: options.maxHelloBytes })
  switch (tls.kind) {
    case 'incomplete':
      return tls.need === undefined ? { kind: 'incomplete' } : { kind: 'incomplete', need: tls.need }
    case 'malformed':
      return { kind: 'malformed', protocol: 'tls', detail: tls.detail }
    case 'client-hello':
      return { kind: 'tls', hello: tls }
    case 'not-tls':
      break
    default: {
      const _exhaustive: never = tls
      return _exhaustive
    }
  }
  const http = parseRequestHead(buf, options.maxHeadBytes === undefined ? {} : { maxHeadBytes: options.maxHeadBytes })
  switch (http.kind) {
    case 'incomplete':
      return { kind: 'incomplete' }
    case 'not-http':
      return { kind: 'opaque' }
    case 'malformed':
    case 'oversize':
      return { kind: 'malformed', protocol: 'http', detail: http.detail, status: http.status }
    case 'request':
      return { kind: 'http', request: http }
    default: {
      const _exhaustive: never = http
      return _exhaustive
    }
  }
}
