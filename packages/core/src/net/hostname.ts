/**
 * Hostname normalization and hostname patterns.
 *
 * One normal form everywhere (policy load and every decision): lower-case ASCII,
 * no trailing dot, IDN labels as punycode (`bücher.de` → `xn--bcher-kva.de`).
 * Labels are LDH plus `_` (which real DNS names such as `_dmarc` use), 1–63 bytes,
 * no leading or trailing hyphen; the whole name at most 253 bytes. A name whose last
 * label is numeric (`1.2.3`, `0x7f.1`) is refused: URL parsers read those as IPv4
 * addresses, so the same text would name two different destinations.
 */
import { domainToASCII } from 'node:url'

const MAX_NAME = 253
const MAX_LABEL = 63

const CH_DOT = 46
const CH_DASH = 45
const CH_UNDERSCORE = 95

/** Checks an already lower-case ASCII name label by label; true when every label is valid. */
function validAsciiName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME) return false
  let labelStart = 0
  let allDigits = true
  for (let i = 0; i <= name.length; i++) {
    const c = i < name.length ? name.charCodeAt(i) : CH_DOT
    if (c === CH_DOT) {
      const length = i - labelStart
      if (length === 0 || length > MAX_LABEL) return false
      if (name.charCodeAt(labelStart) === CH_DASH || name.charCodeAt(i - 1) === CH_DASH) return false
      if (i === name.length) return !allDigits && !isHexNumberLabel(name, labelStart)
      labelStart = i + 1
      allDigits = true
      continue
    }
    const digit = c >= 48 && c <= 57
    if (!digit) allDigits = false
    if (!(digit || (c >= 97 && c <= 122) || c === CH_DASH || c === CH_UNDERSCORE)) return false
  }
  return false
}

/** `0x…` labels: the URL standard reads `0x7f.1` as an IPv4 address. */
function isHexNumberLabel(name: string, start: number): boolean {
  if (name.charCodeAt(start) !== 48 || name.charCodeAt(start + 1) !== 120) return false
  return /^[0-9a-f]*$/.test(name.slice(start + 2))
}

function lastLabelIsNumeric(name: string): boolean {
  const last = name.slice(name.lastIndexOf('.') + 1)
  return /^(?:[0-9]+|0x[0-9a-f]*)$/.test(last)
}

/** Labels that start `xn--` must be valid punycode; domainToASCII checks that (and returns them unchanged). */
function validPunycode(name: string): boolean {
  return domainToASCII(name) === name
}

/** Anything that is not already lower-case LDH ASCII: upper case, IDN, or junk. */
function normalizeSlow(trimmed: string): string | undefined {
  // Only letters, digits, `.`, `-`, `_` and non-ASCII may reach domainToASCII: it
  // follows the URL standard, which would percent-decode `%41` or cut at `/`.
  if (/[\x00-\x2c\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]/.test(trimmed)) return undefined
  if (lastLabelIsNumeric(trimmed.toLowerCase())) return undefined
  const ascii = domainToASCII(trimmed)
  if (ascii === '' || ascii.endsWith('.')) return undefined
  return validAsciiName(ascii) ? ascii : undefined
}

/**
 * Normal form of a hostname, or undefined when it is not a valid hostname.
 * Lower-cases, strips one trailing dot, converts IDN labels to punycode and checks
 * punycode labels are well formed. IP literals are not hostnames (use parseIp).
 * The common case (already lower-case ASCII) is one scan without allocating.
 * @example normalizeHostname('API.Example.COM.') // 'api.example.com'
 * @example normalizeHostname('bücher.de')        // 'xn--bcher-kva.de'
 */
