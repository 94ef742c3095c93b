/**
 * CIDR blocks, parsed once at load. A block with host bits set (`10.0.0.1/8`) is
 * rejected rather than silently masked: the author meant either the network or the
 * host, and guessing wrong widens or narrows the policy.
 */
import { formatIp, parseIpBytes } from './ip.js'

export interface CidrBlock {
  readonly family: 4 | 6
  /** Network address bytes (host bits zero). IPv4-mapped IPv6 blocks are stored as IPv4. */
  readonly bytes: Uint8Array
  readonly prefixLength: number
  /** Canonical text, e.g. `10.0.0.0/8`, `2001:db8::/32`. */
  readonly text: string
}

export type CidrParseResult = { ok: true; cidr: CidrBlock } | { ok: false; problem: string }

/** Zeroes every bit after `prefixLength`. */
export function maskBytes(bytes: Uint8Array, prefixLength: number): Uint8Array {
  const out = bytes.slice()
  for (let bit = prefixLength; bit < out.length * 8; bit++) out[bit >> 3]! &= ~(0x80 >> (bit & 7))
  return out
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Parses `address/prefix`, or a bare address as a single host (/32 or /128).
 * `::ffff:a.b.c.d/n` (n ≥ 96) becomes the IPv4 block `/n-96`.
 */
export function parseCidr(text: string): CidrParseResult {
  if (typeof text !== 'string' || text.length === 0) return { ok: false, problem: 'empty; write e.g. "10.0.0.0/8" or "2001:db8::/32"' }
  const slash = text.indexOf('/')
  const addressText = slash < 0 ? text : text.slice(0, slash)
  const rawBytes = parseIpBytes(addressText)
  if (!rawBytes) {
    const part = slash < 0 ? '' : ` ("${addressText}")`
    return { ok: false, problem: `the address${part} is not an IPv4 or IPv6 address; write e.g. "10.0.0.0/8" or "2001:db8::/32"` }
  }
  const mapped = rawBytes.length === 4 && addressText.includes(':')
  const maxPrefix = mapped ? 128 : rawBytes.length * 8
  let prefix = maxPrefix
  if (slash >= 0) {
    const prefixText = text.slice(slash + 1)
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > maxPrefix) {
      return { ok: false, problem: `the prefix length "/${prefixText}" is not an integer from 0 to ${maxPrefix}` }
    }
    prefix = Number(prefixText)
  }
  if (mapped) {
    if (prefix < 96) {
      return { ok: false, problem: `an IPv4-mapped block needs a prefix length of at least /96 (got /${prefix})` }
    }
    prefix -= 96
  }
  const network = maskBytes(rawBytes, prefix)
  const cidrText = `${formatIp(network)}/${prefix}`
  if (!sameBytes(network, rawBytes)) {
    return {
      ok: false,
      problem: `host bits are set; write the network ${cidrText}, or the single host ${formatIp(rawBytes)}/${rawBytes.length * 8}`,
    }
  }
  return { ok: true, cidr: { family: rawBytes.length === 4 ? 4 : 6, bytes: network, prefixLength: prefix, text: cidrText } }
}

/** True when `address` (4 or 16 bytes) lies inside `cidr`. Families never mix. */
export function cidrContains(cidr: CidrBlock, address: Uint8Array): boolean {
  if (address.length !== cidr.bytes.length) return false
  const full = cidr.prefixLength >> 3
  for (let i = 0; i < full; i++) if (address[i] !== cidr.bytes[i]) return false
  const rest = cidr.prefixLength & 7
  if (rest === 0) return true
  const mask = (0xff00 >> rest) & 0xff
  return (address[full]! & mask) === cidr.bytes[full]
}

/** Parses a CIDR that is known to be valid (module constants). */
export function mustParseCidr(text: string): CidrBlock {
  const result = parseCidr(text)
  if (!result.ok) throw new Error(`bad built-in CIDR ${text}: ${result.problem}`)
  return result.cidr
}
