#!/usr/bin/env node
// bench/sandbox: what `keel run` costs an agent, against running it directly and against
// srt (@anthropic-ai/sandbox-runtime, bubblewrap + proxies), all in one run:
//
//   1. startup: wall time of `true`, `keel run -- true` and `srt -- true` (spawn to exit);
//   2. per-connection latency: N sequential HTTPS GETs, each on a new connection, timed
//      inside the agent (bench/sandbox/agent.mjs) with process.hrtime;
//   3. bulk: one download of /bytes/<n> (256 MiB by default) per process, over HTTPS and
//      over plain HTTP, several repetitions, MB/s seen by the agent; each path's ratio to
//      direct is the median of its per-repetition ratios.
//
//   npm run build && node bench/sandbox/index.mjs [--write] [--startup-runs 30] [--requests 1000] [--latency-rounds 5]
//                                                 [--bulk-mib 256] [--bulk-reps 5] [--no-srt]
//                                                 [--baseline <other build>/apps/cli/bin/keel.js [--baseline-label <text>]]
//
// --baseline measures a second build of keel beside this one (e.g. the last commit, from
// `git archive HEAD` unpacked and built elsewhere), for before/after figures of a change.
// A C compiler (cc) adds a reference path: bench/sandbox/relay.c, the least relaying the
// bytes through any userspace process costs on this machine.
//
// Needs root (keel makes network namespaces). Everything stays on loopback: the fake world
// (test/dist/world) serves bulk.test on 127.0.0.8 (free ports, so a test run elsewhere on
// the machine cannot collide with it), keel's upstream resolver is the world's DNS server,
// and srt gets IP-literal allow entries only (127.0.0.8:<port>): its agent reaches the
// world through srt's proxy (HTTPS_PROXY, as proxy-aware clients do: CONNECT for HTTPS,
// an absolute-form GET for HTTP), so neither srt nor anything else resolves a name with
// the host's resolver.
//
// keel and srt are both Node programs, so both launchers run with the same small
// environment: PATH, HOME, LANG, and no NODE_OPTIONS / NODE_EXTRA_CA_CERTS / *_PROXY
// (NODE_EXTRA_CA_CERTS pointing at a system bundle costs every Node start tens of ms).
// Startup runs and bulk downloads of the paths are interleaved, in rotating order, so
// drift on a shared machine hits them alike; the latency runs (one per path, as the
// agent's N requests must share one sandbox) go one after the other. Every loop is bounded, and so is the whole run
// (BENCH_DEADLINE_MS, default 5 minutes); every process it starts is killed on the way out.
// Results: printed, written to bench/results/sandbox.json, and with --write to the
// "## Sandbox (bench/sandbox)" section of BENCHMARKS.md (that section only).
import { spawn, execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..', '..')
const KEEL = join(ROOT, 'apps/cli/bin/keel.js')
const WORLD = join(ROOT, 'test/dist/world/index.js')
const SRT = join(ROOT, 'node_modules/@anthropic-ai/sandbox-runtime/dist/cli.js')
const SECTION = '## Sandbox (bench/sandbox)'

const argv = process.argv.slice(2)
const num = (name, dflt, max) => {
  const i = argv.indexOf(`--${name}`)
  const v = i >= 0 ? Number(argv[i + 1]) : dflt
  if (!Number.isFinite(v) || v < 1) throw new Error(`--${name} wants a positive number`)
  return Math.min(Math.floor(v), max)
}
const STARTUP_RUNS = num('startup-runs', 30, 200)
const REQUESTS = num('requests', 1000, 20_000)
const LATENCY_ROUNDS = num('latency-rounds', 5, 50)
const BULK_MIB = num('bulk-mib', 256, 4096)
const BULK_REPS = num('bulk-reps', 5, 20)
const WRITE = argv.includes('--write')
const WITH_SRT = !argv.includes('--no-srt')
/** Another build of keel (its bin/keel.js) measured beside this one, e.g. the last commit's. */
const BASELINE = argv.includes('--baseline') ? argv[argv.indexOf('--baseline') + 1] : undefined
const BASELINE_LABEL = argv.includes('--baseline-label') ? argv[argv.indexOf('--baseline-label') + 1] : BASELINE
const DEADLINE = Date.now() + Number(process.env.BENCH_DEADLINE_MS ?? 5 * 60_000)
const WARMUP_ROUNDS = 2

if (process.getuid?.() !== 0) {
  console.error('bench/sandbox: run as root (keel run creates network namespaces)')
  process.exit(1)
}
for (const [what, path] of [
  ['keel (npm run build)', join(ROOT, 'apps/cli/dist/index.js')],
  ['the fake world (npm run build)', WORLD],
  ...(WITH_SRT ? [['srt (npm install: @anthropic-ai/sandbox-runtime, a devDependency of @keel/test)', SRT]] : []),
  ...(BASELINE !== undefined ? [['the --baseline keel', BASELINE]] : []),
]) {
  if (!existsSync(path)) {
    console.error(`bench/sandbox: ${what} is missing: ${path}`)
    process.exit(1)
  }
}
if (WITH_SRT) {
  for (const tool of ['bwrap', 'socat', 'rg']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    } catch {
      console.error(`bench/sandbox: srt needs ${tool} (scripts/bootstrap installs bubblewrap, socat and ripgrep); or pass --no-srt`)
      process.exit(1)
    }
  }
}

