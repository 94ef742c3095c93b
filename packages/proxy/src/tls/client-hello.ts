/**
 * TLS ClientHello parser: pure and total. It never throws, whatever the input; every
 * byte sequence maps to exactly one result.
 *
 * What it reads (RFC 8446 §4.1.2, §5.1; RFC 5246 §6.2, §7.4.1.2; RFC 6066 §3; RFC 7301 §3.1;
 * draft-ietf-tls-esni §5):
 *
 * ```
 * TLSPlaintext   type(1)=22 legacy_record_version(2)=0x03xx length(2)<=2^14 fragment
 * Handshake      msg_type(1)=1 length(3) ClientHello          (may span several records)
 * ClientHello    legacy_version(2) random(32) session_id<0..32>
 *                cipher_suites<2..2^16-2> compression_methods<1..2^8-1>
 *                extensions<0..2^16-1>                        (absent in old TLS 1.0 hellos)
 * Extension      type(2) data<0..2^16-1>
 * ```
 *
 * Why the proxy cares: the SNI must equal the name keel bound to the synthetic address,
 * so a ClientHello it cannot read is never waved through. Anything structurally wrong is
 * `malformed` (the proxy denies it), a hello that needs more bytes is `incomplete`, and
 * bytes that do not start a TLS handshake record are `not-tls`.
 */

/** TLS record content type for handshake records. */
const CONTENT_TYPE_HANDSHAKE = 22
/** Handshake message type of a ClientHello. */
const HANDSHAKE_CLIENT_HELLO = 1
/** RFC 8446 §5.1: a TLSPlaintext fragment is at most 2^14 bytes. */
const MAX_RECORD_FRAGMENT = 16_384
const RECORD_HEADER = 5
const HANDSHAKE_HEADER = 4

/** Extension code points the parser reads. */
export const EXTENSION = {
  SERVER_NAME: 0x0000,
  ALPN: 0x0010,
  SUPPORTED_VERSIONS: 0x002b,
  /** draft-ietf-tls-esni: `encrypted_client_hello`. */
  ENCRYPTED_CLIENT_HELLO: 0xfe0d,
} as const

/** Default cap on the ClientHello handshake message (real hellos are < 2 KiB; post-quantum ones ~ 2-3 KiB). */
export const DEFAULT_MAX_HELLO_BYTES = 65_536

export interface ClientHelloOptions {
  /** Largest ClientHello handshake body accepted; larger is `malformed` (oversize). Default 64 KiB. */
  maxHelloBytes?: number
}

/** A parsed ClientHello: what the proxy needs, plus a little for logs. */
export interface ClientHello {
  kind: 'client-hello'
  /** The `host_name` from server_name, as sent (ASCII, validated). Absent when the client sent none. */
  sni?: string
  /** True when the hello carries an `encrypted_client_hello` extension (outer or inner). */
  ech: boolean
  /** ALPN protocol names, when offered. */
  alpn?: string[]
  /** `supported_versions` (TLS 1.3 hellos), e.g. [0x0304, 0x0303]. */
  supportedVersions?: number[]
  /** `legacy_version` of the hello (0x0303 for TLS 1.2 and 1.3). */
  legacyVersion: number
  /** Extension types in the order sent. */
  extensions: number[]
  /** Length of the ClientHello handshake body. */
  helloLength: number
  /** Bytes of the input that the records holding the hello occupy. */
  consumed: number
}

export type ClientHelloResult =
  /** More bytes are needed. `need` is the least total input length that can make progress, when known. */
  | { kind: 'incomplete'; need?: number }
  /** The bytes do not start a TLS handshake record. */
  | { kind: 'not-tls' }
  /** A TLS record that is not a readable ClientHello. `detail` says why (stable-ish, for logs). */
  | { kind: 'malformed'; detail: string }
  | ClientHello

/**
 * Parse the ClientHello at the start of `buf`.
 *
 * Total: returns a result for every input and never throws. Extra bytes after the
 * records holding the hello (e.g. TLS 1.3 early data) are ignored.
 *
 * @example
 * const r = parseClientHello(firstBytes)
 * if (r.kind === 'client-hello' && r.sni === 'example.com') { ... }
 */
export function parseClientHello(buf: Buffer, options: ClientHelloOptions = {}): ClientHelloResult {
  try {
    return parse(buf, options.maxHelloBytes ?? DEFAULT_MAX_HELLO_BYTES)
  } catch (e) {
    // Unreachable by construction (every read is bounds-checked); kept so the
    // function is total even if a future edit slips.
    return { kind: 'malformed', detail: `parser error: ${e instanceof Error ? e.message : String(e)}` }
  }
}

