/**
 * HTTP/1.x request-head parser: pure and total (never throws).
 *
 * Two jobs with different tempers:
 * - **Detection is lenient.** Anything a lenient server might read as an HTTP request
 *   (a known method, or a first line ending in `HTTP/x`) counts as HTTP, so it cannot
 *   slip past the Host check by being classified as an opaque protocol.
 * - **Acceptance is strict** (RFC 9112): exactly `method SP target SP HTTP/1.x CRLF`,
 *   CRLF line endings, no obs-fold (§5.2), no whitespace before a colon (§5.1), one
 *   Host (§3.2), no control characters. A strict proxy in front of a lenient server
 *   denies what the two could disagree on (request smuggling, Host confusion).
 *
 * Only the first request head on a connection is read; see connection.ts for why that
 * is enough for the name check and where it is not.
 */

/** Default cap on a request head (request line + headers + final CRLF). Larger → 431. */
export const DEFAULT_MAX_HEAD_BYTES = 16_384
/** More header fields than this → 431. */
export const MAX_HEADER_COUNT = 128
/** Longest method token we try to read before deciding the bytes are not HTTP. */
const MAX_METHOD_LENGTH = 32

/**
 * Methods that make a first line HTTP even without a version (RFC 9110 §9, RFC 5789,
 * WebDAV RFC 4918, the h2 preface's PRI).
 */
const KNOWN_METHODS = new Set([
  'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'PRI',
  'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'REPORT', 'SEARCH',
  'MKCALENDAR', 'ACL', 'BIND', 'UNBIND', 'REBIND', 'LINK', 'UNLINK', 'PURGE', 'QUERY',
])

export type TargetForm = 'origin' | 'absolute' | 'authority' | 'asterisk'

export interface RequestHead {
  kind: 'request'
  method: string
  /** The request-target as sent. */
  target: string
  targetForm: TargetForm
  version: '1.0' | '1.1'
  /** Header fields in order, names as sent, values with surrounding whitespace trimmed. */
  headers: Array<[name: string, value: string]>
  /** Host header's host, normalized (lowercase, port and one trailing dot removed). '' when sent empty. */
  host?: string
  /** For absolute-form and authority-form targets: the target's host, normalized. */
  targetHost?: string
  /** Bytes from the start of the input to the end of the head (including leading empty lines). */
  headLength: number
}

export type RequestHeadResult =
  | { kind: 'incomplete' }
  /** The bytes are not an HTTP request (so the caller may treat them as another protocol). */
  | { kind: 'not-http' }
  /** HTTP, but not acceptable. `status` is the response to send (400, 414, 505). */
  | { kind: 'malformed'; detail: string; status: 400 | 414 | 505 }
  /** The head exceeds the cap (431, RFC 6585 §5). */
  | { kind: 'oversize'; detail: string; status: 431 }
  | RequestHead

export interface RequestHeadOptions {
  maxHeadBytes?: number
}

/**
 * Parse the request head at the start of `buf`.
 *
 * @example
 * const r = parseRequestHead(Buffer.from('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n'))
 * // r.kind === 'request', r.host === 'example.com'
 */
export function parseRequestHead(buf: Buffer, options: RequestHeadOptions = {}): RequestHeadResult {
  try {
    return parse(buf, options.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES)
  } catch (e) {
    // Unreachable by construction; keeps the function total.
    return { kind: 'malformed', detail: `parser error: ${e instanceof Error ? e.message : String(e)}`, status: 400 }
  }
}

const CR = 0x0d
const LF = 0x0a
const SP = 0x20
const HTAB = 0x09

