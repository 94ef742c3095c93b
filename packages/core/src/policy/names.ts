/** Syntax checks for names and labels, Kubernetes-style so policies export cleanly. */

const DNS_SUBDOMAIN = /^[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?$/
const LABEL_NAME = /^[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$/

/** Route, agent, deny-policy and policy names: lower-case DNS subdomain, at most 253 characters. */
export function checkObjectName(name: string): string | undefined {
  if (name.length <= 253 && DNS_SUBDOMAIN.test(name)) return undefined
  return 'is not a valid name; use lower-case letters, digits, "-" and ".", starting and ending with a letter or digit (e.g. "app-db")'
}

/** Label keys: `[prefix/]name`, name ≤ 63 characters, prefix a DNS subdomain (Kubernetes rules). */
export function checkLabelKey(key: string): string | undefined {
  const slash = key.indexOf('/')
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined
  const name = slash >= 0 ? key.slice(slash + 1) : key
  const prefixOk = prefix === undefined || (prefix.length <= 253 && DNS_SUBDOMAIN.test(prefix))
  if (prefixOk && name.length <= 63 && LABEL_NAME.test(name)) return undefined
  return 'is not a valid label key; use [prefix/]name where name is letters, digits, "-", "_" and "." (at most 63, starting and ending with a letter or digit), e.g. "team" or "keel.dev/tier"'
}

/** Label values: empty, or ≤ 63 characters of letters, digits, `-`, `_`, `.`, starting and ending alphanumeric. */
export function checkLabelValue(value: string): string | undefined {
  if (value === '' || (value.length <= 63 && LABEL_NAME.test(value))) return undefined
  return 'is not a valid label value; use at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit'
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/

/** Milliseconds since the epoch for an RFC 3339 date-time with an explicit offset, or undefined. */
export function parseRfc3339(text: string): number | undefined {
  const m = RFC3339.exec(text)
  if (!m) return undefined
  const [, y, mo, d, h, mi, s, oh, om] = m.map(Number) as number[]
  const daysInMonth = new Date(Date.UTC(y!, mo!, 0)).getUTCDate()
  if (mo! < 1 || mo! > 12 || d! < 1 || d! > daysInMonth || h! > 23 || mi! > 59 || s! > 60) return undefined
  if (oh !== undefined && !Number.isNaN(oh) && (oh > 23 || om! > 59)) return undefined
  const ms = Date.parse(text.toUpperCase())
  return Number.isFinite(ms) ? ms : undefined
}
