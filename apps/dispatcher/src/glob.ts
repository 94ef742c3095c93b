/**
 * Globs for config values (models, attribute values, placeholders): `*` matches any run
 * of characters, everything else is literal, the match is whole-string and
 * case-insensitive. Compiled once at load; matching never throws.
 */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))
    .join('.*')
  return new RegExp(`^${body}$`, 'i')
}

/** A predicate for "any of these globs". Literal globs use a Set lookup. */
export function compileGlobs(globs: readonly string[]): (value: string | undefined) => boolean {
  const exact = new Set<string>()
  const patterns: RegExp[] = []
  for (const g of globs) {
    if (g.includes('*')) patterns.push(globToRegExp(g))
    else exact.add(g.toLowerCase())
  }
  return function matchesGlob(value) {
    if (value === undefined) return false
    if (exact.size > 0 && exact.has(value.toLowerCase())) return true
    for (const p of patterns) if (p.test(value)) return true
    return false
  }
}
