import { describe, expect, it } from 'vitest'
import { FakeNft } from './fake.js'
import { listRuleset, objectsOf, parseJsonOutput } from './json.js'
import type { NftJsonDocument } from './types.js'

const META = { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } }

describe('parseJsonOutput', () => {
  it('gives an empty document for empty output', () => {
    expect(parseJsonOutput('')).toEqual({ nftables: [] })
    expect(parseJsonOutput('\n')).toEqual({ nftables: [] })
  })

  it('parses one document', () => {
    const doc = { nftables: [META, { table: { family: 'inet', name: 'keel', handle: 1 } }] }
    expect(parseJsonOutput(`${JSON.stringify(doc)}\n`)).toEqual(doc)
  })

  it('merges the one-per-line documents of several commands, in order', () => {
    const a = { nftables: [META, { table: { family: 'inet', name: 'a', handle: 1 } }] }
    const b = { nftables: [META, { chain: { family: 'inet', table: 'a', name: 'c', handle: 2 } }] }
    expect(parseJsonOutput(`${JSON.stringify(a)}\n${JSON.stringify(b)}\n`)).toEqual({
      nftables: [...a.nftables, ...b.nftables],
    })
  })

  it.each([['not json'], ['{"other": []}'], ['null'], ['{"nftables": []}\n[]']])('rejects %j', (text) => {
    expect(() => parseJsonOutput(text)).toThrow(SyntaxError)
  })
})

describe('objectsOf', () => {
  const doc: NftJsonDocument = {
    nftables: [
      META,
      { table: { family: 'inet', name: 'keel' } },
      { chain: { family: 'inet', table: 'keel', name: 'out', type: 'filter', hook: 'output', prio: 0 } },
      { rule: { family: 'inet', table: 'keel', chain: 'out', expr: [{ accept: null }] } },
      { chain: { family: 'inet', table: 'keel', name: 'nat_out' } },
    ],
  }

  it('picks the objects of one kind, in order', () => {
    expect(objectsOf(doc, 'chain').map((c) => c.name)).toEqual(['out', 'nat_out'])
    expect(objectsOf(doc, 'table')).toEqual([{ family: 'inet', name: 'keel' }])
    expect(objectsOf(doc, 'rule')[0]?.expr).toEqual([{ accept: null }])
    expect(objectsOf(doc, 'set')).toEqual([])
  })
})

describe('listRuleset', () => {
  it('sends `list ruleset` as JSON and returns the answer', () => {
    const answer: NftJsonDocument = { nftables: [META, { table: { family: 'inet', name: 'keel' } }] }
    const nft = new FakeNft().respondJson(answer)
    expect(listRuleset(nft)).toEqual(answer)
    expect(nft.documents).toEqual([{ nftables: [{ list: { ruleset: null } }] }])
  })
})