/** The launchers' environment: the same for keel and srt, nothing that changes how Node starts. */
const ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' }

const children = new Set()
let tmp
let world
function killAll() {
  for (const c of children) {
    // Each child leads its own process group (detached), so srt's socat bridges and
    // keel's agent go with it. Only groups this bench started.
    try {
      process.kill(-c.pid, 'SIGKILL')
    } catch {}
  }
  children.clear()
}
process.on('exit', () => {
  killAll()
  if (tmp) rmSync(tmp, { recursive: true, force: true })
})
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130))

function checkDeadline() {
  if (Date.now() > DEADLINE) throw new Error('bench deadline reached (BENCH_DEADLINE_MS); rerun with smaller counts')
}

/** Runs argv to completion, bounded in time; resolves with its output and wall time. */
function run(cmd, { timeoutMs = 60_000, cwd = tmp } = {}) {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(cmd[0], cmd.slice(1), { cwd, env: ENV, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      if (stdout.length < 4_000_000) stdout += d
    })
    child.stderr.on('data', (d) => {
      if (stderr.length < 20_000) stderr += d
    })
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {}
      reject(new Error(`timed out after ${timeoutMs} ms: ${cmd.join(' ').slice(0, 200)}\n${stderr}`))
    }, timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      children.delete(child)
      reject(err)
    })
    child.on('close', (code, signal) => {
      const ms = performance.now() - started
      clearTimeout(timer)
      children.delete(child)
      resolve({ code, signal, stdout, stderr, ms })
    })
  })
}

async function runOk(cmd, options) {
  const r = await run(cmd, options)
  if (r.code !== 0) throw new Error(`exit ${r.code ?? r.signal}: ${cmd.join(' ').slice(0, 300)}\n${r.stderr.slice(-3000)}`)
  return r
}

/**
 * Runs one agent command and returns its BENCH line. A failed run is retried (at most
 * twice) and recorded in `failures`: srt has been seen here to start the command before
 * its in-sandbox proxy listener is up (ECONNREFUSED 127.0.0.1:3128), and to cut a long
 * download short ("aborted"). A keel failure is recorded the same way, never hidden.
 */
