/**
 * The typed wrapper over keel_nft.node: namespace resolution, JSON in/out, and the
 * mapping of libnftables' rc/stderr to KeelError codes. No rule logic lives here.
 */
import { statSync } from 'node:fs'
import path from 'node:path'
import { KeelError } from '@keel/core'
import { NftCommandError } from './errors.js'
import { loadNative, type NativeNft, type NativeRunResult } from './native.js'
import { parseJsonOutput } from './json.js'
import type { NftJsonDocument, NftJsonInput, NftLike, RunOptions } from './types.js'

/** How error messages name a text batch: `batch:LINE:COL: Error: …`. */
const BATCH_NAME = 'batch'

/** Where `ip netns add NAME` puts its namespace files. */
export const NETNS_RUN_DIR = '/run/netns'

export interface NftOptions {
  /**
   * The network namespace every call runs in: a name under /run/netns (as `ip netns`
   * makes them) or a path to a namespace file (anything with a `/`, e.g.
   * `/proc/1234/ns/net`). Each call then runs on a thread of its own that enters the
   * namespace with setns(2); the calling thread's namespace never changes.
   * Omitted: calls run in the calling thread's namespace.
   */
  netns?: string
}

/**
 * Resolve a netns option to a path: a bare name means /run/netns/NAME.
 * @throws TypeError for an empty name, `.`/`..`, or a NUL byte.
 */
export function resolveNetns(netns: string): string {
  if (typeof netns !== 'string' || netns === '' || netns.includes('\0')) {
    throw new TypeError(`netns must be a namespace name or path, got ${JSON.stringify(netns)}`)
  }
  if (netns.includes('/')) return path.resolve(netns)
  if (netns === '.' || netns === '..') throw new TypeError(`netns name ${JSON.stringify(netns)} is not valid`)
  return path.join(NETNS_RUN_DIR, netns)
}

/**
 * libnftables in-process, optionally inside another network namespace.
 *
 * Calls are synchronous (they block the JS thread until the batch is committed), which
 * suits launch-time use; `runAsync`/`runJsonAsync` run on the libuv pool instead.
 * Each call makes and frees its own libnftables context, so an instance holds no
 * native resources and needs no close().
 *
 * @example
 * const nft = new Nft({ netns: 'keel-1234' })
 * nft.run('add table inet keel\nadd chain inet keel out { type filter hook output priority 0; }')
 * const ruleset = nft.runJson({ nftables: [{ list: { ruleset: null } }] })
 */
export class Nft implements NftLike {
  /** The namespace file calls run in, or undefined for the caller's own namespace. */
  readonly netns: string | undefined
  readonly #native: NativeNft

  /**
   * @throws KeelError `ERR_NFT_UNAVAILABLE` if the addon cannot load or the namespace
   *   file does not exist; TypeError for a malformed `netns`.
   */
  constructor(options: NftOptions = {}) {
    this.netns = options.netns === undefined ? undefined : resolveNetns(options.netns)
    if (this.netns !== undefined) {
      try {
        statSync(this.netns)
      } catch (cause) {
        throw new KeelError('ERR_NFT_UNAVAILABLE', `network namespace ${this.netns} does not exist`, { cause })
      }
    }
    this.#native = loadNative()
  }

  /** Run a batch in nft syntax; see {@link NftLike.run}. */
  run(commands: string, options: RunOptions = {}): string {
    assertString(commands)
    return this.#check(this.#native.run(commands, this.#request(false, options))).output
  }

  /** Run a batch in libnftables' JSON schema; see {@link NftLike.runJson}. */
  runJson(doc: NftJsonInput, options: RunOptions = {}): NftJsonDocument {
    const text = stringifyDoc(doc)
    return this.#parse(this.#check(this.#native.run(text, this.#request(true, options))))
  }

  /** {@link run} on the libuv pool; the JS thread does not block. */
  async runAsync(commands: string, options: RunOptions = {}): Promise<string> {
    assertString(commands)
    return this.#check(await this.#native.runAsync(commands, this.#request(false, options))).output
  }

  /** {@link runJson} on the libuv pool; the JS thread does not block. */
  async runJsonAsync(doc: NftJsonInput, options: RunOptions = {}): Promise<NftJsonDocument> {
    const text = stringifyDoc(doc)
    return this.#parse(this.#check(await this.#native.runAsync(text, this.#request(true, options))))
  }

  #request(json: boolean, options: RunOptions) {
    return { json, dryRun: options.dryRun === true, netns: this.netns }
  }

  #check(res: NativeRunResult): NativeRunResult {
    if (res.failedAt !== undefined) {
      throw new KeelError(
        'ERR_NFT_UNAVAILABLE',
        res.failedAt === 'netns'
          ? `cannot enter network namespace ${this.netns}: ${res.error}`
          : `libnftables could not run: ${res.error}`,
      )
    }
    if (res.rc !== 0) throw new NftCommandError(res.rc, batchError(res), this.netns)
    return res
  }

  #parse(res: NativeRunResult): NftJsonDocument {
    try {
      return parseJsonOutput(res.output)
    } catch (cause) {
      throw new KeelError('ERR_NFT_COMMAND', `libnftables printed output that is not a JSON document: ${res.output.slice(0, 200)}`, {
        cause,
      })
    }
  }
}

/** libnftables names the memfd it read in its messages; call it `batch` instead. */
function batchError(res: NativeRunResult): string {
  return res.inputName ? res.error.split(`${res.inputName}:`).join(`${BATCH_NAME}:`) : res.error
}

function assertString(commands: unknown): asserts commands is string {
  if (typeof commands !== 'string') throw new TypeError('commands must be a string in nft syntax')
}

function stringifyDoc(doc: NftJsonInput): string {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { nftables?: unknown }).nftables)) {
    throw new TypeError('runJson takes a libnftables JSON document: { nftables: [...] }')
  }
  return JSON.stringify(doc)
}
