/**
 * Parsers hold against garbage: the ClientHello/SNI parser, the HTTP request-head parser,
 * the first-bytes classifier the proxy's peek decides on, the DNS wire codec, and the
 * sandbox resolver's `handle()` (see targets.ts for the invariants).
 *
 * 1. **Corpus replay** (test/fuzz/corpus/<target>/*.hex|*.bin): malformed inputs written
 *    by hand, seeds, and every crasher ever found. Runs in CI.
 * 2. **Seeded property runs** with fast-check: random bytes, mutations of valid seeds
 *    (bit flips, interesting values, length-field nudges, splices, truncations), and
 *    token soups for HTTP. Each target runs for a bounded time (KEEL_FUZZ_MS, default
 *    4 s) with a fixed seed, so CI is reproducible and bounded (< 60 s in all).
 * 3. **Memory**: heap growth over all of it stays bounded.
 *
 * Coverage-guided fuzzing (jazzer.js) was tried and is not used: its only Linux x64
 * prebuild needs glibc 2.38 (Debian 12 has 2.36), and building it needs downloads from
 * outside the npm registry. See test/fuzz/README.md.
 *
 * Longer runs: `npm run fuzz` (KEEL_FUZZ_MS=120000, a random seed, KEEL_FUZZ_SAVE=1 writes
 * each counterexample into the corpus as crash-<hash>.hex so it is replayed from then on).
 */
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  checkClientHello,
  checkDnsParse,
  checkDnsServer,
  checkFirstBytes,
  checkHttpHead,
  clientHello,
  dnsServerHarness,
  DNS_SEEDS,
  HEAD_SEEDS,
  HELLO_SEEDS,
  mutate,
  rng,
} from './targets.js'

const CORPUS = join(import.meta.dirname, 'corpus')
const FUZZ_MS = Number(process.env.KEEL_FUZZ_MS ?? 4000)
const SEED = process.env.KEEL_FUZZ_SEED === 'random' ? Date.now() % 2 ** 31 : Number(process.env.KEEL_FUZZ_SEED ?? 0x6b65656c)
const SAVE = process.env.KEEL_FUZZ_SAVE === '1'
const ALL_SEEDS = [...HELLO_SEEDS, ...HEAD_SEEDS, ...DNS_SEEDS]

/** Reads `.hex` (hex digits; `#` comments and whitespace ignored) or `.bin` (raw bytes). */
export function readCorpusFile(path: string): Buffer {
  if (path.endsWith('.bin')) return readFileSync(path)
  const hex = readFileSync(path, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join('')
    .replace(/\s+/g, '')
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`${path}: not hex`)
  return Buffer.from(hex, 'hex')
}

function corpus(target: string): { name: string; bytes: Buffer }[] {
  const dir = join(CORPUS, target)
  let files: string[] = []
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.hex') || f.endsWith('.bin'))
  } catch {
    return []
  }
  return files.sort().map((name) => ({ name, bytes: readCorpusFile(join(dir, name)) }))
}

function saveCrasher(target: string, bytes: Buffer, error: unknown): string {
  const name = `crash-${createHash('sha256').update(bytes).digest('hex').slice(0, 12)}.hex`
  mkdirSync(join(CORPUS, target), { recursive: true })
  const hex = bytes.toString('hex').replace(/(.{64})/g, '$1\n')
  writeFileSync(join(CORPUS, target, name), `# found by fuzz.test.ts (seed ${SEED}): ${String((error as Error)?.message ?? error).split('\n')[0]}\n${hex}\n`)
  return name
}

/** Runs a property for FUZZ_MS; on failure saves the (shrunk) counterexample when asked, and fails. */
async function fuzz(target: string, arb: fc.Arbitrary<Buffer>, check: (b: Buffer) => void | Promise<void>): Promise<number> {
  let runs = 0
  let lastYield = performance.now()
  const property = fc.asyncProperty(arb, async (b) => {
    runs++
    await check(b)
    // Let the test runner's own messages through on long runs (the checks are mostly synchronous).
    if (performance.now() - lastYield > 50) {
      await new Promise((r) => setImmediate(r))
      lastYield = performance.now()
    }
  })
  const details = await fc.check(property, { seed: SEED, numRuns: 10_000_000, interruptAfterTimeLimit: FUZZ_MS, markInterruptAsFailure: false, endOnFailure: false })
  console.log(`FUZZ ${target}: ${runs} inputs in ${FUZZ_MS} ms, seed ${SEED}`)
  if (details.failed) {
    const example = details.counterexample?.[0] as Buffer | undefined
    const saved = SAVE && example ? ` (saved as corpus/${target}/${saveCrasher(target, example, details.errorInstance)})` : ''
    const why = (details.errorInstance as Error | undefined)?.message ?? ''
    throw new Error(`${target}: ${why}${saved}\ninput (hex): ${example?.toString('hex')}\n${fc.defaultReportMessage(details) ?? ''}`)
  }
  return runs
}

const bytes = (maxLength: number) => fc.uint8Array({ maxLength }).map((u) => Buffer.from(u))
const mutated = (seeds: readonly Buffer[]) =>
  fc.tuple(fc.nat({ max: seeds.length - 1 }), fc.integer()).map(([i, s]) => mutate(seeds[i]!, rng(s), ALL_SEEDS))