async function agentRun(cmd, what, failures, timeoutMs) {
  for (let attempt = 0; ; attempt++) {
    const r = await run(cmd, { timeoutMs })
    if (r.code === 0) return benchLine(r.stdout)
    const why = (r.stderr.match(/agent: (.*)/)?.[1] ?? r.stderr.trim().split('\n').pop() ?? '').slice(0, 200)
    failures.push({ ...what, why })
    console.error(`${what.phase} via ${what.variant}: failed (${why})${attempt < 2 ? ', retrying' : ''}`)
    if (attempt >= 2) throw new Error(`${what.phase} via ${what.variant} failed three times: ${r.stderr.slice(-2000)}`)
    checkDeadline()
  }
}

function benchLine(stdout) {
  const line = stdout.split('\n').find((l) => l.startsWith('BENCH '))
  if (!line) throw new Error(`no BENCH line in agent output: ${stdout.slice(0, 500)}`)
  return JSON.parse(line.slice(6))
}

const sorted = (xs) => [...xs].sort((a, b) => a - b)
const pct = (xs, p) => {
  const s = sorted(xs)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}
const median = (xs) => {
  const s = sorted(xs)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const f1 = (x) => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(1))
const f2 = (x) => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(2))
const rotate = (xs, k) => xs.map((_, i) => xs[(i + k) % xs.length])

function machine() {
  let debian = ''
  try {
    debian = readFileSync('/etc/debian_version', 'utf8').trim()
  } catch {}
  let commit = ''
  try {
    commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
  } catch {}
  return {
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 1024 ** 3),
    debian,
    kernel: release(),
    node: process.version,
    commit,
  }
}

