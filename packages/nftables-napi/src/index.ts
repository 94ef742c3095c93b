/**
 * @module @keel/nftables-napi
 *
 * keel's in-process binding to libnftables (never a shell-out to `nft`), plus the
 * SO_ORIGINAL_DST lookup for redirected connections, plus listening sockets made inside
 * a sandbox's namespace (`listenInNetns`), made and removed in-process (`addNetns`,
 * `removeNetns`), plus a socket relay that dials and moves bytes
 * on a thread of its own (`dialAndRelay`). Batches run atomically, optionally
 * inside another network namespace on a thread of their own.
 *
 * @example
 * import { Nft, listRuleset, originalDestination } from '@keel/nftables-napi'
 * const nft = new Nft({ netns: 'keel-1234' })
 * nft.run('add table inet keel')
 * listRuleset(nft)
 */
export { Nft, NETNS_RUN_DIR, resolveNetns } from './nft.js'
export type { NftOptions } from './nft.js'
export { NftCommandError } from './errors.js'
export { listRuleset, objectsOf, parseJsonOutput } from './json.js'
export { originalDestination, originalDestinationFromFd, socketFd } from './original-dst.js'
export { loadNative } from './native.js'
export { addNetns, listenInNetns, NetnsCreateError, removeNetns } from './netns-sockets.js'
export type { AddNetnsOptions, NetnsSocketSpec } from './netns-sockets.js'
export { dialAndRelay, RelayStartError, relayStats } from './relay.js'
export type { DialOutcome, DialTarget, RelayHandle, RelayOptions, RelayOutcome } from './relay.js'
export type * from './types.js'
