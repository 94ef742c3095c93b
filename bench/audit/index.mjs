#!/usr/bin/env node
// Audit log benchmark: durable appends per second, and verify speed on a 1,000,000-record log.
//
//   node bench/audit/index.mjs [--records 1000000] [--write]
//
// Needs the built package (npx tsc -b packages/audit). Every phase is bounded in count
// and time. --write replaces the "## Audit log (bench/audit)" section of BENCHMARKS.md
// (and only that section).
import { execFile } from 'node:child_process'
import { createHash, generateKeyPairSync } from 'node:crypto'
import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const audit = await import(join(ROOT, 'packages/audit/dist/index.js'))
const WORKER = join(ROOT, 'packages/audit/dist/testing/append-worker.js')
const run = promisify(execFile)

const args = process.argv.slice(2)
const arg = (name, dflt) => {
  const i = args.indexOf(name)
  return i === -1 ? dflt : args[i + 1]
}
const RECORDS = Number(arg('--records', '1000000'))
const WRITE = args.includes('--write')
const BASE = arg('--dir', '/var/tmp')
const REPEAT = Number(arg('--repeat', '3'))

const ev = (i) => ({ event: 'dispatch.egress_bound', reason: 'allowed', actor: 'agent:coder', subject: `api-${i % 97}.test:443`, data: { model: 'claude', tokens: i % 4096 } })
const rate = (n, ms) => Math.round((n * 1000) / ms)
const fmt = (n) => n.toLocaleString('en-US')
const now = () => performance.now()