async function main() {
  const startedAt = new Date()
  const loadStart = loadavg()
  tmp = mkdtempSync(join(tmpdir(), 'keel-bench-sandbox-'))
  chmodSync(tmp, 0o755) // the agent runs as nobody inside keel and must read its files here

  const { startWorld } = await import(WORLD)
  world = await startWorld({ ports: { https: 0, http: 0, echo: 0 } })
  const bulk = world.hosts['bulk.test']
  const httpsPort = bulk.ports.https
  const httpPort = bulk.ports.http
  const address = bulk.address // 127.0.0.8

  const ca = join(tmp, 'world-ca.pem')
  copyFileSync(world.ca.path, ca)
  const agentJs = join(tmp, 'agent.mjs')
  copyFileSync(join(HERE, 'agent.mjs'), agentJs)
  for (const f of [ca, agentJs]) chmodSync(f, 0o644)

  const policy = join(tmp, 'bench.yaml')
  writeFileSync(
    policy,
    `apiVersion: keel.dev/v1alpha1
kind: EgressPolicy
metadata: { name: bench-sandbox }
spec:
  defaultPolicy: deny-all
  agents:
    - name: bench
  guardRails:
    # The fake world lives on loopback (see examples/fake-world.yaml).
    unsafeAllowResolvedRanges: ["127.0.0.0/8"]
  routes:
    - name: bulk
      rules:
        - matches:
            - destinationHostnames: ["bulk.test"]
              ports: [{ port: ${httpsPort} }, { port: ${httpPort} }]
              protocol: TCP
`,
  )
  const srtSettings = join(tmp, 'srt-settings.json')
  writeFileSync(
    srtSettings,
    JSON.stringify(
      {
        // IP literals only: srt resolves allowed names with the host's resolver.
        network: { allowedDomains: [`${address}:${httpsPort}`, `${address}:${httpPort}`], deniedDomains: [] },
        filesystem: { denyRead: [], allowRead: [], allowWrite: [], denyWrite: [] },
      },
      null,
      2,
    ),
  )

  // The reference relay (relay.c), when a C compiler is there: one per world port.
  const relayPorts = await startRelays(address, { https: httpsPort, http: httpPort })

  const keelOf = (bin) => (cmd) => [process.execPath, bin, 'run', '--policy', policy, '--agent', 'bench', '--upstream-dns', `${world.dnsAddress}:${world.dnsPort}`, '--user', 'nobody', '-q', '--', ...cmd]
  const keel = keelOf(KEEL)
  const baseline = BASELINE === undefined ? undefined : keelOf(BASELINE)
  const srt = (cmd) => [process.execPath, SRT, '--settings', srtSettings, '--', ...cmd]
  const agent = (...a) => [process.execPath, agentJs, ...a]
  const variants = ['direct', 'keel', ...(baseline ? ['baseline'] : []), ...(WITH_SRT ? ['srt'] : [])]
  // Data-path measurements also go through the reference relay: the floor for any userspace relay here.
  const pathVariants = relayPorts ? [...variants, 'relay'] : variants
  const commonTls = ['--servername', 'bulk.test', '--ca', ca]
  /** The agent command for a variant: keel resolves bulk.test through keel's DNS; srt goes through its proxy. */
  const agentFor = (variant, mode, scheme, extra) => {
    const port = String(scheme === 'https' ? httpsPort : httpPort)
    if (variant === 'direct') return agent(mode, '--scheme', scheme, '--host', address, '--port', port, ...commonTls, ...extra)
    if (variant === 'keel' || variant === 'baseline') {
      return (variant === 'keel' ? keel : baseline)(agent(mode, '--scheme', scheme, '--lookup', '--host', 'bulk.test', '--port', port, ...commonTls, ...extra))
    }
    if (variant === 'relay') return agent(mode, '--scheme', scheme, '--host', '127.0.0.1', '--port', String(relayPorts[scheme]), ...commonTls, ...extra)
    return srt(agent(mode, '--scheme', scheme, '--proxy-env', '--host', address, '--port', port, ...commonTls, ...extra))
  }

  const results = { machine: machine(), startedAt: startedAt.toISOString(), loadStart, settings: { STARTUP_RUNS, REQUESTS, LATENCY_ROUNDS, BULK_MIB, BULK_REPS } }
  results.keelBundled = { start: keelBundleCurrent() }
  if (!results.keelBundled.start) console.error('bench/sandbox: keel is not running from its bundle (run `npm run build`); start-up figures will be those of the unbundled modules')

  const failures = (results.failures = [])
  // Sanity: each path works before anything is timed.
  for (const v of pathVariants) await agentRun(agentFor(v, 'latency', 'https', ['--count', '3', '--warmup', '0']), { phase: 'check', variant: v }, failures, 30_000)

  // 1. Startup.
  console.error(`startup: ${STARTUP_RUNS} runs each of true / keel run -- true${WITH_SRT ? ' / srt -- true' : ''} (+${WARMUP_ROUNDS} warm-up rounds)`)
  const startupCmd = { direct: ['true'], keel: keel(['true']), srt: srt(['true']), ...(baseline ? { baseline: baseline(['true']) } : {}) }
  const startup = Object.fromEntries(variants.map((v) => [v, []]))
  for (let round = 0; round < WARMUP_ROUNDS + STARTUP_RUNS; round++) {
    checkDeadline()
    for (const v of rotate(variants, round)) {
      const r = await runOk(startupCmd[v], { timeoutMs: 30_000 })
      if (round >= WARMUP_ROUNDS) startup[v].push(r.ms)
    }
  }
  results.startup = Object.fromEntries(
    variants.map((v) => [v, { median: median(startup[v]), p10: pct(startup[v], 10), p90: pct(startup[v], 90), runs: startup[v].length }]),
  )
  for (const v of variants) results.startup[v].addedMedian = results.startup[v].median - results.startup.direct.median

  // 2. Per-connection HTTPS latency: REQUESTS sequential GETs per path, in LATENCY_ROUNDS
  // rounds that visit every path in turn, in rotating order (so drift on this shared
  // machine hits all paths alike); each round is one agent run per path (for keel: one
  // `keel run` whose agent makes them all), after 20 untimed GETs. The added time is the
  // median over rounds of (the path's median − direct's median in the same round), as the
  // bulk ratios are paired per repetition; the difference of the overall medians is shown
  // beside it.
  const perRound = Math.ceil(REQUESTS / LATENCY_ROUNDS)
  console.error(`https latency: ${perRound * LATENCY_ROUNDS} sequential GETs per path in ${LATENCY_ROUNDS} rounds, each on a new connection`)
  const latency = Object.fromEntries(pathVariants.map((v) => [v, { samples: [], roundMedians: [] }]))
  for (let round = 0; round < LATENCY_ROUNDS; round++) {
    for (const v of rotate(pathVariants, round)) {
      checkDeadline()
      const o = await agentRun(agentFor(v, 'latency', 'https', ['--count', String(perRound), '--warmup', '20']), { phase: 'https latency', variant: v }, failures, 180_000)
      latency[v].samples.push(...o.samples)
      latency[v].roundMedians.push(median(o.samples))
      if (o.lookupMs !== undefined) latency[v].lookupMs = o.lookupMs
    }
  }
  results.latency = {}
  for (const v of pathVariants) {
    const s = latency[v].samples
    results.latency[v] = {
      requests: s.length,
      median: median(s),
      p90: pct(s, 90),
      p99: pct(s, 99),
      roundMedians: latency[v].roundMedians,
      ...(latency[v].lookupMs !== undefined ? { lookupMs: latency[v].lookupMs } : {}),
    }
  }
  for (const v of pathVariants) {
    const l = results.latency[v]
    const d = results.latency.direct
    Object.assign(l, {
      addedMedian: median(l.roundMedians.map((m, i) => m - d.roundMedians[i])),
      addedMedianOfAll: l.median - d.median,
      addedP90: l.p90 - d.p90,
      addedP99: l.p99 - d.p99,
    })
  }

  // 3. Bulk: one download per process, variants rotated per repetition.
  const bytes = BULK_MIB * 1024 * 1024
  console.error(`bulk: ${BULK_MIB} MiB per download, ${BULK_REPS} repetitions per variant, https and http`)
  results.bulk = {}
  for (const scheme of ['https', 'http']) {
    const runs = Object.fromEntries(pathVariants.map((v) => [v, []]))
    for (let rep = 0; rep < BULK_REPS; rep++) {
      for (const v of rotate(pathVariants, rep)) {
        checkDeadline()
        const o = await agentRun(agentFor(v, 'bulk', scheme, ['--bytes', String(bytes)]), { phase: `bulk ${scheme}`, variant: v }, failures, 120_000)
        runs[v].push(o.mbPerS)
      }
    }
    results.bulk[scheme] = Object.fromEntries(
      pathVariants.map((v) => [v, { medianMBps: median(runs[v]), minMBps: Math.min(...runs[v]), maxMBps: Math.max(...runs[v]), runs: runs[v] }]),
    )
    // Two ratios to direct. `ratio`: the median over repetitions of this path's MB/s over
    // direct's in the same repetition (the paths of one repetition run back to back, so
    // they share the VM's state at that moment; this VM switches between a fast and a slow
    // state for seconds at a time, and a median of 7 taken separately per path can land
    // in different states). `ratioOfMedians`: the two medians' quotient, shown beside it.
    for (const v of pathVariants) {
      const b = results.bulk[scheme]
      b[v].ratio = median(b[v].runs.map((mbps, i) => mbps / b.direct.runs[i]))
      b[v].ratioOfMedians = b[v].medianMBps / b.direct.medianMBps
    }
  }

  results.keelBundled.end = keelBundleCurrent()
  results.loadEnd = loadavg()
  results.finishedAt = new Date().toISOString()
  results.leftoverNamespaces = listKeelNetns()
  results.targets = targets(results)
  return results
}

