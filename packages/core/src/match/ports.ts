/** Port ranges as flat inclusive `[start, end]` pairs, shared by every entry of a policy. */
import type { PortRange } from '../policy/model.js'

/** `[start0, end0, start1, end1, …]`. */
export function flattenPorts(ranges: readonly PortRange[]): number[] {
  return ranges.flatMap((r) => [r.start, r.end])
}

/**
 * True when `port` is in one of the `count` ranges at `offset` (inclusive:
 * `{ startPort: 8000, endPort: 8099 }` allows 8000 and 8099).
 */
export function portInRanges(ranges: Uint16Array, offset: number, count: number, port: number): boolean {
  const end = offset + count * 2
  for (let i = offset; i < end; i += 2) if (port >= ranges[i]! && port <= ranges[i + 1]!) return true
  return false
}
