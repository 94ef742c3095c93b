import { existsSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { isKeelError } from '@keel/core'
import { Nft, NftCommandError, listRuleset, objectsOf, type NftJsonDocument } from '../src/index.js'
import { SKIP_REASON, deleteNetns, execInNetns, makeNetns, threadNetns, useNetnsPerTest } from './helpers/netns.js'

const RULESET = `
add table inet keel_t
add chain inet keel_t out { type filter hook output priority 0; policy accept; }
add chain inet keel_t nat_out { type nat hook output priority -100; }
add rule inet keel_t out ip daddr 192.0.2.0/24 counter reject
add rule inet keel_t out meta l4proto udp udp dport 853 counter drop
`

const JSON_RULESET: NftJsonDocument = {
  nftables: [
    { add: { table: { family: 'inet', name: 'keel_j' } } },
    {
      add: {
        chain: { family: 'inet', table: 'keel_j', name: 'out', type: 'filter', hook: 'output', prio: 0, policy: 'accept' },
      },
    },
    {
      add: {
        rule: {
          family: 'inet',
          table: 'keel_j',
          chain: 'out',
          expr: [
            { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 853 } },
            { counter: null },
            { reject: null },
          ],
        },
      },
    },
  ],
}

/** Read the namespace's ruleset with the real `nft` CLI: a check independent of the binding. */
function cliRuleset(ns: string): NftJsonDocument {
  return JSON.parse(execInNetns(ns, 'nft', ['-j', 'list', 'ruleset'])) as NftJsonDocument
}