/**
 * Builds and starts bench/sandbox/relay.c (a blocking read/write TCP relay in C) for each
 * port, listening on 127.0.0.1: the cost of relaying bytes through a userspace process on
 * this machine, with nothing else. Returns the relay ports, or undefined without a C compiler.
 */
async function startRelays(host, ports) {
  const bin = join(tmp, 'relay')
  try {
    execFileSync('cc', ['-O2', '-pthread', '-o', bin, join(HERE, 'relay.c')], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    console.error(`bench/sandbox: no reference relay (cc failed: ${String(err.stderr ?? err.message).trim().split('\n')[0]})`)
    return undefined
  }
  const out = {}
  for (const [scheme, port] of Object.entries(ports)) {
    const child = spawn(bin, ['0', host, String(port)], { stdio: ['ignore', 'pipe', 'ignore'], detached: true })
    children.add(child)
    out[scheme] = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the reference relay did not start')), 5000)
      child.stdout.once('data', (d) => {
        clearTimeout(timer)
        resolve(Number(String(d).trim()))
      })
      child.once('exit', (code) => reject(new Error(`the reference relay exited (${code})`)))
    })
  }
  return out
}

/**
 * Whether `keel` runs from its bundle (apps/cli/dist/keel.cjs with a code cache), as after
 * `npm run build`, or from the unbundled modules (bin/keel.js falls back when a package
 * was rebuilt with a bare `tsc -b` after the bundle): the start-up figures differ a lot.
 */
