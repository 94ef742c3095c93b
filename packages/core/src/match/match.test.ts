import { describe, expect, it } from 'vitest'
import { parseCidr } from '../net/cidr.js'
import { parseHostnamePattern } from '../net/hostname.js'
import { parseIp } from '../net/ip.js'
import { CidrTrie } from './cidr-trie.js'
import { HostnameIndex } from './hostname-index.js'
import { SelectorCache, selectorMatches } from './selector.js'
import type { LabelSelector } from '../policy/model.js'

const pattern = (t: string) => {
  const r = parseHostnamePattern(t)
  if (!r.ok) throw new Error(r.problem)
  return r.pattern
}
const cidr = (t: string) => {
  const r = parseCidr(t)
  if (!r.ok) throw new Error(r.problem)
  return r.cidr
}

describe('HostnameIndex', () => {
  const patterns = ['api.example.com', '*.example.com', '**.deep.example.com', '**.example.org', 'example.net']
  const index = new HostnameIndex()
  patterns.forEach((p, id) => index.add(pattern(p), id))
  const lookup = (name: string) => {
    const out = new Int32Array(patterns.length)
    const count = index.collect(name, out, 0)
    return [...out.subarray(0, count)].map((id) => patterns[id]).sort()
  }

  it.each([
    ['api.example.com', ['*.example.com', 'api.example.com']],
    ['www.example.com', ['*.example.com']],
    ['example.com', []], // the bare domain is never implied
    ['a.b.example.com', []], // * is exactly one label
    ['deep.example.com', ['*.example.com']],
    ['x.deep.example.com', ['**.deep.example.com']],
    ['x.y.deep.example.com', ['**.deep.example.com']],
    ['a.example.org', ['**.example.org']],
    ['a.b.c.example.org', ['**.example.org']],
    ['example.org', []],
    ['example.net', ['example.net']],
    ['www.example.net', []],
    ['com', []],
  ])('%s → %j', (name, expected) => {
    expect(lookup(name)).toEqual([...expected].sort())
  })
})

describe('CidrTrie', () => {
  const blocks = ['10.0.0.0/8', '10.20.0.0/16', '10.20.30.40/32', '0.0.0.0/0', '2001:db8::/32', '::/0', '10.0.0.0/8', '10.128.0.0/9']
  const trie = new CidrTrie()
  blocks.forEach((c, id) => trie.insert(cidr(c), id))
  const lookup = (address: string) => {
    const out = new Int32Array(blocks.length).fill(99) // scratch is reused; only `count` ids count
    const count = trie.collect(parseIp(address)!.bytes, out, 0)
    return [...out.subarray(0, count)].map((id) => blocks[id]).sort()
  }
  it.each([
    ['10.20.30.40', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8', '10.20.0.0/16', '10.20.30.40/32']],
    ['10.20.30.41', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8', '10.20.0.0/16']],
    ['10.21.0.1', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8']],
    ['10.128.0.1', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8', '10.128.0.0/9']], // expanded inside the second byte
    ['10.255.255.255', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8', '10.128.0.0/9']],
    ['10.127.255.255', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8']],
    ['192.0.2.1', ['0.0.0.0/0']],
    ['::ffff:10.20.0.1', ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/8', '10.20.0.0/16']],
    ['2001:db8::5', ['2001:db8::/32', '::/0']],
    ['2001:db9::5', ['::/0']],
  ])('%s → %j', (address, expected) => {
    expect(lookup(address)).toEqual([...expected].sort())
  })

  it('finds nothing in an empty trie', () => {
    expect(new CidrTrie().collect(parseIp('10.0.0.1')!.bytes, new Int32Array(0), 0)).toBe(0)
  })
})

describe('selectorMatches (Kubernetes semantics)', () => {
  const sel = (s: Partial<LabelSelector>): LabelSelector => ({ matchLabels: {}, matchExpressions: [], ...s })
  it.each([
    ['empty selects all', sel({}), {}, true],
    ['matchLabels hit', sel({ matchLabels: { team: 'platform' } }), { team: 'platform', x: 'y' }, true],
    ['matchLabels value differs', sel({ matchLabels: { team: 'platform' } }), { team: 'data' }, false],
    ['matchLabels key missing', sel({ matchLabels: { team: 'platform' } }), {}, false],
    ['In', sel({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['a', 'b'] }] }), { tier: 'b' }, true],
    ['In missing key', sel({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['a'] }] }), {}, false],
    ['NotIn', sel({ matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['a'] }] }), { tier: 'a' }, false],
    ['NotIn missing key selects', sel({ matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['a'] }] }), {}, true],
    ['Exists', sel({ matchExpressions: [{ key: 'tier', operator: 'Exists', values: [] }] }), { tier: '' }, true],
    ['DoesNotExist', sel({ matchExpressions: [{ key: 'tier', operator: 'DoesNotExist', values: [] }] }), { tier: 'a' }, false],
    ['all must hold', sel({ matchLabels: { team: 'p' }, matchExpressions: [{ key: 'tier', operator: 'Exists', values: [] }] }), { team: 'p' }, false],
    ['inherited keys do not count', sel({ matchExpressions: [{ key: 'toString', operator: 'Exists', values: [] }] }), {}, false],
  ])('%s', (_name, selector, labels, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected)
  })

  it('caches results per frozen identity and per label set', () => {
    const cache = new SelectorCache([sel({ matchLabels: { team: 'p' } })])
    const frozen = Object.freeze({ name: 'a', labels: Object.freeze({ team: 'p' }) })
    expect(cache.resultsFor(frozen)).toBe(cache.resultsFor(frozen))
    expect([...cache.resultsFor({ name: 'b', labels: { team: 'p' } })]).toEqual([1])
    expect([...cache.resultsFor({ name: 'c', labels: { team: 'q' } })]).toEqual([0])
  })
})