describe.skipIf(SKIP_REASON !== undefined)(`Nft in a network namespace${SKIP_REASON ? ` (skipped: ${SKIP_REASON})` : ''}`, () => {
  // The calling thread must never move namespace, whatever a test does (checked after each).
  const ns = useNetnsPerTest()

  it('applies a ruleset with run() (netns by name) and lists it back as JSON', () => {
    const nft = new Nft({ netns: ns() })
    expect(nft.netns).toBe(`/run/netns/${ns()}`)
    expect(nft.run(RULESET)).toBe('')

    const doc = listRuleset(nft)
    expect(doc.nftables[0]).toHaveProperty('metainfo')
    expect(objectsOf(doc, 'table').map((t) => t.name)).toEqual(['keel_t'])
    expect(objectsOf(doc, 'chain')).toEqual([
      expect.objectContaining({ name: 'out', type: 'filter', hook: 'output', prio: 0, policy: 'accept' }),
      expect.objectContaining({ name: 'nat_out', type: 'nat', hook: 'output', prio: -100 }),
    ])
    expect(objectsOf(doc, 'rule')).toHaveLength(2)

    // Text listing too, and the real nft CLI sees the same thing in that namespace.
    expect(nft.run('list table inet keel_t')).toMatch(/chain out \{[^}]*ip daddr 192\.0\.2\.0\/24 counter packets 0 bytes 0 reject/s)
    expect(objectsOf(cliRuleset(ns()), 'rule')).toHaveLength(2)
    expect(threadNetns()).toBe(ns.callerNetns())
  })

  it('applies a ruleset with runJson() (netns by path)', () => {
    const nft = new Nft({ netns: `/run/netns/${ns()}` })
    expect(nft.runJson(JSON_RULESET)).toEqual({ nftables: [] })

    const doc = nft.runJson({ nftables: [{ list: { ruleset: null } }] })
    expect(objectsOf(doc, 'table')).toEqual([expect.objectContaining({ family: 'inet', name: 'keel_j' })])
    const rules = objectsOf(doc, 'rule')
    expect(rules).toHaveLength(1)
    expect(rules[0]?.expr).toEqual([
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 853 } },
      { counter: { packets: 0, bytes: 0 } },
      { reject: { type: 'icmpx', expr: 'port-unreachable' } },
    ])
    expect(objectsOf(cliRuleset(ns()), 'table').map((t) => t.name)).toEqual(['keel_j'])
  })

  it('merges the documents of several list commands into one', () => {
    const nft = new Nft({ netns: ns() })
    nft.run(RULESET)
    const doc = nft.runJson({ nftables: [{ list: { tables: null } }, { list: { chains: null } }] })
    expect(objectsOf(doc, 'table')).toHaveLength(1)
    expect(objectsOf(doc, 'chain')).toHaveLength(2)
  })

  it('a failing batch throws libnftables’ message and leaves the ruleset byte-identical', () => {
    const nft = new Nft({ netns: ns() })
    nft.run(RULESET)
    const beforeText = nft.run('list ruleset')
    const beforeJson = JSON.stringify(listRuleset(nft))

    // The first two commands are fine on their own; the third names a chain that does
    // not exist, so the whole batch must be rejected.
    const bad = 'add table inet extra\nadd chain inet keel_t more\nadd rule inet keel_t nochain counter accept\n'
    let err: unknown
    try {
      nft.run(bad)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(NftCommandError)
    const e = err as NftCommandError
    expect(isKeelError(e) && e.code).toBe('ERR_NFT_COMMAND')
    expect(e.rc).not.toBe(0)
    // libnftables' own text, pointing at the offending line of the batch.
    expect(e.nftError).toMatch(/^batch:3:\d+-\d+: Error: Could not process rule: No such file or directory\n/)
    expect(e.nftError).toContain('add rule inet keel_t nochain counter accept\n')
    expect(e.nftError).toMatch(/\n {21}\^{7}\n/)
    expect(e.message).toContain(e.nftError.trim())
    expect(e.netns).toBe(`/run/netns/${ns()}`)

    expect(nft.run('list ruleset')).toBe(beforeText)
    expect(JSON.stringify(listRuleset(nft))).toBe(beforeJson)
    expect(execInNetns(ns(), 'nft', ['list', 'ruleset'])).toBe(beforeText)
  })

  it('a failing JSON batch throws and changes nothing', () => {
    const nft = new Nft({ netns: ns() })
    nft.runJson(JSON_RULESET)
    const before = nft.run('list ruleset')
    const bad = {
      nftables: [
        { add: { table: { family: 'inet', name: 'extra' } } },
        { add: { chain: { family: 'inet', table: 'no_such_table', name: 'c' } } },
      ],
    }
    expect(() => nft.runJson(bad)).toThrow(
      expect.objectContaining({ code: 'ERR_NFT_COMMAND', message: expect.stringMatching(/No such file or directory/) }),
    )
    expect(() => nft.runJson({ nftables: [{ bogus: {} }] })).toThrow(
      expect.objectContaining({ code: 'ERR_NFT_COMMAND', message: expect.stringMatching(/Unknown object|Parsing command array/) }),
    )
    expect(nft.run('list ruleset')).toBe(before)
  })

  it('a syntax error carries the line and the caret markers', () => {
    const nft = new Nft({ netns: ns() })
    expect(() => nft.run('add table inet t\nadd chian inet t c\n')).toThrow(/syntax error[\s\S]*add chian inet t c[\s\S]*\^/)
    expect(nft.run('list ruleset')).toBe('')
  })

  it('dryRun checks a batch without committing it', () => {
    const nft = new Nft({ netns: ns() })
    expect(nft.run(RULESET, { dryRun: true })).toBe('')
    expect(nft.runJson(JSON_RULESET, { dryRun: true })).toEqual({ nftables: [] })
    expect(nft.run('list ruleset')).toBe('')
  })

  it('never moves the calling thread, runs in the namespace, and leaves the host alone', async () => {
    const before = threadNetns()
    const nsInode = statSync(`/run/netns/${ns()}`).ino
    expect(before).not.toBe(`net:[${nsInode}]`)

    const nft = new Nft({ netns: ns() })
    for (let i = 0; i < 5; i++) nft.run(`add table inet t${i}`)
    expect(threadNetns()).toBe(before)

    // The async variants run on the libuv pool, each batch on its own netns thread.
    await Promise.all([
      nft.runAsync('add table inet a1'),
      nft.runJsonAsync({ nftables: [{ add: { table: { family: 'inet', name: 'a2' } } }] }),
      nft.runAsync('add table inet a3'),
    ])
    await expect(nft.runAsync('add rule inet a1 nochain accept')).rejects.toMatchObject({ code: 'ERR_NFT_COMMAND' })
    expect(threadNetns()).toBe(before)

    const names = objectsOf(await nft.runJsonAsync({ nftables: [{ list: { tables: null } }] }), 'table').map((t) => t.name)
    expect(names.sort()).toEqual(['a1', 'a2', 'a3', 't0', 't1', 't2', 't3', 't4'])
    // The tables are in the test namespace, as the real nft CLI sees it. Nothing ran
    // anywhere else: no call is made without the netns option, so the host's ruleset is
    // never read or written by this suite.
    expect(objectsOf(cliRuleset(ns()), 'table')).toHaveLength(8)
  })

  it('without a netns option runs in the caller’s own namespace (checked from a child inside one)', () => {
    const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))
    expect(existsSync(dist), `${dist} is missing: run \`npm run build\` first`).toBe(true)
    const script = `
      import { Nft, listRuleset, objectsOf } from ${JSON.stringify(dist)}
      const nft = new Nft()
      nft.run('add table inet from_child')
      console.log(JSON.stringify(objectsOf(listRuleset(nft), 'table').map((t) => t.name)))
    `
    const out = execInNetns(ns(), process.execPath, ['--input-type=module', '-e', script])
    expect(JSON.parse(out)).toEqual(['from_child'])
    expect(objectsOf(listRuleset(new Nft({ netns: ns() })), 'table').map((t) => t.name)).toEqual(['from_child'])
  })

  it('reports a namespace that does not exist, or is gone, as ERR_NFT_UNAVAILABLE', () => {
    expect(() => new Nft({ netns: 'keel-t-does-not-exist' })).toThrow(
      expect.objectContaining({ code: 'ERR_NFT_UNAVAILABLE', message: expect.stringContaining('/run/netns/keel-t-does-not-exist') }),
    )
    const other = makeNetns()
    const nft = new Nft({ netns: other })
    deleteNetns(other)
    expect(() => nft.run('list ruleset')).toThrow(
      expect.objectContaining({ code: 'ERR_NFT_UNAVAILABLE', message: expect.stringMatching(/cannot enter network namespace .*No such file/) }),
    )
  })

  it('rejects malformed arguments with TypeError', () => {
    expect(() => new Nft({ netns: '' })).toThrow(TypeError)
    expect(() => new Nft({ netns: '..' })).toThrow(TypeError)
    const nft = new Nft({ netns: ns() })
    expect(() => nft.run(42 as unknown as string)).toThrow(TypeError)
    expect(() => nft.run('list ruleset\0')).toThrow(TypeError)
    expect(() => nft.runJson('{"nftables":[]}' as unknown as NftJsonDocument)).toThrow(TypeError)
  })
})