function keelBundleCurrent() {
  const dist = join(ROOT, 'apps/cli/dist')
  try {
    const manifest = JSON.parse(readFileSync(join(dist, 'keel.json'), 'utf8'))
    const built = statSync(join(dist, 'keel.cjs')).mtimeMs
    return manifest.inputs.every((p) => statSync(join(ROOT, 'apps/cli', p)).mtimeMs <= built)
  } catch {
    return false
  }
}

function listKeelNetns() {
  try {
    return readdirSync('/run/netns').filter((n) => /^keel-[0-9a-f]{10}$/.test(n))
  } catch {
    return []
  }
}

function targets(r) {
  const s = r.startup
  const out = {
    startupUnder150: { met: s.keel.addedMedian <= 150, text: `keel adds ${f1(s.keel.addedMedian)} ms at the median (target < 150 ms)` },
    latencyUnder1ms: {
      met: r.latency.keel.addedMedian <= 1,
      text:
        `keel adds ${f2(r.latency.keel.addedMedian)} ms per new HTTPS connection at the median, paired per round (${f2(r.latency.keel.addedMedianOfAll)} ms between the overall medians; target ≤ 1 ms)` +
        (r.latency.relay ? `; the minimal C relay adds ${f2(r.latency.relay.addedMedian)} ms` : ''),
    },
    bulk09: {
      met: r.bulk.https.keel.ratio >= 0.9,
      text:
        `keel moves ${f2(r.bulk.https.keel.ratio)}x direct throughput over HTTPS, the median of per-repetition ratios (${f2(r.bulk.https.keel.ratioOfMedians)}x as a quotient of medians; ${f2(r.bulk.http.keel.ratio)}x over HTTP; target ≥ 0.9x)` +
        (r.bulk.https.relay ? `; the minimal C relay moves ${f2(r.bulk.https.relay.ratio)}x over HTTPS and ${f2(r.bulk.http.relay.ratio)}x over HTTP` : ''),
    },
  }
  if (s.srt) {
    out.startupHalfOfSrt = {
      met: s.keel.addedMedian <= s.srt.addedMedian / 2,
      text: `keel's added startup is ${f2(s.keel.addedMedian / s.srt.addedMedian)}x srt's (${f1(s.keel.addedMedian)} vs ${f1(s.srt.addedMedian)} ms; target ≤ 0.5x)`,
    }
  }
  return out
}