function parse(buf: Buffer, maxHelloBytes: number): ClientHelloResult {
  if (buf.length === 0) return { kind: 'incomplete', need: 1 }
  const first = buf[0]!
  if (first !== CONTENT_TYPE_HANDSHAKE) {
    // SSLv2-compatible ClientHello (RFC 5246 appendix E.2): 2-byte header with the high
    // bit set, then msg_type 1 and a 0x03xx version. No SNI is possible in it: deny.
    if ((first & 0x80) !== 0) {
      if (buf.length < 4) return { kind: 'incomplete', need: 4 }
      if (buf[2] === 1 && buf[3] === 3) return { kind: 'malformed', detail: 'sslv2-compatible ClientHello' }
    }
    return { kind: 'not-tls' }
  }
  if (buf.length < 2) return { kind: 'incomplete', need: 2 }
  if (buf[1] !== 3) return { kind: 'not-tls' }

  // Gather handshake bytes from consecutive handshake records until the whole
  // ClientHello message is present (RFC 8446 §5.1 allows splitting it across records).
  const fragments: Buffer[] = []
  let handshakeBytes = 0
  let offset = 0
  let needed = -1 // total handshake bytes needed (header + body), once known
  // Bounded: each iteration consumes at least one non-empty record (empty ones are
  // rejected), and we stop once the capped hello length is reached.
  for (;;) {
    if (needed >= 0 && handshakeBytes >= needed) break
    if (buf.length < offset + RECORD_HEADER) return { kind: 'incomplete', need: offset + RECORD_HEADER }
    const type = buf[offset]!
    const major = buf[offset + 1]!
    const minor = buf[offset + 2]!
    const length = buf.readUInt16BE(offset + 3)
    if (type !== CONTENT_TYPE_HANDSHAKE) {
      return { kind: 'malformed', detail: `record type ${type} before the ClientHello was complete` }
    }
    if (major !== 3 || minor > 4) {
      return { kind: 'malformed', detail: `record version ${major}.${minor}` }
    }
    if (length === 0) return { kind: 'malformed', detail: 'empty handshake record' }
    if (length > MAX_RECORD_FRAGMENT) return { kind: 'malformed', detail: `record length ${length} > 16384` }
    const end = offset + RECORD_HEADER + length
    if (buf.length < end) return { kind: 'incomplete', need: end }
    fragments.push(buf.subarray(offset + RECORD_HEADER, end))
    handshakeBytes += length
    offset = end
    if (needed < 0 && handshakeBytes >= HANDSHAKE_HEADER) {
      const hs = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments)
      if (hs[0] !== HANDSHAKE_CLIENT_HELLO) {
        return { kind: 'malformed', detail: `handshake message type ${hs[0]} is not ClientHello` }
      }
      const bodyLength = hs.readUIntBE(1, 3)
      if (bodyLength > maxHelloBytes) {
        return { kind: 'malformed', detail: `ClientHello of ${bodyLength} bytes exceeds ${maxHelloBytes}` }
      }
      needed = HANDSHAKE_HEADER + bodyLength
    }
  }
  const handshake = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments)
  const body = handshake.subarray(HANDSHAKE_HEADER, needed)
  return parseBody(body, offset)
}

/** Parse a complete ClientHello body. */
function parseBody(body: Buffer, consumed: number): ClientHelloResult {
  const r = new Reader(body)
  const legacyVersion = r.u16()
  r.skip(32) // random
  const sessionId = r.vec8()
  if (sessionId === undefined || sessionId.length > 32) return malformed('bad session_id')
  const ciphers = r.vec16()
  if (ciphers === undefined || ciphers.length < 2 || ciphers.length % 2 !== 0) return malformed('bad cipher_suites')
  const compression = r.vec8()
  if (compression === undefined || compression.length < 1) return malformed('bad compression_methods')
  if (legacyVersion === undefined || r.failed) return malformed('truncated ClientHello')

  const hello: ClientHello = {
    kind: 'client-hello',
    ech: false,
    legacyVersion,
    extensions: [],
    helloLength: body.length,
    consumed,
  }
  // Hellos from before RFC 3546 may end here, with no extensions at all.
  if (r.remaining === 0) return hello

  const extensions = r.vec16()
  if (extensions === undefined) return malformed('bad extensions length')
  if (r.remaining !== 0) return malformed('trailing bytes after extensions')

  const seen = new Set<number>()
  const er = new Reader(extensions)
  // Bounded: each iteration consumes at least 4 bytes of a buffer of at most 64 KiB.
  while (er.remaining > 0) {
    const type = er.u16()
    const data = er.vec16()
    if (type === undefined || data === undefined) return malformed('bad extension framing')
    // RFC 8446 §4.2: "There MUST NOT be more than one extension of the same type."
    if (seen.has(type)) return malformed(`duplicate extension ${type}`)
    seen.add(type)
    hello.extensions.push(type)
    switch (type) {
      case EXTENSION.SERVER_NAME: {
        const sni = parseServerName(data)
        if (typeof sni !== 'string' && sni !== undefined) return sni
        if (sni !== undefined) hello.sni = sni
        break
      }
      case EXTENSION.ALPN: {
        const alpn = parseAlpn(data)
        if (alpn === undefined) return malformed('bad application_layer_protocol_negotiation')
        hello.alpn = alpn
        break
      }
      case EXTENSION.SUPPORTED_VERSIONS: {
        const versions = parseSupportedVersions(data)
        if (versions === undefined) return malformed('bad supported_versions')
        hello.supportedVersions = versions
        break
      }
      case EXTENSION.ENCRYPTED_CLIENT_HELLO:
        hello.ech = true
        break
      default:
        break
    }
  }
  return hello
}