export function normalizeHostname(name: string): string | undefined {
  if (typeof name !== 'string') return undefined
  let end = name.length
  if (end === 0 || end > 4 * MAX_NAME) return undefined
  if (name.charCodeAt(end - 1) === CH_DOT) end--
  if (end === 0) return undefined
  const trimmed = end === name.length ? name : name.slice(0, end)
  if (end > MAX_NAME) return normalizeSlow(trimmed)
  let labelStart = 0
  let allDigits = true
  let punycode = false
  for (let i = 0; i <= end; i++) {
    const c = i < end ? name.charCodeAt(i) : CH_DOT
    if (c >= 97 && c <= 122) allDigits = false
    else if (c >= 48 && c <= 57) continue
    else if (c === CH_DASH || c === CH_UNDERSCORE) allDigits = false
    else if (c === CH_DOT) {
      const length = i - labelStart
      if (length === 0 || length > MAX_LABEL) return undefined
      if (name.charCodeAt(labelStart) === CH_DASH || name.charCodeAt(i - 1) === CH_DASH) return undefined
      if (length >= 4 && isPunycodePrefix(name, labelStart)) punycode = true
      if (i === end) {
        if (allDigits || isHexNumberLabel(name, labelStart)) return undefined
        break
      }
      labelStart = i + 1
      allDigits = true
    } else {
      return normalizeSlow(trimmed) // upper case, non-ASCII or not a hostname character
    }
  }
  return punycode && !validPunycode(trimmed) ? undefined : trimmed
}

/** `xn--` at `start`. */
function isPunycodePrefix(name: string, start: number): boolean {
  return (
    name.charCodeAt(start) === 120 &&
    name.charCodeAt(start + 1) === 110 &&
    name.charCodeAt(start + 2) === CH_DASH &&
    name.charCodeAt(start + 3) === CH_DASH
  )
}

/** How a hostname pattern matches. */
export type HostnameMatchKind =
  /** `api.example.com`: that name only. */
  | 'exact'
  /** `*.example.com`: exactly one extra label (api.example.com; not example.com, not a.b.example.com). */
  | 'one-label'
  /** `**.example.com`: one or more extra labels; never the bare domain. */
  | 'any-labels'

export interface HostnamePattern {
  readonly kind: HostnameMatchKind
  /** The exact name, or the suffix after `*.` / `**.`, normalized. */
  readonly name: string
  /** Normalized pattern text as it would be written: `*.example.com`. */
  readonly text: string
}

export type HostnamePatternResult = { ok: true; pattern: HostnamePattern } | { ok: false; problem: string }

/**
 * Parses a `destinationHostnames` entry. The wildcard may only be the whole first
 * label (`*.` or `**.`), and must be followed by at least two labels so that it
 * never covers a whole top-level domain (`*.com`).
 */
export function parseHostnamePattern(text: string): HostnamePatternResult {
  if (typeof text !== 'string' || text.length === 0) return { ok: false, problem: 'empty; write a name such as "api.example.com"' }
  let kind: HostnameMatchKind = 'exact'
  let rest = text
  if (text.startsWith('**.')) {
    kind = 'any-labels'
    rest = text.slice(3)
  } else if (text.startsWith('*.')) {
    kind = 'one-label'
    rest = text.slice(2)
  }
  if (text === '*' || text === '**' || text === '*.' || text === '**.') {
    return { ok: false, problem: 'a bare wildcard would match every name; list the names or suffixes you mean, e.g. "*.example.com"' }
  }
  if (rest.includes('*')) {
    return {
      ok: false,
      problem: 'a wildcard may only be the whole first label: "*.example.com" (one label) or "**.example.com" (any depth)',
    }
  }
  const name = normalizeHostname(rest)
  if (name === undefined) {
    const ipLike = /^[0-9.]+$/.test(rest) || rest.includes(':')
    return {
      ok: false,
      problem: ipLike
        ? 'an IP address is not a hostname; put it in destinationCIDRs (e.g. "10.0.0.1/32")'
        : 'not a valid hostname; labels are 1-63 letters, digits, "-" or "_", not starting or ending with "-", the name at most 253 characters, and punycode (xn--) labels must decode',
    }
  }
  if (kind !== 'exact' && !name.includes('.')) {
    const star = kind === 'one-label' ? '*' : '**'
    return {
      ok: false,
      problem: `the wildcard would cover a whole top-level domain; name at least two labels after it, e.g. "${star}.example.${name}"`,
    }
  }
  const prefix = kind === 'exact' ? '' : kind === 'one-label' ? '*.' : '**.'
  return { ok: true, pattern: { kind, name, text: prefix + name } }
}
