#!/usr/bin/env node
// Policy engine benchmark: decisions per second on one core (one Node thread) for
// policies of 10, 1,000 and 10,000 routes: a realistic mix of exact names, `*.` and
// `**.` wildcards, IPv4 and IPv6 CIDRs, port ranges and sourceAgents selectors.
// Queries are a fixed random mix of hits and misses (70% hostnames, 30% literal
// IPs), 65,536 distinct ones, each with its own strings.
//
//   npx tsc -b packages/core && node bench/policy/index.mjs   (20-45 s; stops adding rounds at 45 s)
//   node bench/policy/index.mjs --quick                        (smoke run, a few seconds)
//   node bench/policy/index.mjs --sizes 10,10000
//
// Targets (issue): >= 1,000,000 decisions/s at 10,000 routes, and per-decision time
// at 10,000 routes no more than 1.5x that at 10 routes.
import os from 'node:os'
import v8 from 'node:v8'
import vm from 'node:vm'
import { stringify } from 'yaml'
import { loadPolicy } from '@keel/core'

// Collect the garbage of loading (the YAML AST of a 10,000-route file is large)
// before measuring, as a long-running sandbox would long since have done.
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

const QUICK = process.argv.includes('--quick')
const sizesArg = process.argv.indexOf('--sizes')
const SIZES = sizesArg > 0 ? process.argv[sizesArg + 1].split(',').map(Number) : [10, 1_000, 10_000]
const QUERIES = 1 << 16 // distinct destinations cycled through (masked index, no modulo)
const ITERATIONS = QUICK ? 200_000 : 1_000_000
const ROUNDS = QUICK ? 2 : 12
/** Stop starting new rounds after this long, so the whole run stays under a minute. */
const TIME_BUDGET_MS = 45_000
const NOW = Date.parse('2026-06-01T00:00:00Z')
/** Share of queries by hostname (the rest are literal IPs). */
const BY_NAME = 0.7

// A small deterministic PRNG (mulberry32), so every run measures the same work.
function rng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const V4_PREFIXES = [8, 12, 16, 16, 20, 22, 24, 24, 24, 24, 28, 32, 32, 32]
const WORDS = ['api', 'cdn', 'auth', 'data', 'edge', 'img', 'static', 'files', 'login', 'metrics', 'uploads', 'search']
const TLDS = ['com', 'io', 'net', 'org', 'dev']

function makePolicy(routeCount, random) {
  const pick = (list) => list[Math.floor(random() * list.length)]
  const domain = (i) => `${pick(WORDS)}${i}.${pick(WORDS)}.${pick(TLDS)}`
  const routes = []
  const hits = { names: [], addresses: [] }
  // Kinds, ports and selectors follow fixed cycles (strides 1, 3 and 7, so they do
  // not line up), giving every policy size the same mix; names and addresses are
  // random. Per 10 routes: 4 exact names, 2 `*.`, 1 `**.`, 2 IPv4 and 1 IPv6 CIDR.
  for (let i = 0; i < routeCount; i++) {
    const kind = i % 10
    const match = {}
    if (kind < 4) {
      const name = domain(i)
      match.destinationHostnames = [name]
      hits.names.push(name)
    } else if (kind < 6) {
      const suffix = domain(i)
      match.destinationHostnames = [`*.${suffix}`]
      hits.names.push(`${pick(WORDS)}.${suffix}`)
    } else if (kind < 7) {
      const suffix = domain(i)
      match.destinationHostnames = [`**.${suffix}`]
      hits.names.push(`${pick(WORDS)}.${pick(WORDS)}.${suffix}`)
    } else if (kind < 9) {
      // IPv4 blocks with the prefix lengths real allowlists use (cloud and office ranges, single hosts).
      const prefix = pick(V4_PREFIXES)
      const addr = [1 + Math.floor(random() * 222), Math.floor(random() * 256), Math.floor(random() * 256), Math.floor(random() * 256)]
      const bytes = addr.map((b, j) => (j * 8 >= prefix ? 0 : j * 8 + 8 > prefix ? b & (0xff << (8 - (prefix - j * 8))) & 0xff : b))
      match.destinationCIDRs = [`${bytes.join('.')}/${prefix}`]
      hits.addresses.push(`${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3] | (prefix < 32 ? 1 : 0)}`)
    } else {
      const prefix = pick([32, 48, 56, 64, 64, 128])
      const group = (i & 0xffff).toString(16)
      const base = prefix === 32 ? `2001:${group}::` : `2001:db8:${group}::`
      match.destinationCIDRs = [prefix === 128 ? `${base}${(i % 0xffff).toString(16)}/128` : `${base}/${prefix}`]
      hits.addresses.push(prefix === 128 ? `${base}${(i % 0xffff).toString(16)}` : `${base}${Math.floor(random() * 0xffff).toString(16)}`)
    }
    // Per 10 routes: 5 port 443, 2 port 443 plus 8000-8099, 3 every port; 3 with a selector.
    const ports = (i * 3) % 10
    if (ports < 5) match.ports = [{ port: 443 }]
    else if (ports < 7) match.ports = [{ port: 443 }, { startPort: 8000, endPort: 8099 }]
    const selector = (i * 7) % 10
    if (selector < 3) match.sourceAgents = { matchLabels: { team: selector < 2 ? 'platform' : 'data' } }
    const route = { name: `r${i}`, rules: [{ matches: [match] }] }
    if (i % 20 === 13) Object.assign(route, { owner: 'platform-team', expires: i % 40 === 13 ? '2026-01-01T00:00:00Z' : '2027-01-01T00:00:00Z' })
    routes.push(route)
  }
  const denyPolicies = routes.filter((_, i) => i % 100 === 7).map((r) => ({ name: `deny-${r.name}`, targetRef: { route: r.name } }))
  const spec = {
    agents: [{ name: 'coder', labels: { team: 'platform' } }, { name: 'analyst', labels: { team: 'data' } }],
    routes,
    ...(denyPolicies.length > 0 && { denyPolicies }),
  }
  const text = stringify({ apiVersion: 'keel.dev/v1alpha1', kind: 'EgressPolicy', metadata: { name: `bench-${routeCount}` }, spec })
  return { text, hits }
}

