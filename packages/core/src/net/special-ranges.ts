/**
 * Address classes behind keel's guard rails (DESIGN.md "Guard rails").
 *
 * - metadata: link-local and cloud metadata endpoints. Never dialed, not even as a
 *   literal IP covered by a CIDR rule, unless `spec.guardRails.unsafeAllowMetadata`.
 * - private: loopback, RFC 1918 / ULA, CGNAT, unspecified, keel's synthetic pool,
 *   multicast and reserved space. An address keel resolved for a *hostname* in one
 *   of these is refused (DNS rebinding) unless a CIDR rule or
 *   `spec.guardRails.unsafeAllowResolvedRanges` covers it.
 *
 * IPv6 forms that carry an IPv4 address (NAT64 64:ff9b::/96, 6to4 2002::/16) are
 * classified by the IPv4 address they embed, so `64:ff9b::a9fe:a9fe` is metadata.
 * (IPv4-mapped addresses were already turned into IPv4 by the parser.)
 */
import { cidrContains, mustParseCidr, type CidrBlock } from './cidr.js'

export type GuardClass = { kind: 'metadata' | 'private'; label: string }

interface Range {
  cidr: CidrBlock
  class: GuardClass
}

const range = (text: string, kind: GuardClass['kind'], label: string): Range => ({
  cidr: mustParseCidr(text),
  class: { kind, label },
})

// Metadata first: fd00:ec2::254 sits inside fc00::/7 and must classify as metadata.
const RANGES: readonly Range[] = [
  range('169.254.0.0/16', 'metadata', 'link-local / cloud metadata'),
  range('fe80::/10', 'metadata', 'IPv6 link-local'),
  range('fd00:ec2::254/128', 'metadata', 'cloud metadata (AWS IPv6)'),
  range('0.0.0.0/8', 'private', 'unspecified / "this network"'),
  range('127.0.0.0/8', 'private', 'loopback'),
  range('10.0.0.0/8', 'private', 'private (RFC 1918)'),
  range('172.16.0.0/12', 'private', 'private (RFC 1918)'),
  range('192.168.0.0/16', 'private', 'private (RFC 1918)'),
  range('100.64.0.0/10', 'private', 'carrier-grade NAT (RFC 6598)'),
  range('198.18.0.0/15', 'private', "keel's synthetic pool / benchmarking (RFC 2544)"),
  range('224.0.0.0/4', 'private', 'multicast'),
  range('240.0.0.0/4', 'private', 'reserved / broadcast'),
  range('::/128', 'private', 'unspecified'),
  range('::1/128', 'private', 'loopback'),
  range('fc00::/7', 'private', 'unique local (ULA)'),
  range('ff00::/8', 'private', 'multicast'),
  range('64:ff9b:1::/48', 'private', 'local-use NAT64 (RFC 8215)'),
]

/** The IPv4 address an IPv6 address embeds by a well-known translation prefix, if any. */
function embeddedIpv4(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length !== 16) return undefined
  // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): IPv4 in the last 32 bits.
  if (bytes[0] === 0x00 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b) {
    let zero = true
    for (let i = 4; i < 12; i++) if (bytes[i] !== 0) zero = false
    if (zero) return bytes.slice(12)
  }
  // 6to4 2002::/16 (RFC 3056): IPv4 in bits 16..47.
  if (bytes[0] === 0x20 && bytes[1] === 0x02) return bytes.slice(2, 6)
  return undefined
}

/** Classifies an address (4 or 16 bytes) for the guard rails; undefined for ordinary public space. */
export function classifyAddress(bytes: Uint8Array): GuardClass | undefined {
  for (const r of RANGES) if (cidrContains(r.cidr, bytes)) return r.class
  const v4 = embeddedIpv4(bytes)
  if (v4) {
    const inner = classifyAddress(v4)
    if (inner) return { kind: inner.kind, label: `${inner.label}, embedded in IPv6` }
  }
  return undefined
}

const AWS_V6_METADATA = mustParseCidr('fd00:ec2::254/128')

/** Fast check for the metadata class alone (used on every literal-IP decision). */
export function isMetadataAddress(bytes: Uint8Array): boolean {
  if (bytes.length === 4) return bytes[0] === 169 && bytes[1] === 254
  if (bytes[0] === 0xfe && (bytes[1]! & 0xc0) === 0x80) return true
  if (cidrContains(AWS_V6_METADATA, bytes)) return true
  const v4 = embeddedIpv4(bytes)
  return v4 !== undefined && v4[0] === 169 && v4[1] === 254
}
