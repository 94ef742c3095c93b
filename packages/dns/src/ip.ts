/**
 * Small, strict IP address helpers: text ↔ bytes for IPv4 and IPv6, RFC 5952 output,
 * IPv4-mapped IPv6 unwrapping and reverse-DNS (in-addr.arpa / ip6.arpa) names.
 * Strict on purpose: `01.2.3.4` (octal-looking) and other ambiguous forms are rejected.
 * Parsing and formatting are @keel/core's; this module adds the DNS-specific shapes.
 */
import { formatIp, parseIpBytes } from '@keel/core'

/** Parses dotted-quad IPv4 text into 4 bytes, or `undefined` when it is not exactly that. */
export function parseIPv4(text: string): Uint8Array | undefined {
  if (text.includes(':')) return undefined
  return parseIpBytes(text)
}

/**
 * Parses IPv6 text (with `::`, an embedded dotted quad, brackets, or a `%zone`, which is
 * ignored) into 16 bytes, or `undefined`. IPv4-mapped addresses stay 16 bytes here.
 */
export function parseIPv6(text: string): Uint8Array | undefined {
  let s = text
  const zone = s.indexOf('%')
  if (zone !== -1) s = s.slice(0, zone)
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1)
  if (!s.includes(':')) return undefined
  const bytes = parseIpBytes(s)
  if (!bytes || bytes.length === 16) return bytes
  // core folds ::ffff:a.b.c.d to IPv4; this parser's contract is the 16 wire bytes.
  const mapped = new Uint8Array(16)
  mapped[10] = 0xff
  mapped[11] = 0xff
  mapped.set(bytes, 12)
  return mapped
}

/** Parses either family. */
export function parseIP(text: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  const v4 = parseIPv4(text)
  if (v4) return { family: 4, bytes: v4 }
  const v6 = parseIPv6(text)
  if (v6) return { family: 6, bytes: v6 }
  return undefined
}

export function formatIPv4(bytes: Uint8Array): string {
  return formatIp(bytes.subarray(0, 4))
}

/** RFC 5952 canonical text: lower case, no leading zeros, longest zero run (≥ 2) as `::`. */
export function formatIPv6(bytes: Uint8Array): string {
  return formatIp(bytes.subarray(0, 16))
}

/** If `bytes` is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), the IPv4 bytes. */
export function unmapIPv4(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length !== 16) return undefined
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return undefined
  if (bytes[10] !== 0xff || bytes[11] !== 0xff) return undefined
  return bytes.slice(12)
}

/**
 * Parses an address and folds IPv4-mapped IPv6 to IPv4, so `::ffff:198.18.0.1`,
 * `::ffff:c612:1` and `198.18.0.1` all come out the same.
 */
export function parseIPNormalized(text: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  const ip = parseIP(text)
  if (!ip || ip.family === 4) return ip
  const v4 = unmapIPv4(ip.bytes)
  return v4 ? { family: 4, bytes: v4 } : ip
}

/**
 * The address a reverse-DNS name stands for: `4.3.2.1.in-addr.arpa` → `1.2.3.4`,
 * a full 32-nibble `ip6.arpa` name → the IPv6 address. Partial names → `undefined`.
 * `name` must already be lower case without a trailing dot.
 */
export function addressFromReverseName(name: string): string | undefined {
  if (name.endsWith('.in-addr.arpa')) {
    const labels = name.slice(0, -'.in-addr.arpa'.length).split('.')
    if (labels.length !== 4) return undefined
    const bytes = parseIPv4(labels.reverse().join('.'))
    return bytes ? formatIPv4(bytes) : undefined
  }
  if (name.endsWith('.ip6.arpa')) {
    const labels = name.slice(0, -'.ip6.arpa'.length).split('.')
    if (labels.length !== 32 || !labels.every((l) => /^[0-9a-f]$/.test(l))) return undefined
    const nibbles = labels.reverse()
    const bytes = new Uint8Array(16)
    for (let i = 0; i < 16; i++) {
      bytes[i] = (parseInt(nibbles[i * 2] ?? '0', 16) << 4) | parseInt(nibbles[i * 2 + 1] ?? '0', 16)
    }
    return formatIPv6(bytes)
  }
  return undefined
}
