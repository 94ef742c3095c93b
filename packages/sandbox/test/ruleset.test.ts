/**
 * The sandbox ruleset against the real kernel, in a namespace made as keel run makes it
 * (createNetns): it applies in one batch, and a second apply fails without touching it.
 */
import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { Nft, objectsOf } from '@keel/nftables-napi'
import { createNetns, deleteNetns } from '../src/netns.js'
import { buildRuleset } from '../src/ruleset.js'

const isRoot = process.getuid?.() === 0
const made: string[] = []
afterEach(async () => {
  for (const name of made.splice(0)) await deleteNetns(name)
})

describe.skipIf(!isRoot)('sandbox ruleset (needs root: network namespaces and nftables)', () => {
  it('applies to a new namespace in one batch; a second apply fails and changes nothing', async () => {
    const name = `keel-t-${randomBytes(5).toString('hex')}`
    made.push(name)
    const netns = await createNetns(name)
    const nft = new Nft({ netns: netns.path })
    const batch = buildRuleset({ proxyPort: 15001, dnsPort: 15053 })
    nft.runJson(batch)
    const listed = () => nft.runJson({ nftables: [{ list: { table: { family: 'inet', name: 'keel' } } }] })
    const rulesBefore = objectsOf(listed(), 'rule')
    expect(rulesBefore.length).toBe(batch.nftables.filter((c) => 'add' in c && 'rule' in (c as { add: object }).add).length)
    expect(objectsOf(listed(), 'chain').map((c) => c.name).sort()).toEqual(['filter_output', 'nat_output'])

    expect(() => nft.runJson(batch)).toThrow(/File exists/)
    expect(objectsOf(listed(), 'rule')).toEqual(rulesBefore)
  })
})
