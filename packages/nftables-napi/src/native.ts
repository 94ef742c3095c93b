/**
 * The native surface of keel_nft.node, typed once, and its lazy loader.
 *
 * Loading is lazy so that importing this package (for types, `listRuleset`, or the fake)
 * never needs the addon or libnftables; the first `new Nft()` or `originalDestination()`
 * loads it. node-gyp-build looks in build/Release, build/Debug, then prebuilds/.
 */
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { KeelError } from '@keel/core'

/** What the C++ `run` takes besides the batch text. */
export interface NativeRunRequest {
  /** Set NFT_CTX_OUTPUT_JSON: input may be JSON and output is JSON. */
  json: boolean
  dryRun: boolean
  /** Path of a netns file; the batch runs on a worker thread that setns() into it. */
  netns?: string | undefined
}

/** libnftables' answer, as its Python binding's `cmd()` returns it, plus set-up failures. */
export interface NativeRunResult {
  rc: number
  output: string
  error: string
  /** Set when libnftables never ran: entering the netns, starting the thread, or making the context failed. */
  failedAt?: 'netns' | 'thread' | 'ctx'
  /** errno of the failed set-up step, when there is one. */
  errno?: number
  /**
   * The file name libnftables read a text batch from (a memfd, `/proc/self/fd/N`);
   * its error messages start with `NAME:LINE:COL:`.
   */
  inputName?: string
}

export interface NativeOriginalDstOk {
  address: string
  port: number
  family: 4 | 6
  /** The accepted socket's own address (v4-mapped addresses unwrapped) and port. */
  localAddress: string
  localPort: number
}

export interface NativeOriginalDstError {
  errno: number
  syscall: string
  /** AF_* of the socket, when getsockname got that far. */
  socketFamily?: number
}

export type NativeOriginalDst = NativeOriginalDstOk | NativeOriginalDstError

/** One socket for `listenInNetns`. */
export interface NativeSocketSpec {
  tcp: boolean
  family: 4 | 6
  address: string
  port: number
  backlog?: number
}

export type NativeListenResult = { fds: number[] } | { failedAt: string; error: string; errno?: number }

/** What the relay thread tells JS about one relay (src/native/relay.cc, DeliverOutcome). */
export interface NativeRelayEvent {
  kind: 'connected' | 'dialFailed' | 'done'
  bytesOut?: number
  bytesIn?: number
  /** Positive errno of what ended it early; on `dialFailed`, set only when the dial itself did not fail (an abort, the relay's own failure). */
  errno?: number
  syscall?: string
  /** `connected`: the address; `dialFailed`: each attempt's result. */
  text?: string
  /** `dialFailed`: every attempt timed out. */
  timedOut?: boolean
}

/** The addon's exports (src/native/nft.cc, src/native/netns.cc, src/native/relay.cc). */
export interface NativeNft {
  run(commands: string, request: NativeRunRequest): NativeRunResult
  runAsync(commands: string, request: NativeRunRequest): Promise<NativeRunResult>
  originalDst(fd: number): NativeOriginalDst
  listenInNetns(netns: string, specs: NativeSocketSpec[]): NativeListenResult
  removeNetns(path: string): { errno?: number; syscall?: string; error?: string }
  createNetns(path: string, loopbackGsoBytes: number): { loopbackGsoError?: string } | { failedAt: string; error: string; errno?: number }
  /** The socket relay (src/native/relay.cc); see src/relay.ts. */
  relayInit(onEvent: (id: number, event: NativeRelayEvent) => void): unknown
  relayStart(
    engine: unknown,
    agentFd: number,
    addresses: string[],
    port: number,
    dialTimeoutMs: number,
    headOut: Buffer | undefined,
    idleMs: number,
  ): number | { errno: number; syscall: string }
  relayCommit(engine: unknown, id: number, bytes?: Buffer): void
  relayAbort(engine: unknown, id: number): void
  relayStats(engine: unknown): { active: number }
}

/** The package root (the directory with binding.gyp), from src/ or dist/ alike. */
export const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url))

let cached: NativeNft | undefined

/**
 * Load keel_nft.node once.
 * @throws KeelError `ERR_NFT_UNAVAILABLE` with the loader's error as `cause`.
 */
export function loadNative(): NativeNft {
  if (cached) return cached
  const require = createRequire(import.meta.url)
  try {
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown
    cached = nodeGypBuild(PACKAGE_ROOT) as NativeNft
    return cached
  } catch (cause) {
    const why = cause instanceof Error ? cause.message.split('\n')[0] : String(cause)
    throw new KeelError(
      'ERR_NFT_UNAVAILABLE',
      `cannot load keel's libnftables binding (keel_nft.node): ${why}. ` +
        'It needs libnftables (apt-get install libnftables-dev, or run scripts/bootstrap) ' +
        'and a build: npm run build -w @keel/nftables-napi',
      { cause },
    )
  }
}
