/**
 * Small, strict IP address helpers: text ↔ bytes for IPv4 and IPv6, RFC 5952 output,
 * IPv4-mapped IPv6 unwrapping and reverse-DNS (in-addr.arpa / ip6.arpa) names.
 * Strict on purpose: `01.2.3.4` (octal-looking) and other ambiguous forms are rejected.
 */

/** Parses dotted-quad IPv4 text into 4 bytes, or `undefined` when it is not exactly that. */
export function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split('.')
  if (parts.length !== 4) return undefined
  const out = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const p = parts[i] ?? ''
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined
    const n = Number(p)
    if (n > 255) return undefined
    out[i] = n
  }
  return out
}

/**
 * Parses IPv6 text (with `::`, an embedded dotted quad, or a `%zone`, which is
 * ignored) into 16 bytes, or `undefined`.
 */
export function parseIPv6(text: string): Uint8Array | undefined {
  let s = text
  const zone = s.indexOf('%')
  if (zone !== -1) s = s.slice(0, zone)
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1)
  if (s.length === 0 || s.length > 45) return undefined
  const groups: number[] = []
  let tailV4: Uint8Array | undefined
  const lastColon = s.lastIndexOf(':')
  if (s.indexOf('.', lastColon) !== -1) {
    tailV4 = parseIPv4(s.slice(lastColon + 1))
    if (!tailV4) return undefined
    s = s.slice(0, lastColon + 1) + '0:0'
  }
  const dbl = s.indexOf('::')
  if (dbl !== -1 && s.indexOf('::', dbl + 1) !== -1) return undefined
  const parseGroups = (part: string): number[] | undefined => {
    if (part === '') return []
    const out: number[] = []
    for (const g of part.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined
      out.push(parseInt(g, 16))
    }
    return out
  }
  if (dbl === -1) {
    const all = parseGroups(s)
    if (!all || all.length !== 8) return undefined
    groups.push(...all)
  } else {
    const head = parseGroups(s.slice(0, dbl))
    const tail = parseGroups(s.slice(dbl + 2))
    if (!head || !tail || head.length + tail.length > 7) return undefined
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail)
  }
  const out = new Uint8Array(16)
  for (let i = 0; i < 8; i++) {
    const g = groups[i] ?? 0
    out[i * 2] = g >> 8
    out[i * 2 + 1] = g & 0xff
  }
  if (tailV4) out.set(tailV4, 12)
  return out
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
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`
}

/** RFC 5952 canonical text: lower case, no leading zeros, longest zero run (≥ 2) as `::`. */
export function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = []
  for (let i = 0; i < 8; i++) groups.push(((bytes[i * 2] ?? 0) << 8) | (bytes[i * 2 + 1] ?? 0))
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestLen < 2) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`
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
