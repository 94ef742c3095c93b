import { describe, expect, it } from 'vitest'
import { flattenPorts, portInRanges } from './ports.js'

describe('portInRanges', () => {
  it.each([
    [[{ start: 443, end: 443 }], 443, true],
    [[{ start: 443, end: 443 }], 444, false],
    [[{ start: 8000, end: 8099 }], 8000, true], // inclusive
    [[{ start: 8000, end: 8099 }], 8099, true],
    [[{ start: 8000, end: 8099 }], 8100, false],
    [[{ start: 8000, end: 8099 }], 7999, false],
    [[{ start: 22, end: 22 }, { start: 80, end: 81 }], 81, true],
    [[{ start: 1, end: 65535 }], 65535, true],
  ])('%j allows %i: %s', (ranges, port, expected) => {
    // Placed after another entry's ranges, as in a compiled policy.
    const flat = Uint16Array.from([9, 9, ...flattenPorts(ranges)])
    expect(portInRanges(flat, 2, ranges.length, port)).toBe(expected)
  })
})