function parse(buf: Buffer, maxHeadBytes: number): RequestHeadResult {
  // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
  let start = 0
  while (start + 1 < buf.length && buf[start] === CR && buf[start + 1] === LF && start < maxHeadBytes) start += 2
  if (start >= maxHeadBytes) return oversize('only empty lines')
  if (buf.length <= start) return { kind: 'incomplete' }
  if (buf.length === start + 1 && buf[start] === CR) return { kind: 'incomplete' }

  // Method token.
  let i = start
  while (i < buf.length && i - start <= MAX_METHOD_LENGTH && isTchar(buf[i]!)) i++
  if (i === buf.length) return i - start > MAX_METHOD_LENGTH ? { kind: 'not-http' } : { kind: 'incomplete' }
  if (i === start || i - start > MAX_METHOD_LENGTH) return { kind: 'not-http' }
  const sep = buf[i]!
  if (sep !== SP && sep !== HTAB) return { kind: 'not-http' }
  const method = buf.toString('latin1', start, i)
  const known = KNOWN_METHODS.has(method.toUpperCase())

  // First line end.
  const lf = buf.indexOf(LF, i)
  const lineEndLimit = start + maxHeadBytes
  if (lf === -1) {
    if (!known && hasNonLineByte(buf, i, buf.length)) return { kind: 'not-http' }
    if (buf.length >= lineEndLimit) return known ? { kind: 'malformed', detail: 'request line too long', status: 414 } : { kind: 'not-http' }
    return { kind: 'incomplete' }
  }
  if (lf >= lineEndLimit) {
    return known ? { kind: 'malformed', detail: 'request line too long', status: 414 } : { kind: 'not-http' }
  }
  // The same rule as before the LF arrived: the proxy's peek stops at the first answer
  // that is not "incomplete", so an answer must not change as more bytes come in.
  // Otherwise a client could send the line in two writes and be classified "opaque"
  // where one write would have been checked as HTTP (found by test/fuzz).
  if (!known && hasNonLineByte(buf, i, lf)) return { kind: 'not-http' }
  const lineEnd = lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf
  const line = buf.toString('latin1', start, lineEnd)
  const words = line.split(/[ \t]+/).filter((w) => w.length > 0)
  const last = words[words.length - 1] ?? ''
  const looksHttp = words.length >= 3 && /^HTTP\/\d/i.test(last)
  if (!looksHttp && !known) return { kind: 'not-http' }

  // From here on it is HTTP: be strict.
  const strict = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP\/\d(?:\.\d)?)$/.exec(line)
  if (strict === null || lineEnd === lf) {
    return malformed(lineEnd === lf ? 'request line ends in a bare LF' : 'request line is not "method SP target SP HTTP-version"')
  }
  const target = strict[2]!
  const versionText = strict[3]!
  if (method === 'PRI' && versionText === 'HTTP/2.0') {
    return malformed('HTTP/2 with prior knowledge (h2c) is not supported: the authority is inside HPACK')
  }
  if (versionText !== 'HTTP/1.1' && versionText !== 'HTTP/1.0') {
    return { kind: 'malformed', detail: `unsupported version ${versionText}`, status: 505 }
  }
  const version = versionText === 'HTTP/1.1' ? '1.1' : '1.0'

  const form = parseTarget(method, target)
  if (typeof form === 'string') return malformed(form)

  // Header fields, line by line; the head ends at an empty line.
  const headers: Array<[string, string]> = []
  let host: string | undefined
  let hostSeen = false
  let pos = lf + 1
  // Bounded: each iteration consumes at least one line (>= 2 bytes) of at most maxHeadBytes.
  for (;;) {
    if (pos - start >= maxHeadBytes) return oversize(`request head exceeds ${maxHeadBytes} bytes`)
    const eol = buf.indexOf(LF, pos)
    if (eol === -1) {
      if (buf.length - start >= maxHeadBytes) return oversize(`request head exceeds ${maxHeadBytes} bytes`)
      return { kind: 'incomplete' }
    }
    if (eol + 1 - start > maxHeadBytes) return oversize(`request head exceeds ${maxHeadBytes} bytes`)
    if (eol === pos || buf[eol - 1] !== CR) return malformed('header line ends in a bare LF')
    if (eol === pos + 1) {
      // Empty line: end of head.
      const head: RequestHead = {
        kind: 'request',
        method,
        target,
        targetForm: form.form,
        version,
        headers,
        headLength: eol + 1,
      }
      if (host !== undefined) head.host = host
      if (form.host !== undefined) head.targetHost = form.host
      return head
    }
    const first = buf[pos]!
    if (first === SP || first === HTAB) return malformed('obsolete line folding (obs-fold)')
    let c = pos
    while (c < eol - 1 && isTchar(buf[c]!)) c++
    if (c === pos || buf[c] !== 0x3a) {
      return malformed(buf[c] === SP || buf[c] === HTAB ? 'whitespace before a header colon' : 'invalid header name')
    }
    for (let k = c + 1; k < eol - 1; k++) {
      const b = buf[k]!
      if ((b < 0x20 && b !== HTAB) || b === 0x7f) return malformed('control character in a header value')
    }
    const name = buf.toString('latin1', pos, c)
    const value = buf.toString('latin1', c + 1, eol - 1).replace(/^[ \t]+|[ \t]+$/g, '')
    headers.push([name, value])
    if (headers.length > MAX_HEADER_COUNT) return oversize(`more than ${MAX_HEADER_COUNT} header fields`)
    if (name.toLowerCase() === 'host') {
      if (hostSeen) return malformed('more than one Host header')
      hostSeen = true
      if (value === '') {
        host = ''
      } else {
        const h = parseAuthority(value)
        if (h === undefined) return malformed('invalid Host header')
        host = h
      }
    }
    pos = eol + 1
  }
}

