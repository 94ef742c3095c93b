/**
 * What a denied agent sees: an HTTP response that says what was denied, why and how to
 * allow it, or a TLS fatal alert. Pure: builds bytes, touches no socket.
 *
 * The reason code in the body and in `X-Keel-Reason` is the same stable string that
 * goes to logs, spans, the exit report and the audit log.
 */
import { Reason, type Decision } from '@keel/core'

export interface DenyContext {
  /** Agent name. */
  agent: string
  /** The name the agent resolved, or the literal address it dialed. */
  host: string
  /** True when `host` is a literal IP address (CIDR rules apply), false for a name. */
  isAddress: boolean
  port: number
  reason: Reason
  detail?: string
  /** The policy decision, when one was made (route, deny policy, denyResponse). */
  decision?: Decision
  /** Status to use instead of the reason's default (e.g. 431 for an oversize head). */
  status?: number
}

/** TLS alert descriptions (RFC 8446 §6). */
export const TLS_ALERT = {
  HANDSHAKE_FAILURE: 40,
  ACCESS_DENIED: 49,
  DECODE_ERROR: 50,
  INTERNAL_ERROR: 80,
  UNRECOGNIZED_NAME: 112,
} as const

/**
 * Which alert a TLS client gets for a deny. `unrecognized_name` for SNI problems (the
 * name is what keel refuses), `decode_error` for a hello keel could not read,
 * `internal_error` when the upstream could not be reached, `access_denied` otherwise.
 */
export function tlsAlertFor(reason: Reason): number {
  switch (reason) {
    case Reason.SNI_MISMATCH:
    case Reason.SNI_MISSING:
      return TLS_ALERT.UNRECOGNIZED_NAME
    case Reason.MALFORMED_REQUEST:
      return TLS_ALERT.DECODE_ERROR
    case Reason.UPSTREAM_CONNECT_FAILED:
    case Reason.UPSTREAM_CONNECT_TIMEOUT:
    case Reason.UPSTREAM_DNS_FAILED:
    case Reason.INTERNAL_ERROR:
    case Reason.DISPATCHER_UNAVAILABLE:
      return TLS_ALERT.INTERNAL_ERROR
    default:
      return TLS_ALERT.ACCESS_DENIED
  }
}

/**
 * A fatal TLS alert record. Sent before any ServerHello, so the record version is the
 * TLS 1.2 value every client accepts there (RFC 8446 §5.1 legacy_record_version).
 */
export function tlsAlert(description: number): Buffer {
  return Buffer.from([21, 3, 3, 0, 2, 2, description & 0xff])
}

