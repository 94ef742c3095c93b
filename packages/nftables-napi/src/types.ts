/**
 * Types shared by the real binding ({@link Nft}) and its fake: the `NftLike` interface
 * consumers program against, and the parts of libnftables' JSON schema (libnftables-json(5))
 * that keel reads or writes. The schema types are deliberately partial: objects keel does
 * not touch are typed loosely rather than guessed at.
 */

/** Options for one batch. */
export interface RunOptions {
  /**
   * Parse and check the batch (including the kernel's checks) without committing it, as
   * `nft --check`. Useful to validate a ruleset before a launch.
   */
  dryRun?: boolean
}

/** What consumers (the sandbox launcher) need from nftables; implemented by `Nft` and `FakeNft`. */
export interface NftLike {
  /**
   * Run a batch written in nft's own syntax, atomically. Returns libnftables' text output
   * (empty for commands that print nothing). Throws a KeelError `ERR_NFT_COMMAND` carrying
   * libnftables' message when the batch fails; the ruleset is then unchanged.
   */
  run(commands: string, options?: RunOptions): string
  /**
   * Run a batch written in libnftables' JSON schema, atomically, and return its parsed JSON
   * output (`{ nftables: [] }` when the commands print nothing).
   */
  runJson(doc: NftJsonInput, options?: RunOptions): NftJsonDocument
}

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev'

/** First item of every JSON document libnftables prints. */
export interface NftMetainfo {
  version: string
  release_name: string
  json_schema_version: number
}

export interface NftTable {
  family: NftFamily
  name: string
  handle?: number
  flags?: string | string[]
}

export type NftChainType = 'filter' | 'nat' | 'route'
export type NftChainHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting' | 'ingress' | 'egress'

export interface NftChain {
  family: NftFamily
  table: string
  name: string
  handle?: number
  /** Base chains only. */
  type?: NftChainType
  hook?: NftChainHook
  /** Listings print a number; input also takes a standard name such as `"filter"` or `"dstnat"`. */
  prio?: number | string
  policy?: 'accept' | 'drop'
  dev?: string
}

/**
 * One statement or expression of a rule, e.g. `{ "match": {…} }`, `{ "counter": null }`,
 * `{ "redirect": { "port": 1234 } }`. The full grammar is in libnftables-json(5); keel's
 * ruleset builder owns the shapes it emits.
 */
export type NftStatement = Record<string, unknown>

export interface NftRule {
  family: NftFamily
  table: string
  chain: string
  handle?: number
  index?: number
  comment?: string
  expr: NftStatement[]
}

export interface NftSet {
  family: NftFamily
  table: string
  name: string
  handle?: number
  type: string | string[]
  map?: string | string[]
  policy?: 'performance' | 'memory'
  flags?: string[]
  elem?: unknown[]
  timeout?: number
  'gc-interval'?: number
  size?: number
}

/** A ruleset object, as listed or as the argument of a command. */
export type NftObject =
  | { table: NftTable }
  | { chain: NftChain }
  | { rule: NftRule }
  | { set: NftSet }
  | { map: NftSet }
  | { element: { family: NftFamily; table: string; name: string; elem: unknown[] } }
  | { counter: { family: NftFamily; table: string; name: string; packets?: number; bytes?: number } }

/** Objects a `list` command names; `null` means "all" (e.g. `{ list: { ruleset: null } }`). */
export type NftListTarget =
  | { ruleset: null }
  | { tables: null }
  | { table: Pick<NftTable, 'family' | 'name'> }
  | { chains: null }
  | { chain: Pick<NftChain, 'family' | 'table' | 'name'> }
  | { sets: null }
  | { set: Pick<NftSet, 'family' | 'table' | 'name'> }
  | { counters: null }
  | Record<string, unknown>

/** Commands of a JSON batch. */
export type NftCommand =
  | { add: NftObject }
  | { create: NftObject }
  | { insert: { rule: NftRule } }
  | { replace: { rule: NftRule } }
  | { delete: NftObject | { table: Pick<NftTable, 'family' | 'name'> } }
  | { flush: NftObject | { ruleset: null } | { table: Pick<NftTable, 'family' | 'name'> } }
  | { list: NftListTarget }
  | { reset: Record<string, unknown> }
  | { rename: { chain: NftChain & { newname: string } } }

/** One item of a JSON document: metainfo (output), an object (output) or a command (input). */
export type NftJsonItem = { metainfo: NftMetainfo } | NftObject | NftCommand

/** A libnftables JSON document. */
export interface NftJsonDocument {
  nftables: NftJsonItem[]
}

/**
 * What `runJson` accepts: a typed document, or any object in libnftables' schema (the
 * types above do not cover every statement; libnftables checks the rest).
 */
export type NftJsonInput = NftJsonDocument | { nftables: readonly unknown[] }

/** Where a redirected connection was originally going. */
export interface OriginalDestination {
  /** IPv4 dotted quad or IPv6 text form, as the client dialed it. */
  address: string
  port: number
  family: 4 | 6
}