/** Classify the request-target (RFC 9112 §3.2) and pull the host out of absolute/authority forms. */
function parseTarget(method: string, target: string): { form: TargetForm; host?: string } | string {
  if (target.startsWith('/')) return { form: 'origin' }
  if (target === '*') return method === 'OPTIONS' ? { form: 'asterisk' } : 'asterisk-form target on a method other than OPTIONS'
  if (method === 'CONNECT') {
    const host = parseAuthority(target)
    return host === undefined || host === '' ? 'invalid CONNECT authority' : { form: 'authority', host }
  }
  const abs = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)/.exec(target)
  if (abs !== null) {
    const authority = abs[2]!
    if (authority.includes('@')) return 'userinfo in an absolute-form target'
    const host = parseAuthority(authority)
    if (host === undefined || host === '') return 'invalid absolute-form authority'
    return { form: 'absolute', host }
  }
  return 'request-target is not origin-form, absolute-form, authority-form or asterisk-form'
}

/**
 * Parse `host[:port]` or `[v6]:port` into a normalized host: lowercase, without the port
 * and one trailing dot. Returns undefined when it is not a valid authority.
 * Only unreserved reg-name characters are accepted (no percent-encoding, no sub-delims):
 * what a sane Host header carries, and nothing two parsers could read differently.
 */
export function parseAuthority(authority: string): string | undefined {
  let host: string
  let port: string | undefined
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']')
    if (close === -1) return undefined
    host = authority.slice(0, close + 1)
    const rest = authority.slice(close + 1)
    if (rest !== '') {
      if (!rest.startsWith(':')) return undefined
      port = rest.slice(1)
    }
    if (!/^\[[0-9A-Fa-f:.]+\]$/.test(host)) return undefined
  } else {
    const colon = authority.lastIndexOf(':')
    if (colon === -1) {
      host = authority
    } else {
      host = authority.slice(0, colon)
      port = authority.slice(colon + 1)
    }
    if (host.length > 254 || !/^[A-Za-z0-9._~-]*$/.test(host)) return undefined
  }
  if (port !== undefined && (!/^\d{0,5}$/.test(port) || Number(port) > 65535)) return undefined
  return normalizeHostname(host)
}

/** Lowercase and drop one trailing dot: `Example.COM.` → `example.com`. */
export function normalizeHostname(name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/** RFC 9110 §5.6.2 tchar. */
function isTchar(b: number): boolean {
  if ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)) return true
  switch (b) {
    case 0x21: case 0x23: case 0x24: case 0x25: case 0x26: case 0x27: case 0x2a: case 0x2b:
    case 0x2d: case 0x2e: case 0x5e: case 0x5f: case 0x60: case 0x7c: case 0x7e:
      return true
    default:
      return false
  }
}

/** True when [from, to) holds a byte no request line can carry, even leniently (NUL, CTLs other than HTAB/CR, DEL). */
function hasNonLineByte(buf: Buffer, from: number, to: number): boolean {
  for (let k = from; k < to; k++) {
    const b = buf[k]!
    if ((b < 0x20 && b !== HTAB && b !== CR) || b === 0x7f) return true
  }
  return false
}

function malformed(detail: string): RequestHeadResult {
  return { kind: 'malformed', detail, status: 400 }
}

function oversize(detail: string): RequestHeadResult {
  return { kind: 'oversize', detail, status: 431 }
}