/**
 * Each query gets its own freshly allocated strings, as a proxy gets them from
 * every packet it parses: a small policy must not win by looking up the same
 * ten hot string objects over and over.
 */
const fresh = (text) => Buffer.from(text, 'latin1').toString('latin1')

function makeQueries(policy, hits, random) {
  const pick = (list) => list[Math.floor(random() * list.length)]
  const agents = [policy.agent('coder'), policy.agent('analyst')]
  const queries = new Array(QUERIES)
  for (let i = 0; i < QUERIES; i++) {
    const hit = random() < 0.5
    const byName = random() < BY_NAME
    const port = random() < 0.7 ? 443 : random() < 0.5 ? 8042 : 22
    let target
    if (byName) target = { hostname: fresh(hit ? pick(hits.names) : `${pick(WORDS)}${Math.floor(random() * 1e6)}.${pick(WORDS)}.${pick(TLDS)}`) }
    else if (hit && hits.addresses.length > 0) target = { address: fresh(pick(hits.addresses)) }
    else target = { address: random() < 0.8 ? `${1 + Math.floor(random() * 222)}.${Math.floor(random() * 256)}.${Math.floor(random() * 256)}.${Math.floor(random() * 256)}` : `2001:db9::${Math.floor(random() * 0xffff).toString(16)}` }
    queries[i] = { agent: pick(agents), ...target, port, protocol: 'TCP', now: NOW }
  }
  return queries
}

function measure(policy, queries, iterations) {
  let allowed = 0
  const mask = QUERIES - 1
  const start = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) {
    if (policy.decide(queries[i & mask]).verdict === 'allow') allowed++
  }
  const ns = Number(process.hrtime.bigint() - start)
  return { nsPerDecision: ns / iterations, allowed: allowed / iterations }
}

// Load every size first, then measure them in interleaved rounds, so that whatever
// else the machine is doing disturbs every size alike; each size reports its best
// round (the least disturbed) and its median.
const setups = SIZES.map((size) => {
  const random = rng(size)
  const { text, hits } = makePolicy(size, random)
  const loadStart = process.hrtime.bigint()
  const policy = loadPolicy([{ path: `bench-${size}.yaml`, text }])
  const loadMs = Number(process.hrtime.bigint() - loadStart) / 1e6
  return { size, policy, queries: makeQueries(policy, hits, random), loadMs, runs: [] }
})
gc()
for (const s of setups) measure(s.policy, s.queries, Math.min(ITERATIONS, 500_000)) // warm-up: let the JIT settle
const started = Date.now()
let rounds = 0
while (rounds < ROUNDS && (rounds < 3 || Date.now() - started < TIME_BUDGET_MS)) {
  for (const s of setups) s.runs.push(measure(s.policy, s.queries, ITERATIONS))
  rounds++
}
const rows = setups.map(({ size, loadMs, runs }) => {
  runs.sort((a, b) => a.nsPerDecision - b.nsPerDecision)
  return { size, loadMs, ...runs[0], medianNs: runs[Math.floor(runs.length / 2)].nsPerDecision }
})

const fmt = (n) => Math.round(n).toLocaleString('en-US')
const header = ['routes', 'decisions/s (best)', 'ns/decision (best)', 'ns/decision (median)', 'allowed', 'load+compile']
const lines = rows.map((r) => [fmt(r.size), fmt(1e9 / r.nsPerDecision), r.nsPerDecision.toFixed(0), r.medianNs.toFixed(0), `${(r.allowed * 100).toFixed(0)}%`, `${fmt(r.loadMs)} ms`])
const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
const row = (cells) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(' | ')} |`
console.log(`node ${process.version}, ${ITERATIONS.toLocaleString('en-US')} decisions x ${rounds} interleaved rounds per size, ${QUERIES.toLocaleString('en-US')} distinct queries, load average ${os.loadavg()[0].toFixed(1)}`)
console.log(row(header))
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`)
for (const l of lines) console.log(row(l))
if (rows.length < 3) process.exit(0)
const ratio = rows[2].nsPerDecision / rows[0].nsPerDecision
const rate = 1e9 / rows[2].nsPerDecision
console.log(`\nper-decision time 10,000 / 10 routes: ${ratio.toFixed(2)}x (target <= 1.5x) ${ratio <= 1.5 ? 'ok' : 'MISSED'}`)
console.log(`decisions/s at 10,000 routes: ${fmt(rate)} (target >= 1,000,000) ${rate >= 1e6 ? 'ok' : 'MISSED'}`)
