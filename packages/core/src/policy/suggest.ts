/** "Did you mean …?" for unknown field names and enum values. */

function editDistance(a: string, b: string): number {
  const previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = previous[0]!
    previous[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = previous[j]!
      const cost = a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1
      previous[j] = Math.min(above + 1, previous[j - 1]! + 1, diagonal + cost)
      diagonal = above
    }
  }
  return previous[b.length]!
}

/** The closest candidate when it is close enough to be a plausible typo (or the word is a prefix of it). */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase()
  const extended = lower.length >= 3 ? candidates.filter((c) => c.toLowerCase().startsWith(lower)) : []
  if (extended.length === 1) return extended[0]
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate)
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3))
  return bestDistance <= limit ? best : undefined
}

/** `; did you mean "x"?` or the empty string. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const hint = closest(word, candidates)
  return hint === undefined ? '' : `; did you mean "${hint}"?`
}
