import { describe, expect, it } from 'vitest'
import { isKeelError } from '@keel/core'
import { FakeNft } from './fake.js'
import { NftCommandError } from './errors.js'

describe('FakeNft', () => {
  it('records every call and answers with defaults', () => {
    const nft = new FakeNft()
    expect(nft.run('add table inet keel')).toBe('')
    expect(nft.runJson({ nftables: [{ list: { ruleset: null } }] }, { dryRun: true })).toEqual({ nftables: [] })
    expect(nft.calls).toEqual([
      { kind: 'run', input: 'add table inet keel', dryRun: false },
      { kind: 'runJson', input: { nftables: [{ list: { ruleset: null } }] }, dryRun: true },
    ])
    expect(nft.commands).toEqual(['add table inet keel'])
    expect(nft.documents).toHaveLength(1)
  })

  it('answers from the queue first, then from the handler', () => {
    const nft = new FakeNft({ handler: (call) => (call.kind === 'run' ? { output: `handled ${call.input}` } : undefined) })
    nft.respondText('first').respondJson({ nftables: [{ table: { family: 'inet', name: 'x' } }] })
    expect(nft.run('a')).toBe('first')
    expect(nft.runJson({ nftables: [] })).toEqual({ nftables: [{ table: { family: 'inet', name: 'x' } }] })
    expect(nft.run('b')).toBe('handled b')
  })

  it('fails like the real binding: ERR_NFT_COMMAND carrying the message', () => {
    const nft = new FakeNft({ netns: '/run/netns/keel-1' }).fail('Error: Could not process rule: No such file or directory')
    let err: unknown
    try {
      nft.run('add rule inet keel nochain accept')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(NftCommandError)
    expect(isKeelError(err) && err.code).toBe('ERR_NFT_COMMAND')
    expect((err as NftCommandError).message).toBe(
      'nft batch failed in /run/netns/keel-1: Error: Could not process rule: No such file or directory',
    )
    expect(nft.calls).toHaveLength(1)
    expect(nft.run('next')).toBe('')
  })

  it('throws a given error as is, and has async variants', async () => {
    const boom = new Error('boom')
    const nft = new FakeNft().respond({ throw: boom })
    await expect(nft.runAsync('x')).rejects.toBe(boom)
    await expect(nft.runJsonAsync({ nftables: [] })).resolves.toEqual({ nftables: [] })
  })

  it('keeps its own copy of recorded documents and of canned answers', () => {
    const answer = { nftables: [{ table: { family: 'inet' as const, name: 'x' } }] }
    const nft = new FakeNft().respondJson(answer).respondJson(answer)
    const doc = { nftables: [{ list: { ruleset: null } }] }
    nft.runJson(doc).nftables.length = 0
    doc.nftables.length = 0
    expect(nft.runJson({ nftables: [] })).toEqual(answer)
    expect(nft.documents[0]).toEqual({ nftables: [{ list: { ruleset: null } }] })
  })

  it('resets', () => {
    const nft = new FakeNft().respondText('x')
    nft.run('a')
    nft.respondText('y')
    nft.reset()
    expect(nft.calls).toEqual([])
    expect(nft.run('b')).toBe('')
  })
})