/**
 * RFC 6066 §3: `ServerNameList server_name_list<1..2^16-1>`, each entry
 * `NameType name_type; opaque HostName<1..2^16-1>`. At most one name per type.
 * Returns the host_name, undefined when the list has no host_name, or a malformed result.
 */
function parseServerName(data: Buffer): string | undefined | { kind: 'malformed'; detail: string } {
  const r = new Reader(data)
  const list = r.vec16()
  if (list === undefined || list.length === 0 || r.remaining !== 0) return malformed('bad server_name list')
  const lr = new Reader(list)
  let hostName: string | undefined
  const types = new Set<number>()
  while (lr.remaining > 0) {
    const nameType = lr.u8()
    const name = lr.vec16()
    if (nameType === undefined || name === undefined) return malformed('bad server_name entry')
    if (types.has(nameType)) return malformed('server_name lists a name type twice')
    types.add(nameType)
    if (nameType !== 0) continue // unknown name types are ignored (none are defined)
    if (!isValidSniHostname(name)) return malformed('server_name is not a valid DNS hostname')
    hostName = name.toString('latin1')
  }
  return hostName
}

/**
 * A host_name as RFC 6066 wants it: an ASCII DNS name (A-labels for IDNs), no trailing
 * dot, not an IP literal. Underscores are tolerated: real names carry them.
 */
export function isValidSniHostname(name: Buffer): boolean {
  if (name.length === 0 || name.length > 253) return false
  let labelLength = 0
  let allDigitsOrDots = true
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!
    if (c === 0x2e) {
      if (labelLength === 0) return false // empty label, leading or trailing dot
      if (name[i - 1] === 0x2d) return false // label ends with '-'
      labelLength = 0
      continue
    }
    const isAlpha = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)
    const isDigit = c >= 0x30 && c <= 0x39
    if (!isAlpha && !isDigit && c !== 0x2d && c !== 0x5f) return false
    if (c === 0x2d && labelLength === 0) return false // label starts with '-'
    if (!isDigit) allDigitsOrDots = false
    labelLength++
    if (labelLength > 63) return false
  }
  if (labelLength === 0) return false // trailing dot
  if (name[name.length - 1] === 0x2d) return false
  // RFC 6066: "Literal IPv4 and IPv6 addresses are not permitted in HostName."
  return !allDigitsOrDots
}

/** RFC 7301 §3.1: `ProtocolName protocol_name_list<2..2^16-1>`, each `opaque ProtocolName<1..2^8-1>`. */
function parseAlpn(data: Buffer): string[] | undefined {
  const r = new Reader(data)
  const list = r.vec16()
  if (list === undefined || list.length < 2 || r.remaining !== 0) return undefined
  const lr = new Reader(list)
  const names: string[] = []
  while (lr.remaining > 0) {
    const name = lr.vec8()
    if (name === undefined || name.length === 0) return undefined
    names.push(name.toString('latin1'))
  }
  return names
}

/** RFC 8446 §4.2.1 (ClientHello form): `ProtocolVersion versions<2..254>`. */
function parseSupportedVersions(data: Buffer): number[] | undefined {
  const r = new Reader(data)
  const list = r.vec8()
  if (list === undefined || list.length < 2 || list.length % 2 !== 0 || r.remaining !== 0) return undefined
  const versions: number[] = []
  for (let i = 0; i < list.length; i += 2) versions.push(list.readUInt16BE(i))
  return versions
}

function malformed(detail: string): { kind: 'malformed'; detail: string } {
  return { kind: 'malformed', detail }
}

/** Bounds-checked big-endian reader: a short read returns undefined and sets `failed`. */
class Reader {
  private pos = 0
  failed = false
  constructor(private readonly buf: Buffer) {}
  get remaining(): number {
    return this.buf.length - this.pos
  }
  u8(): number | undefined {
    if (this.remaining < 1) return this.fail()
    return this.buf[this.pos++]
  }
  u16(): number | undefined {
    if (this.remaining < 2) return this.fail()
    const v = this.buf.readUInt16BE(this.pos)
    this.pos += 2
    return v
  }
  skip(n: number): void {
    if (this.remaining < n) {
      this.fail()
      this.pos = this.buf.length
      return
    }
    this.pos += n
  }
  vec8(): Buffer | undefined {
    const n = this.u8()
    return n === undefined ? undefined : this.take(n)
  }
  vec16(): Buffer | undefined {
    const n = this.u16()
    return n === undefined ? undefined : this.take(n)
  }
  private take(n: number): Buffer | undefined {
    if (this.remaining < n) return this.fail()
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }
  private fail(): undefined {
    this.failed = true
    return undefined
  }
}
