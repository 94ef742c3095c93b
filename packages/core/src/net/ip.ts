/**
 * IP address parsing. Strict on purpose: the text forms accepted are the ones
 * people write in policies and the ones sockets report (dotted-quad IPv4 without
 * leading zeros, RFC 4291 IPv6 without zone ids). IPv4-mapped IPv6
 * (`::ffff:10.0.0.1`) becomes IPv4, so one CIDR rule covers both spellings.
 */

export interface ParsedIp {
  readonly family: 4 | 6
  /** Network byte order; 4 bytes for IPv4, 16 for IPv6. */
  readonly bytes: Uint8Array
  /** Canonical text: dotted quad, or RFC 5952 IPv6 (lower-case, longest zero run compressed). */
  readonly text: string
}

const CH_0 = 48
const CH_9 = 57
const CH_DOT = 46
const CH_COLON = 58

/**
 * Parses dotted-quad IPv4 into `out[offset..offset+3]`.
 * Rejects leading zeros (`010.0.0.1`): some parsers read them as octal, so the
 * same text would mean two different addresses.
 */
function parseIpv4Into(text: string, start: number, end: number, out: Uint8Array, offset: number): boolean {
  let part = 0
  let value = 0
  let digits = 0
  let firstDigitZero = false
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c >= CH_0 && c <= CH_9) {
      if (digits === 0) firstDigitZero = c === CH_0
      else if (firstDigitZero) return false
      value = value * 10 + (c - CH_0)
      digits++
      if (value > 255) return false
    } else if (c === CH_DOT) {
      if (digits === 0 || part === 3) return false
      out[offset + part] = value
      part++
      value = 0
      digits = 0
    } else {
      return false
    }
  }
  if (digits === 0 || part !== 3) return false
  out[offset + 3] = value
  return true
}

function hexValue(c: number): number {
  if (c >= CH_0 && c <= CH_9) return c - CH_0
  if (c >= 97 && c <= 102) return c - 87 // a-f
  if (c >= 65 && c <= 70) return c - 55 // A-F
  return -1
}

/**
 * Parses RFC 4291 IPv6 text into `out` (16 bytes) in one pass, without allocating:
 * hex groups, at most one `::`, optionally a trailing dotted IPv4.
 */
function parseIpv6Into(text: string, out: Uint8Array): boolean {
  const n = text.length
  if (n < 2 || n > 45) return false
  let groups = 0
  let gap = -1 // group index where `::` stands
  let i = 0
  if (text.charCodeAt(0) === CH_COLON) {
    if (text.charCodeAt(1) !== CH_COLON) return false
    gap = 0
    i = 2
  }
  while (i < n) {
    const start = i
    let value = 0
    while (i < n) {
      const h = hexValue(text.charCodeAt(i))
      if (h < 0) break
      value = (value << 4) | h
      if (++i - start > 4) return false
    }
    if (i < n && text.charCodeAt(i) === CH_DOT) {
      if (groups > 6 || !parseIpv4Into(text, start, n, out, groups * 2)) return false
      groups += 2
      break
    }
    if (i === start || groups === 8) return false
    out[groups * 2] = value >> 8
    out[groups * 2 + 1] = value & 0xff
    groups++
    if (i === n) break
    if (text.charCodeAt(i) !== CH_COLON) return false
    i++
    if (i < n && text.charCodeAt(i) === CH_COLON) {
      if (gap >= 0) return false
      gap = groups
      i++
    } else if (i === n) {
      return false // a single trailing colon
    }
  }
  if (gap < 0) return groups === 8
  // `::` stands for at least one zero group (RFC 4291 §2.2).
  if (groups >= 8) return false
  const tail = (groups - gap) * 2
  out.copyWithin(16 - tail, gap * 2, groups * 2)
  out.fill(0, gap * 2, 16 - tail)
  return true
}

/** True for `::ffff:0:0/96`, the IPv4-mapped range. */
function isV4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false
  return bytes[10] === 0xff && bytes[11] === 0xff
}

/**
 * Parses an IP address into `out` (at least 16 bytes) without allocating; the hot
 * path of every literal-IP decision. Returns 4 (IPv4, also for IPv4-mapped IPv6,
 * in out[0..3]), 16 (IPv6) or 0 (not an address).
 */
export function parseIpInto(text: string, out: Uint8Array): 0 | 4 | 16 {
  if (typeof text !== 'string') return 0
  if (text.indexOf(':') < 0) {
    if (text.length < 7 || text.length > 15) return 0
    return parseIpv4Into(text, 0, text.length, out, 0) ? 4 : 0
  }
  if (!parseIpv6Into(text, out)) return 0
  if (!isV4Mapped(out)) return 16
  out.copyWithin(0, 12, 16)
  return 4
}

/** Parses an IP address into fresh bytes (4 or 16). IPv4-mapped IPv6 comes back as 4 bytes. */
export function parseIpBytes(text: string): Uint8Array | undefined {
  const out = new Uint8Array(16)
  const length = parseIpInto(text, out)
  return length === 0 ? undefined : length === 4 ? out.slice(0, 4) : out
}

/** Canonical text for 4 or 16 address bytes (RFC 5952 for IPv6). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`
  const groups: number[] = []
  for (let g = 0; g < 8; g++) groups.push((bytes[g * 2]! << 8) | bytes[g * 2 + 1]!)
  // Longest run of two or more zero groups, first one on a tie (RFC 5952 §4.2).
  let bestStart = -1
  let bestLength = 1
  for (let g = 0; g < 8; ) {
    if (groups[g] !== 0) {
      g++
      continue
    }
    let end = g
    while (end < 8 && groups[end] === 0) end++
    if (end - g > bestLength) {
      bestStart = g
      bestLength = end - g
    }
    g = end
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((v) => v.toString(16)).join(':')
  if (bestStart < 0) return hex(0, 8)
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`
}

/**
 * Parses an IPv4 or IPv6 address. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
 * Returns undefined for anything else: zone ids, brackets, leading zeros, ports.
 * @example parseIp('::ffff:10.0.0.1') // { family: 4, text: '10.0.0.1', bytes: … }
 */
export function parseIp(text: string): ParsedIp | undefined {
  const bytes = parseIpBytes(text)
  if (!bytes) return undefined
  return { family: bytes.length === 4 ? 4 : 6, bytes, text: formatIp(bytes) }
}
