/** Pure helpers over libnftables' JSON documents (no native code, no root). */
import type { NftChain, NftJsonDocument, NftJsonItem, NftLike, NftRule, NftSet, NftTable } from './types.js'

/**
 * Parse what libnftables printed in JSON mode. It prints one document per command that
 * prints (two `list` commands give two lines), so the documents are merged into one,
 * keeping every item in order. Empty output gives `{ nftables: [] }`.
 * @throws SyntaxError when the output is not JSON documents with an `nftables` array.
 */
export function parseJsonOutput(output: string): NftJsonDocument {
  const text = output.trim()
  if (text === '') return { nftables: [] }
  const docs: unknown[] = []
  try {
    docs.push(JSON.parse(text))
  } catch {
    for (const line of text.split('\n')) {
      if (line.trim() !== '') docs.push(JSON.parse(line))
    }
  }
  const items: NftJsonItem[] = []
  for (const doc of docs) {
    const list = (doc as { nftables?: unknown } | null)?.nftables
    if (!Array.isArray(list)) throw new SyntaxError('libnftables printed JSON without an "nftables" array')
    items.push(...(list as NftJsonItem[]))
  }
  return { nftables: items }
}

/**
 * The whole ruleset of the namespace `nft` works in, as JSON (`nft -j list ruleset`).
 * @example
 * const tables = objectsOf(listRuleset(nft), 'table').map((t) => t.name)
 */
export function listRuleset(nft: NftLike): NftJsonDocument {
  return nft.runJson({ nftables: [{ list: { ruleset: null } }] })
}

interface ObjectKinds {
  table: NftTable
  chain: NftChain
  rule: NftRule
  set: NftSet
  map: NftSet
}

/**
 * The objects of one kind in a document, in order.
 * @example
 * objectsOf(doc, 'chain').find((c) => c.table === 'keel' && c.name === 'output')
 */
export function objectsOf<K extends keyof ObjectKinds>(doc: NftJsonDocument, kind: K): ObjectKinds[K][] {
  const out: ObjectKinds[K][] = []
  for (const item of doc.nftables) {
    if (typeof item === 'object' && item !== null && kind in item) {
      out.push((item as unknown as Record<K, ObjectKinds[K]>)[kind])
    }
  }
  return out
}