function tables(r) {
  const variants = Object.keys(r.startup)
  const name = { direct: 'direct', keel: 'keel run', baseline: 'keel run, --baseline build', srt: 'srt', relay: 'reference: minimal C relay' }
  const pathVariants = Object.keys(r.latency)
  const startupName = { direct: '`true`', keel: '`keel run -- true`', baseline: '`keel run -- true`, --baseline build', srt: '`srt -- true`' }
  const lines = []
  lines.push('Startup (wall time, spawn to exit):', '', '| command | median ms | p10 ms | p90 ms | added median ms |', '|---|---:|---:|---:|---:|')
  for (const v of variants) {
    const s = r.startup[v]
    lines.push(`| ${startupName[v]} | ${f1(s.median)} | ${f1(s.p10)} | ${f1(s.p90)} | ${v === 'direct' ? '–' : f1(s.addedMedian)} |`)
  }
  lines.push('', `HTTPS, one request per new connection (${r.latency.direct.requests} sequential GETs of 64 bytes each per path, in ${r.settings.LATENCY_ROUNDS} rounds of one agent run per path in rotating order, each after 20 untimed; timed in the agent). "added median" is the median over rounds of the path's median minus direct's in the same round; the difference of the overall medians follows in brackets:`, '')
  lines.push('| path | median ms | p90 ms | p99 ms | added median ms | added p90 ms | added p99 ms |', '|---|---:|---:|---:|---:|---:|---:|')
  for (const v of pathVariants) {
    const l = r.latency[v]
    const dash = v === 'direct'
    lines.push(
      `| ${name[v]} | ${f2(l.median)} | ${f2(l.p90)} | ${f2(l.p99)} | ${dash ? '–' : `${f2(l.addedMedian)} (${f2(l.addedMedianOfAll)})`} | ${dash ? '–' : f2(l.addedP90)} | ${dash ? '–' : f2(l.addedP99)} |`,
    )
  }
  lines.push(
    '',
    `Bulk download of ${r.settings.BULK_MIB} MiB from /bytes/<n> (MB/s = 10^6 bytes/s seen by the agent; median of ${r.settings.BULK_REPS}, min–max). ` +
      '"vs direct" is the median of the per-repetition ratios (each repetition runs every path back to back); the quotient of the two medians follows in brackets:',
    '',
  )
  lines.push('| path | HTTPS MB/s | HTTPS vs direct | HTTP MB/s | HTTP vs direct |', '|---|---:|---:|---:|---:|')
  for (const v of pathVariants) {
    const a = r.bulk.https[v]
    const b = r.bulk.http[v]
    const vs = (x) => (v === 'direct' ? '1.00x' : `${f2(x.ratio)}x (${f2(x.ratioOfMedians)}x)`)
    lines.push(`| ${name[v]} | ${f1(a.medianMBps)} (${f1(a.minMBps)}–${f1(a.maxMBps)}) | ${vs(a)} | ${f1(b.medianMBps)} (${f1(b.minMBps)}–${f1(b.maxMBps)}) | ${vs(b)} |`)
  }
  if (r.failures.length > 0) {
    const by = {}
    for (const f of r.failures) by[`${name[f.variant]} (${f.phase})`] = (by[`${name[f.variant]} (${f.phase})`] ?? 0) + 1
    const what = Object.entries(by).map(([k, n]) => `${k}: ${n}`).join(', ')
    lines.push('', `Agent runs that failed and were run again (not in the figures): ${what}; ${[...new Set(r.failures.map((f) => f.why))].join('; ')}.`)
  }
  return lines.join('\n')
}