const HTTP_TOKENS = [
  'GET', 'POST', 'CONNECT', 'PRI', 'FOO', ' ', '  ', '\t', '/', '/x?y=1', '*', 'http://', 'https://', 'plain.test', 'evil.test',
  '[::1]', ':80', ':', '@', '%2e', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9', '\r\n', '\n', '\r', 'Host', 'host', 'HOST',
  'Host: plain.test', 'Host:evil.test', 'X-A: b', '\x00', '\x7f', '\xff', '.', '..', '\r\n\r\n',
]
const httpSoup = fc.array(fc.constantFrom(...HTTP_TOKENS), { maxLength: 40 }).map((t) => Buffer.from(t.join(''), 'latin1'))

const label = fc.stringMatching(/^[a-z0-9-]{1,12}$/)
const helloShapes = fc
  .record({
    sni: fc.option(fc.oneof(fc.array(label, { minLength: 1, maxLength: 5 }).map((l) => l.join('.')), fc.string({ maxLength: 40 })), { nil: undefined }),
    alpn: fc.option(fc.array(fc.constantFrom('h2', 'http/1.1', 'x'), { maxLength: 3 }), { nil: undefined }),
    ech: fc.boolean(),
    split: fc.option(fc.integer({ min: 1, max: 200 }), { nil: undefined }),
  })
  .map((o) => {
    const opts: Parameters<typeof clientHello>[0] = { ech: o.ech }
    if (o.sni !== undefined) opts.sni = o.sni
    if (o.alpn !== undefined && o.alpn.length > 0) opts.alpn = o.alpn
    if (o.split !== undefined) opts.split = o.split
    return clientHello(opts)
  })

let gc: (() => void) | undefined
function heapAfterGc(): number {
  if (!gc) {
    setFlagsFromString('--expose-gc')
    gc = runInNewContext('gc') as () => void
  }
  gc()
  return process.memoryUsage().heapUsed
}

describe('fuzz: corpus replay', () => {
  it('every ClientHello in the corpus holds the invariants', () => {
    const files = corpus('client-hello')
    expect(files.length).toBeGreaterThan(10)
    for (const f of files) {
      expect(() => checkClientHello(f.bytes), f.name).not.toThrow()
      expect(() => checkFirstBytes(f.bytes), f.name).not.toThrow()
    }
  })

  it('every HTTP head in the corpus holds the invariants', () => {
    const files = corpus('http-head')
    expect(files.length).toBeGreaterThan(10)
    for (const f of files) {
      expect(() => checkHttpHead(f.bytes), f.name).not.toThrow()
      expect(() => checkFirstBytes(f.bytes), f.name).not.toThrow()
    }
  })

  it('every DNS message in the corpus holds the invariants, parsed and served', async () => {
    const files = corpus('dns')
    expect(files.length).toBeGreaterThan(10)
    const h = dnsServerHarness()
    for (const f of files) {
      expect(() => checkDnsParse(f.bytes), f.name).not.toThrow()
      await expect(checkDnsServer(h, f.bytes), f.name).resolves.toBeUndefined()
    }
  })
})

describe(`fuzz: seeded property runs (seed ${SEED}, ${FUZZ_MS} ms per target)`, () => {
  const timeout = FUZZ_MS * 3 + 30_000
  const heapBefore = heapAfterGc()

  it('ClientHello parser: random bytes, mutated hellos, hello shapes', { timeout }, async () => {
    const runs = await fuzz('client-hello', fc.oneof(bytes(600), mutated(HELLO_SEEDS), helloShapes.chain((h) => fc.integer().map((s) => (s % 3 === 0 ? h : mutate(h, rng(s), ALL_SEEDS))))), (b) => {
      checkClientHello(b)
      checkFirstBytes(b)
    })
    expect(runs).toBeGreaterThan(100)
  })

  it('HTTP head parser: random bytes, mutated heads, token soup', { timeout }, async () => {
    const runs = await fuzz('http-head', fc.oneof(bytes(300), mutated(HEAD_SEEDS), httpSoup), (b) => {
      checkHttpHead(b)
      checkFirstBytes(b)
    })
    expect(runs).toBeGreaterThan(100)
  })

  it('DNS codec and the sandbox resolver: random bytes, mutated queries and responses', { timeout }, async () => {
    const h = dnsServerHarness()
    const runs = await fuzz('dns', fc.oneof(bytes(300), mutated(DNS_SEEDS), mutated(DNS_SEEDS)), async (b) => {
      checkDnsParse(b)
      await checkDnsServer(h, b)
    })
    expect(runs).toBeGreaterThan(100)
    // The resolver under fuzz never asked upstream for a denied name (checked per input),
    // and its counters add up: everything received was answered, dropped, or rejected.
    const c = h.server.counters
    expect(c.received).toBeGreaterThan(0)
    expect(c.answered + c.malformed).toBe(c.received)
  })

  it('memory stays bounded over all the runs', () => {
    const growth = heapAfterGc() - heapBefore
    expect(growth).toBeLessThan(64 * 1024 * 1024)
  })
})
