import { describe, expect, it } from 'vitest'
import { resolveNetns } from './nft.js'

describe('resolveNetns', () => {
  it.each([
    ['keel-1234', '/run/netns/keel-1234'],
    ['/run/netns/keel-1234', '/run/netns/keel-1234'],
    ['/proc/42/ns/net', '/proc/42/ns/net'],
    ['/run/netns/../netns/x', '/run/netns/x'],
  ])('%s -> %s', (input, path) => {
    expect(resolveNetns(input)).toBe(path)
  })

  it.each([[''], ['.'], ['..'], ['a\0b'], [42 as unknown as string]])('rejects %j', (input) => {
    expect(() => resolveNetns(input)).toThrow(TypeError)
  })
})