function report(r) {
  const m = r.machine
  const la = (x) => x.map((v) => v.toFixed(2)).join(' / ')
  const t = Object.values(r.targets).map((x) => `- ${x.met ? 'met' : '**missed**'}: ${x.text}.`)
  return `${SECTION}

Command: \`npm run build && sudo node bench/sandbox/index.mjs ${argv.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}\` (defaults: ${r.settings.STARTUP_RUNS} startup runs per command after ${WARMUP_ROUNDS} warm-up rounds; ${r.settings.REQUESTS} HTTPS requests per path; ${r.settings.BULK_MIB} MiB × ${r.settings.BULK_REPS} downloads per path and scheme).
Machine: ${m.cores}-core ${m.cpu} VM, ${m.memGiB} GiB, Debian ${m.debian}, kernel ${m.kernel}, Node ${m.node}; keel at ${m.commit || '?'} plus the working tree. Run ${r.startedAt}.
Load average (1 / 5 / 15 min): ${la(r.loadStart)} at the start, ${la(r.loadEnd)} at the end. ${
    r.keelBundled.start && r.keelBundled.end
      ? 'keel ran from its bundle (apps/cli/dist/keel.cjs, with its V8 code cache), as after `npm run build`.'
      : '**keel did not run from its bundle for the whole run** (a package was rebuilt without `npm run build`): its start-up figures are not representative.'
  } The VM is shared with other jobs and noisy: read the ratios, which come from interleaved runs, rather than the absolute figures.
Setup: the fake world (test/world) on loopback, bulk.test = 127.0.0.8 (HTTPS with the test CA, and HTTP). keel: \`keel run --policy <bulk.test only> --upstream-dns <world DNS> --user nobody -q -- <agent>\`; the agent resolves bulk.test once through keel's DNS (a synthetic address), then connects to it. srt ${srtVersion()}: \`srt --settings <allowedDomains: 127.0.0.8:<https port>, 127.0.0.8:<http port>> -- <agent>\` (IP literals only); the agent goes through srt's proxy from HTTPS_PROXY (CONNECT for HTTPS, absolute-form GET for HTTP), which is the only way out of srt's network namespace. direct: the same agent on the host, to 127.0.0.8 with SNI bulk.test. ${BASELINE ? `Baseline: ${BASELINE_LABEL}, run the same way as keel. ` : ''}The agent (bench/sandbox/agent.mjs) is the same Node script everywhere; keel and srt start with the same environment (PATH, HOME, LANG; no NODE_OPTIONS or NODE_EXTRA_CA_CERTS).${r.latency.relay ? ' Reference: bench/sandbox/relay.c, a blocking read/write TCP relay in C on 127.0.0.1 with no policy at all (the agent connects to it, it connects to 127.0.0.8): what relaying the bytes through any userspace process costs on this machine.' : ''}

${tables(r)}

Targets:
${t.join('\n')}
`
}

function srtVersion() {
  try {
    return JSON.parse(readFileSync(join(dirname(SRT), '..', 'package.json'), 'utf8')).version
  } catch {
    return '?'
  }
}

function writeSection(text) {
  const path = join(ROOT, 'BENCHMARKS.md')
  // Read-modify-write in one go: other benches write their own sections of this file.
  const current = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n'
  const start = current.indexOf(`\n${SECTION}\n`)
  let next
  if (start < 0) next = current.replace(/\n*$/, '\n\n') + text
  else {
    const after = current.indexOf('\n## ', start + 1 + SECTION.length)
    next = current.slice(0, start + 1) + text + (after < 0 ? '' : '\n' + current.slice(after + 1))
  }
  const tmpPath = `${path}.sandbox-${process.pid}`
  writeFileSync(tmpPath, next)
  renameSync(tmpPath, path)
}

main()
  .then(async (r) => {
    await world?.stop()
    const text = report(r)
    console.log(text)
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
    writeFileSync(join(ROOT, 'bench/results/sandbox.json'), JSON.stringify(r, null, 2) + '\n')
    if (WRITE) {
      writeSection(text)
      console.error(`wrote the "${SECTION}" section of BENCHMARKS.md`)
    }
    if (r.leftoverNamespaces.length > 0) console.error(`note: keel namespaces present at the end: ${r.leftoverNamespaces.join(', ')}`)
    process.exit(0)
  })
  .catch(async (err) => {
    console.error(`bench/sandbox: ${err?.stack ?? err}`)
    killAll()
    await world?.stop().catch(() => {})
    process.exit(1)
  })