/** Appends with `lanes` concurrent callers until `max` records or `maxMs`. */
async function appendBench(fsync, { lanes = 1, max, maxMs }) {
  const dir = await mkdtemp(join(BASE, 'keel-bench-audit-'))
  try {
    const log = audit.openAuditLog({ dir, project: 'bench', fsync })
    let n = 0
    const t0 = now()
    const lane = async () => {
      while (n < max && now() - t0 < maxMs) {
        n++
        await log.append(ev(n))
      }
    }
    await Promise.all(Array.from({ length: lanes }, lane))
    const ms = now() - t0
    await log.close()
    const chain = await audit.checkChain(audit.auditLogPath(dir, 'bench'), 'bench')
    if (chain.findings.length || chain.lines !== n) throw new Error(`chain broken after bench: ${JSON.stringify(chain.findings[0])}`)
    return { n, ms, perSec: rate(n, ms) }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** `procs` processes, each appending `per` records with `lanes` concurrent callers. */
async function procBench(fsync, procs, per, lanes) {
  const dir = await mkdtemp(join(BASE, 'keel-bench-audit-'))
  try {
    const t0 = now()
    await Promise.all(
      Array.from({ length: procs }, (_, i) =>
        run(process.execPath, [WORKER, dir, 'bench', String(i), String(per), fsync, String(lanes)], { timeout: 120_000 }),
      ),
    )
    const ms = now() - t0
    const chain = await audit.checkChain(audit.auditLogPath(dir, 'bench'), 'bench')
    if (chain.findings.length || chain.lines !== procs * per) throw new Error('chain broken after multi-process bench')
    return { n: procs * per, ms, perSec: rate(procs * per, ms) }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Writes a valid `n`-record log directly in the stored format (no appender), bounded by n. */
function generateLog(path, project, n) {
  const fd = openSync(path, 'w')
  let prev = audit.genesisHash(project)
  const t = Date.UTC(2025, 0, 1)
  let buf = []
  let bytes = 0
  for (let seq = 1; seq <= n; seq++) {
    const line = audit.encodeRecord({ v: 1, seq, time: new Date(t + seq).toISOString(), project, ...ev(seq), prev })
    prev = createHash('sha256').update(line).digest('hex')
    buf.push(line, '\n')
    bytes += line.length + 1
    if (bytes > 8 << 20) {
      writeSync(fd, buf.join(''))
      buf = []
      bytes = 0
    }
  }
  writeSync(fd, buf.join(''))
  closeSync(fd)
}

async function verifyBench(n) {
  const dir = await mkdtemp(join(BASE, 'keel-bench-audit-'))
  try {
    const key = generateKeyPairSync('ed25519')
    const logPath = audit.auditLogPath(dir, 'bench')
    let t0 = now()
    generateLog(logPath, 'bench', n)
    const genMs = now() - t0
    const size = (await stat(logPath)).size

    // Each verify step runs REPEAT times; the table shows the best and the median (the VM is shared).
    const timed = async (fn) => {
      const times = []
      let last
      for (let i = 0; i < REPEAT; i++) {
        const t = now()
        last = await fn()
        times.push(now() - t)
      }
      times.sort((a, b) => a - b)
      return { best: times[0], median: times[Math.floor(times.length / 2)], last }
    }
    const live = await timed(() => audit.verifyLog({ dir, project: 'bench' }))
    if (!live.last.ok || live.last.records !== n) throw new Error('generated log does not verify')

    const out = join(dir, 'bundle')
    t0 = now()
    await audit.exportBundle({ dir, project: 'bench', key: key.privateKey, out })
    const exportMs = now() - t0

    const ok = await timed(() => audit.verifyBundle({ bundle: out, publicKey: key.publicKey }))
    if (!ok.last.ok) throw new Error('bundle does not verify')

    // Slow path: one record changed in the middle, diagnosed to the exact record.
    const recPath = join(out, 'records.jsonl')
    const text = await readFile(recPath)
    const mid = text.indexOf('"reason":"allowed"', Math.floor(text.length / 2))
    text.write('"reason":"allowes"', mid)
    await writeFile(recPath, text)
    const diag = await timed(() => audit.verifyBundle({ bundle: out, publicKey: key.publicKey }))
    const bad = diag.last
    if (bad.findings.length !== 1 || bad.findings[0].code !== 'record_changed') throw new Error(`unexpected diagnosis ${JSON.stringify(bad.findings)}`)
    return { n, size, genMs, live, exportMs, verify: ok, diag, diagSeq: bad.findings[0].seq }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const results = {}
const loadBefore = loadavg()[0]
console.error('appends: fsync always, 1 caller…')
results.always1 = await appendBench('always', { max: 2000, maxMs: 10_000 })
console.error('appends: fsync always, 64 callers…')
results.always64 = await appendBench('always', { lanes: 64, max: 2000, maxMs: 10_000 })
console.error('appends: fsync batch, 64 callers…')
results.batch64 = await appendBench('batch', { lanes: 64, max: 50_000, maxMs: 10_000 })
console.error('appends: fsync batch, 1 caller…')
results.batch1 = await appendBench('batch', { max: 2000, maxMs: 10_000 })
console.error('appends: fsync never, 64 callers…')
results.never64 = await appendBench('never', { lanes: 64, max: 50_000, maxMs: 10_000 })
console.error('appends: 4 processes, fsync always…')
results.proc4always = await procBench('always', 4, 300, 1)
console.error('appends: 4 processes, fsync batch × 16 callers…')
results.proc4batch = await procBench('batch', 4, 5000, 16)
console.error(`verify: ${fmt(RECORDS)} records…`)
results.verify = await verifyBench(RECORDS)

const v = results.verify
const loadAfter = loadavg()[0]
const t = (x) => `${(x.best / 1000).toFixed(1)} s (${(x.median / 1000).toFixed(1)} s)`
const row = (name, r) => `| ${name} | ${fmt(r.n)} | ${(r.ms / 1000).toFixed(2)} s | **${fmt(r.perSec)}** |`
const section = `## Audit log (bench/audit)

Machine: ${cpus().length}-core ${cpus()[0]?.model ?? 'x86-64'} VM, Debian 12, ext4 on a virtio disk, Node ${process.versions.node}.
Command: \`npx tsc -b packages/audit && node bench/audit/index.mjs --write\` (run ${new Date().toISOString().slice(0, 10)}).
Records are ~${Math.round(v.size / v.n)} bytes (a realistic dispatcher event with a small \`data\` object).
Load average (1 min) ${loadBefore.toFixed(1)} at the start, ${loadAfter.toFixed(1)} at the end: the VM is shared with other
work, so treat the figures as indicative, not as the disk's or CPU's best.

Durable appends (each append resolves only after the fdatasync that covers it, except \`never\`;
every run ends with a full chain check):

| setting | appends | time | appends/s |
| --- | ---: | ---: | ---: |
${row('`fsync: always`, 1 caller (sequential)', results.always1)}
${row('`fsync: always`, 64 concurrent callers', results.always64)}
${row('`fsync: batch` (group commit), 1 caller', results.batch1)}
${row('`fsync: batch` (group commit), 64 concurrent callers', results.batch64)}
${row('`fsync: never` (not durable), 64 callers', results.never64)}
${row('4 processes, `fsync: always`, 1 caller each', results.proc4always)}
${row('4 processes, `fsync: batch`, 16 callers each', results.proc4batch)}

\`always\` costs one fdatasync (plus the lock-file link/unlink) per record, so it runs at
the disk's sync rate whatever the concurrency. \`batch\` gives the same guarantee per
resolved append and amortizes one sync over every append that queued meanwhile.

Verify, ${fmt(v.n)} records (${(v.size / 1e6).toFixed(0)} MB); verify steps best of ${REPEAT} (median in brackets):

| step | time | records/s |
| --- | ---: | ---: |
| generate the log (bench setup) | ${(v.genMs / 1000).toFixed(1)} s | ${fmt(rate(v.n, v.genMs))} |
| \`verifyLog\` (live log: chain from genesis) | ${t(v.live)} | **${fmt(rate(v.n, v.live.best))}** (${fmt(rate(v.n, v.live.median))}) |
| \`exportBundle\` (snapshot under lock, chain check, copy, sign) | ${(v.exportMs / 1000).toFixed(1)} s | ${fmt(rate(v.n, v.exportMs))} |
| \`verifyBundle\` (signature + chain + manifest) | ${t(v.verify)} | **${fmt(rate(v.n, v.verify.best))}** (${fmt(rate(v.n, v.verify.median))}) |
| \`verifyBundle\`, one record changed (fast pass, then full diagnosis: record ${fmt(v.diagSeq)} named) | ${t(v.diag)} | ${fmt(rate(v.n, v.diag.best))} (${fmt(rate(v.n, v.diag.median))}) |

The fast path costs one JSON parse and one SHA-256 per record. The diagnosis reads the
file a second time and walks the chain by hash lookups; it runs only when something is wrong.
With several processes, each commit takes the file lock in turn, so group commits are
smaller and the lock hand-over (polled, 1–4 ms) adds up: one writer process per log
with \`batch\` is the fast setup, and the dispatcher is one.
`

console.log(section)
if (WRITE) {
  const file = join(ROOT, 'BENCHMARKS.md')
  let text = ''
  try {
    text = await readFile(file, 'utf8')
  } catch {
    text = '# Benchmarks\n'
  }
  const start = text.indexOf('## Audit log (bench/audit)')
  if (start === -1) {
    text = `${text.trimEnd()}\n\n${section}`
  } else {
    const next = text.indexOf('\n## ', start + 1)
    text = text.slice(0, start) + section + (next === -1 ? '' : text.slice(next))
  }
  await writeFile(file, text)
  console.error(`wrote ${file}`)
}