/** The HTTP status for a deny: the deny policy's, an explicit one, or the reason's default. */
export function denyStatus(ctx: DenyContext): number {
  if (ctx.status !== undefined) return ctx.status
  const fromPolicy = ctx.decision?.denyResponse?.statusCode
  if (fromPolicy !== undefined && Number.isInteger(fromPolicy) && fromPolicy >= 400 && fromPolicy <= 599) return fromPolicy
  switch (ctx.reason) {
    case Reason.UPSTREAM_CONNECT_FAILED:
    case Reason.UPSTREAM_DNS_FAILED:
      return 502
    case Reason.UPSTREAM_CONNECT_TIMEOUT:
      return 504
    case Reason.CONNECTION_LIMIT:
      return 503
    case Reason.INTERNAL_ERROR:
    case Reason.DISPATCHER_UNAVAILABLE:
      return 500
    case Reason.MALFORMED_REQUEST:
      return 400
    default:
      return 403
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  414: 'URI Too Long',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  451: 'Unavailable For Legal Reasons',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
}

/** A complete HTTP/1.1 response (head and body) for a deny, with `Connection: close`. */
export function httpDenyResponse(ctx: DenyContext): Buffer {
  const status = denyStatus(ctx)
  const body = denyBody(ctx)
  const head =
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\n` +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n' +
    'Cache-Control: no-store\r\n' +
    `X-Keel-Reason: ${ctx.reason}\r\n` +
    '\r\n'
  return Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(body, 'utf8')])
}

/** The plain-text body: what was denied, why, and how to allow it. */
export function denyBody(ctx: DenyContext): string {
  const d = ctx.decision
  const lines = [
    'keel denied this connection.',
    '',
    `  agent:   ${clean(ctx.agent)}`,
    `  to:      ${clean(hostPort(ctx.host, ctx.port))} (TCP)`,
    `  reason:  ${ctx.reason}`,
  ]
  if (ctx.detail !== undefined) lines.push(`  detail:  ${clean(ctx.detail)}`)
  if (d?.route !== undefined) lines.push(`  route:   ${clean(d.route)}${d.rule === undefined ? '' : ` (${clean(d.rule)})`}`)
  if (d?.denyPolicy !== undefined) lines.push(`  deny policy: ${clean(d.denyPolicy)}`)
  if (d?.denyResponse !== undefined) lines.push(`  message: ${clean(d.denyResponse.message)}`)
  lines.push('', 'How to allow it:', ...howToAllow(ctx).map((l) => `  ${l}`), '')
  lines.push('Check a destination against the policy with `keel policy explain`.', '')
  return lines.join('\n')
}

/** Advice for one deny, as lines of text. */
export function howToAllow(ctx: DenyContext): string[] {
  const host = clean(ctx.host)
  const d = ctx.decision
  switch (ctx.reason) {
    case Reason.POLICY_DEFAULT_DENY:
      return [
        `No route lets agent "${clean(ctx.agent)}" reach ${clean(hostPort(ctx.host, ctx.port))}. Add one to the policy:`,
        '  routes:',
        `    - name: allow-${slug(ctx.host)}`,
        '      rules:',
        '        - matches:',
        ctx.isAddress
          ? `            - destinationCIDRs: ["${host}${host.includes(':') ? '/128' : '/32'}"]`
          : `            - destinationHostnames: ["${host}"]`,
        `              ports: [{ port: ${ctx.port} }]`,
      ]
    case Reason.DENY_POLICY:
      return [
        `The deny policy "${clean(d?.denyPolicy ?? '?')}" targets route "${clean(d?.route ?? '?')}".`,
        'Remove that deny policy or narrow its targetRef (a deny policy beats any allow).',
      ]
    case Reason.EXCEPTION_EXPIRED:
      return [`Route "${clean(d?.route ?? '?')}" is an exception whose "expires" has passed. Renew it with a later date (its owner decides).`]
    case Reason.SNI_MISMATCH:
      return [
        `The TLS server name (SNI) must be ${host}, the name the agent looked up for this address.`,
        'To reach another host, connect to it by its own name (so keel\'s DNS sees it) and allow that name with a route.',
      ]
    case Reason.SNI_MISSING:
      return [`Send a TLS server name (SNI); keel must see that the connection is for ${host}.`]
    case Reason.ECH_UNSUPPORTED:
      return ['Turn off Encrypted ClientHello (ECH) in the client: keel must see the real server name.']
    case Reason.HOST_MISMATCH:
    case Reason.HOST_MISSING:
      return [
        `Send a Host header equal to ${host}, the name the agent looked up for this address.`,
        'To reach another host, look it up by its own name and allow that name with a route.',
      ]
    case Reason.HTTP_CONNECT_NOT_ALLOWED:
      return [
        'keel is a transparent proxy: do not use it, or any allowed host, as an HTTP proxy.',
        'Unset HTTP_PROXY / HTTPS_PROXY and connect directly; keel checks every destination itself.',
      ]
    case Reason.PROTOCOL_UNRECOGNIZED:
      return ['keel could not recognize the protocol (neither TLS nor HTTP) to a hostname destination, and this proxy denies those.']
    case Reason.MALFORMED_REQUEST:
      return ['Send a well-formed HTTP/1.1 request (RFC 9112) or a TLS ClientHello with a server name.']
    case Reason.PEEK_TIMEOUT:
      return ['Send the request (or TLS ClientHello) promptly after connecting.']
    case Reason.SYNTHETIC_ADDRESS_UNBOUND:
      return ['The address came from keel\'s DNS but no name is bound to it any more. Look the name up again.']
    case Reason.GUARD_METADATA:
      return ['Link-local and cloud metadata addresses are never dialed.']
    case Reason.GUARD_PRIVATE_ADDRESS:
      return [
        `${host} resolved to a loopback or private address (possible DNS rebinding).`,
        'If that is intended, allow the range with a destinationCIDRs rule.',
      ]
    case Reason.UPSTREAM_CONNECT_FAILED:
    case Reason.UPSTREAM_CONNECT_TIMEOUT:
    case Reason.UPSTREAM_DNS_FAILED:
      return ['The policy allows this destination, but keel could not reach it. Check that the upstream is up and reachable from the host.']
    case Reason.CONNECTION_LIMIT:
      return ['Too many open connections for this sandbox. Close idle ones, or raise the proxy connection limit.']
    case Reason.DISPATCHER_UNAVAILABLE:
      return ['The route says `via: dispatcher`, but no dispatcher is running for this sandbox. Start keel with the dispatcher enabled.']
    case Reason.PROXY_LOOP:
      return ['Do not connect to keel\'s proxy socket directly; connect to the destination and keel intercepts it.']
    default:
      return ['Check the policy with `keel policy explain` and the keel log for this reason code.']
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** Printable ASCII only, bounded: agent-supplied text must not forge lines or headers. */
function clean(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?')
  return printable.length > 200 ? `${printable.slice(0, 200)}...` : printable
}

function slug(host: string): string {
  return host.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'destination'
}
