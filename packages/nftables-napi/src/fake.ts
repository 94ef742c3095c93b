/**
 * @module @keel/nftables-napi/fake
 *
 * A FakeNft for unit tests of code that applies rulesets (the sandbox launcher): it
 * implements {@link NftLike}, records every call, and answers from a queue of canned
 * responses or a handler. It loads no native code and needs no root.
 *
 * @example
 * const nft = new FakeNft()
 * nft.respondJson({ nftables: [{ table: { family: 'inet', name: 'keel' } }] })
 * applyRuleset(nft, policy)              // the code under test
 * expect(nft.calls[0]?.kind).toBe('runJson')
 * nft.fail('Error: Could not process rule: No such file or directory')
 * expect(() => applyRuleset(nft, policy)).toThrow(expect.objectContaining({ code: 'ERR_NFT_COMMAND' }))
 */
import { NftCommandError } from './errors.js'
import type { NftJsonDocument, NftJsonInput, NftLike, RunOptions } from './types.js'

/** One recorded call. `input` is the batch text for `run`, the document for `runJson`. */
export type FakeNftCall =
  | { kind: 'run'; input: string; dryRun: boolean }
  | { kind: 'runJson'; input: NftJsonInput; dryRun: boolean }

/** A canned answer: text for `run`, a document for `runJson`, or a failure to throw. */
export type FakeNftResponse =
  | { output: string }
  | { json: NftJsonDocument }
  | { fail: string; rc?: number }
  | { throw: Error }

export interface FakeNftOptions {
  /** The netns the fake pretends to work in; reported on its errors like the real one's. */
  netns?: string
  /**
   * Answers a call when the queue is empty. Return undefined for the default
   * (`''` for `run`, `{ nftables: [] }` for `runJson`).
   */
  handler?: (call: FakeNftCall) => FakeNftResponse | undefined
}

export class FakeNft implements NftLike {
  /** Every call, in order, including the ones that failed. */
  readonly calls: FakeNftCall[] = []
  readonly netns: string | undefined
  readonly #queue: FakeNftResponse[] = []
  readonly #handler: FakeNftOptions['handler']

  constructor(options: FakeNftOptions = {}) {
    this.netns = options.netns
    this.#handler = options.handler
  }

  /** The text of every `run` batch, in order. */
  get commands(): string[] {
    return this.calls.flatMap((c) => (c.kind === 'run' ? [c.input] : []))
  }

  /** The document of every `runJson` batch, in order. */
  get documents(): NftJsonInput[] {
    return this.calls.flatMap((c) => (c.kind === 'runJson' ? [c.input] : []))
  }

  /** Queue an answer for the next call. */
  respond(response: FakeNftResponse): this {
    this.#queue.push(response)
    return this
  }

  /** Queue text output for the next call. */
  respondText(output: string): this {
    return this.respond({ output })
  }

  /** Queue a JSON document for the next call. */
  respondJson(json: NftJsonDocument): this {
    return this.respond({ json })
  }

  /** Make the next call fail as libnftables would, with this message. */
  fail(nftError: string, rc = 1): this {
    return this.respond({ fail: nftError, rc })
  }

  /** Forget calls and queued answers. */
  reset(): void {
    this.calls.length = 0
    this.#queue.length = 0
  }

  run(commands: string, options: RunOptions = {}): string {
    const call: FakeNftCall = { kind: 'run', input: commands, dryRun: options.dryRun === true }
    const res = this.#answer(call)
    if (res === undefined) return ''
    if ('output' in res) return res.output
    return JSON.stringify(res.json)
  }

  runJson(doc: NftJsonInput, options: RunOptions = {}): NftJsonDocument {
    const call: FakeNftCall = { kind: 'runJson', input: structuredClone(doc), dryRun: options.dryRun === true }
    const res = this.#answer(call)
    if (res === undefined) return { nftables: [] }
    if ('json' in res) return structuredClone(res.json)
    return JSON.parse(res.output) as NftJsonDocument
  }

  /** Same as the real binding's async variant. */
  async runAsync(commands: string, options?: RunOptions): Promise<string> {
    return this.run(commands, options)
  }

  /** Same as the real binding's async variant. */
  async runJsonAsync(doc: NftJsonInput, options?: RunOptions): Promise<NftJsonDocument> {
    return this.runJson(doc, options)
  }

  #answer(call: FakeNftCall): { output: string } | { json: NftJsonDocument } | undefined {
    this.calls.push(call)
    const res = this.#queue.shift() ?? this.#handler?.(call)
    if (res === undefined) return undefined
    if ('throw' in res) throw res.throw
    if ('fail' in res) throw new NftCommandError(res.rc ?? 1, res.fail, this.netns)
    return res
  }
}

export type { NftLike } from './types.js'
