/**
 * Faults under the real `keel run`: each must leave keel working for the next
 * connection, with a clear reason where one applies.
 *
 * - upstream DNS down (closed port), silent, slow, SERVFAIL, REFUSED: the agent gets
 *   SERVFAIL quickly (keel's resolver gives up after 2 × 1 s), never a hang;
 * - the proxy's upstream refuses, resets, or never completes the handshake (a listener
 *   whose accept queue is full drops SYNs: a dial timeout on loopback without touching any
 *   firewall; the proxy-level tests in packages/proxy cover the same with an injected connect);
 * - thousands of connections: the per-sandbox limit (1,024 by default) with `connection_limit`;
 * - a slowloris holding the ClientHello / request-head peek: `peek_timeout`, others unaffected;
 * - the launcher killed with SIGKILL while another sandbox runs: `keel gc` removes only the
 *   dead one, the live one is not disturbed;
 * - the disk full for the flow log and for the report: the run goes on, the agent's exit
 *   code stands, one clear warning.
 */
import { execFileSync } from 'node:child_process'
import dgram from 'node:dgram'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { World } from '../world/index.js'
import { isRoot, KEEL, keelNamespaces, keelRun, parseTimings, rowsFor, scratchDir, timingAgent, writePolicy } from '../sandbox/harness.js'
import { startFaultWorld, FAULT_POLICY, type FaultWorld } from './fault-world.js'
import { NODE, rows, expectNoLeftovers, sandboxStates, startWorldWhenFree } from './helpers.js'

const AGENTS = join(import.meta.dirname, 'agents')

describe.skipIf(!isRoot)('faults (needs root: network namespaces and nftables)', () => {
  let world: World
  let faults: FaultWorld
  let scratch: ReturnType<typeof scratchDir>
  let faultPolicy: string

  beforeAll(async () => {
    world = await startWorldWhenFree()
    faults = await startFaultWorld()
    scratch = scratchDir('keel-faults-')
    faultPolicy = writePolicy(scratch.path, 'faults.yaml', FAULT_POLICY)
  })
  afterAll(async () => {
    await faults?.stop()
    await world?.stop()
    scratch?.remove()
    expectNoLeftovers()
  })

  const faultRun = (command: string[], flags: string[] = [], timeoutMs = 60_000) =>
    keelRun({ world, dir: scratch.path, policy: faultPolicy, flags: ['--upstream-dns', `127.0.0.1:${faults.dnsPort}`, ...flags], command, timeoutMs })

  it('upstream DNS down (nothing listening): SERVFAIL at once, and keel still answers the rest', async () => {
    // A port that was free a moment ago: nothing answers there (ICMP port unreachable).
    const probe = dgram.createSocket('udp4')
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r))
    const closedPort = probe.address().port
    await new Promise<void>((r) => probe.close(() => r()))

    const r = await keelRun({
      world,
      dir: scratch.path,
      flags: ['--upstream-dns', `127.0.0.1:${closedPort}`],
      command: timingAgent({
        servfail: `dig +tries=1 +time=5 api.allowed.test | grep -q 'status: SERVFAIL'`,
        curlFails: `curl -sS --max-time 5 http://plain.test/; test $? -eq 6`,
        deniedStillNx: `dig +tries=1 +time=5 other.test | grep -q 'status: NXDOMAIN'`,
        proxyStillDenies: `test "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://203.0.113.10/)" = 403`,
      }),
    })
    expect(r.code, r.stderr).toBe(0)
    const t = parseTimings(r.stdout)
    for (const name of ['servfail', 'curlFails', 'deniedStillNx', 'proxyStillDenies']) {
      expect(t.get(name)?.rc, `${name}\n${r.stdout}`).toBe(0)
      expect(t.get(name)!.ms, name).toBeLessThan(1000)
    }
    expect(rowsFor(r.report, 'api.allowed.test')).toEqual([expect.objectContaining({ protocol: 'DNS', reason: 'upstream_dns_failed' })])
    expect(rowsFor(r.report, 'plain.test').every((row) => row.reason === 'upstream_dns_failed')).toBe(true)
    expect(rowsFor(r.report, 'other.test')).toEqual([expect.objectContaining({ reason: 'dns_name_denied' })])
  })

  it('upstream DNS silent, slow, SERVFAIL or REFUSED: SERVFAIL within the resolver budget, then keel works on', async () => {
    const r = await faultRun(
      timingAgent({
        silent: `dig +tries=1 +time=8 silent.fault.test | grep -q 'status: SERVFAIL'`,
        slow: `dig +tries=1 +time=8 +short slow.fault.test | grep -q '^198\\.1[89]\\.'`,
        servfail: `dig +tries=1 +time=8 servfail.fault.test | grep -q 'status: SERVFAIL'`,
        refusing: `dig +tries=1 +time=8 refusing.fault.test | grep -q 'status: SERVFAIL'`,
        next: `curl -sSf --max-time 5 http://ok.fault.test:8080/after-dns-faults`,
      }),
    )
    expect(r.code, r.stderr).toBe(0)
    const t = parseTimings(r.stdout)
    for (const name of ['silent', 'slow', 'servfail', 'refusing', 'next']) expect(t.get(name)?.rc, `${name}\n${r.stdout}`).toBe(0)
    // Two attempts of 1 s each, then SERVFAIL: bounded, not a hang.
    expect(t.get('silent')!.ms).toBeGreaterThan(1500)
    expect(t.get('silent')!.ms).toBeLessThan(3000)
    expect(t.get('slow')!.ms).toBeGreaterThanOrEqual(550) // the 600 ms answer was waited for
    expect(t.get('slow')!.ms).toBeLessThan(1500)
    expect(t.get('servfail')!.ms).toBeLessThan(1000)
    expect(t.get('refusing')!.ms).toBeLessThan(1000)
    for (const name of ['silent.fault.test', 'servfail.fault.test', 'refusing.fault.test']) {
      expect(rowsFor(r.report, name), name).toEqual([expect.objectContaining({ protocol: 'DNS', verdict: 'deny', reason: 'upstream_dns_failed' })])
    }
    expect(faults.okRequests.some((q) => q.path === '/after-dns-faults')).toBe(true)
  })

  it("the proxy's upstream refuses, resets, or never answers the handshake: a clear reason, and the next connection works", async () => {
    await faults.fillBacklog()
    const log = join(scratch.path, 'upstream-faults.jsonl')
    const code = (url: string, max = 5) => `curl -s -o /dev/null -w '%{http_code}' --max-time ${max} ${url}`
    const r = await faultRun(
      timingAgent({
        refused: `test "$(${code('http://refused.fault.test:8080/')})" = 502`,
        // The RST may land before or after keel's dial completes: 502 upstream_connect_failed, or an empty reply.
        resetOnAccept: `c=$(${code('http://reset.fault.test:8080/')}); rc=$?; test "$c" = 502 -o $rc -eq 52 -o $rc -eq 56`,
        resetAfterRequest: `curl -sS --max-time 5 http://reset.fault.test:8081/; rc=$?; test $rc -eq 52 -o $rc -eq 56`,
        dialTimeout: `test "$(${code('http://backlog.fault.test:8080/', 20)})" = 504`,
        next: `curl -sSf --max-time 5 http://ok.fault.test:8080/after-upstream-faults`,
      }),
      ['--log', log],
    )
    expect(r.code, r.stderr).toBe(0)
    const t = parseTimings(r.stdout)
    for (const name of ['refused', 'resetOnAccept', 'resetAfterRequest', 'dialTimeout', 'next']) {
      expect(t.get(name)?.rc, `${name}\n${r.stdout}\n${r.stderr}`).toBe(0)
    }
    expect(t.get('refused')!.ms).toBeLessThan(1000)
    expect(t.get('resetOnAccept')!.ms).toBeLessThan(1000)
    expect(t.get('resetAfterRequest')!.ms).toBeLessThan(1000)
    // keel's dial timeout (10 s by default), then 504 with the reason.
    expect(t.get('dialTimeout')!.ms).toBeGreaterThan(9000)
    expect(t.get('dialTimeout')!.ms).toBeLessThan(13_000)

    expect(rowsFor(r.report, 'refused.fault.test')).toEqual([expect.objectContaining({ verdict: 'deny', reason: 'upstream_connect_failed' })])
    expect(rowsFor(r.report, 'backlog.fault.test')).toEqual([expect.objectContaining({ verdict: 'deny', reason: 'upstream_connect_timeout' })])
    // A reset after the splice began is the upstream's doing: the connection was allowed,
    // and the flow log says how it ended.
    const records = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    const resets = records.filter((x) => x.kind === 'connection' && x.name === 'reset.fault.test')
    expect(resets.map((x) => x.port).sort()).toEqual([8080, 8081])
    for (const x of resets) {
      expect(x.detail).toMatch(/ECONNRESET|EPIPE/)
      if (x.port === 8081) expect(x).toMatchObject({ verdict: 'allow', reason: 'allowed' })
      else expect([x.verdict, x.reason]).toSatisfy(([v, why]: [string, string]) => (v === 'allow' && why === 'allowed') || why === 'upstream_connect_failed')
    }
    expect(records.find((x) => x.kind === 'connection' && x.name === 'refused.fault.test')).toMatchObject({ reason: 'upstream_connect_failed', detail: expect.stringContaining('ECONNREFUSED') })
    expect(records.find((x) => x.kind === 'connection' && x.name === 'backlog.fault.test')).toMatchObject({ reason: 'upstream_connect_timeout' })
    expect(faults.okRequests.some((q) => q.path === '/after-upstream-faults')).toBe(true)
  })

  it('thousands of connections: the per-sandbox limit applies with connection_limit, and frees up again', async () => {
    const count = 1500
    const r = await keelRun({
      world,
      dir: scratch.path,
      command: [NODE, join(AGENTS, 'flood.mjs'), JSON.stringify({ host: 'echo.test', port: 7, count })],
      timeoutMs: 60_000,
    })
    expect(r.code, r.stderr).toBe(0)
    const line = /^FLOOD (.*)$/m.exec(r.stdout)
    expect(line, r.stdout + r.stderr).not.toBeNull()
    const flood = JSON.parse(line![1]!) as { outcomes: Record<string, number>; slowestFailMs: number; after: string }
    // DEFAULT_LIMITS.maxConnections is 1,024 per sandbox; everything beyond is reset at once.
    expect(flood.outcomes.echoed, line![1]).toBe(1024)
    expect((flood.outcomes.reset ?? 0) + (flood.outcomes.closed ?? 0)).toBe(count - 1024)
    expect(flood.slowestFailMs).toBeLessThan(5000)
    expect(flood.after).toBe('echoed')
    const limited = rows(r.report, { reason: 'connection_limit' })
    expect(limited.reduce((n, row) => n + row.count, 0)).toBe(count - 1024)
    expect(limited.every((row) => row.verdict === 'deny' && row.name === 'echo.test' && row.port === 7)).toBe(true)
    const allowed = rowsFor(r.report, 'echo.test').filter((row) => row.verdict === 'allow')
    expect(allowed.reduce((n, row) => n + row.count, 0)).toBe(1024 + 1)
  })

  it('a slowloris holding the peek is cut at the deadline with peek_timeout, and others are served meanwhile', async () => {
    const before = world.http.requests.length
    const each = 20
    const r = await keelRun({
      world,
      dir: scratch.path,
      command: [NODE, join(AGENTS, 'slowloris.mjs'), JSON.stringify({ tls: 'api.allowed.test', http: 'plain.test', each, byteEveryMs: 300 })],
      timeoutMs: 60_000,
    })
    expect(r.code, r.stderr).toBe(0)
    const line = /^SLOWLORIS (.*)$/m.exec(r.stdout)
    expect(line, r.stdout + r.stderr).not.toBeNull()
    const s = JSON.parse(line![1]!) as { outcomes: Record<string, number>; minMs: number; maxMs: number; minSent: number; normal: { outcome: string; ms: number; status: string } }
    // All 40 cut by keel at its 5 s peek deadline (RST), none answered, none left open.
    expect(s.outcomes).toEqual({ reset: 2 * each })
    expect(s.minMs).toBeGreaterThan(4500)
    expect(s.maxMs).toBeLessThan(7000)
    expect(s.minSent).toBeGreaterThan(10) // they really were dribbling
    // The normal request in the middle of it was served at once.
    expect(s.normal).toMatchObject({ outcome: 'ok', status: '200' })
    expect(s.normal.ms).toBeLessThan(1000)
    expect(rows(r.report, { name: 'api.allowed.test', reason: 'peek_timeout' })).toEqual([expect.objectContaining({ count: each })])
    expect(rows(r.report, { name: 'plain.test', reason: 'peek_timeout' })).toEqual([expect.objectContaining({ count: each })])
    // No slow connection was dialed upstream; only the normal request reached the world.
    expect(world.http.requests.slice(before).map((q) => q.path)).toEqual(['/normal'])
  })

  it('a launcher killed with SIGKILL next to a live sandbox: keel gc removes only the dead one, the live one carries on', async () => {
    const gcDone = join(scratch.path, 'gc-done')
    let deadPid = 0
    let livePid = 0
    const dead = keelRun({ world, dir: scratch.path, flags: ['--quiet'], command: ['sleep', '30'], onSpawn: (pid) => (deadPid = pid) })
    // The live agent makes a request every 200 ms until gc has run, then one more (bounded: 150 rounds).
    const live = keelRun({
      world,
      dir: scratch.path,
      flags: ['--quiet'],
      command: [
        'sh',
        '-c',
        `i=0; fails=0; while [ $i -lt 150 ]; do i=$((i+1)); curl -sf --max-time 3 -o /dev/null http://plain.test/live-$i || fails=$((fails+1)); [ -e ${gcDone} ] && break; sleep 0.2; done; curl -sf --max-time 3 -o /dev/null http://plain.test/live-after-gc || fails=$((fails+1)); echo "LIVE rounds=$i fails=$fails"; test $fails -eq 0`,
      ],
      onSpawn: (pid) => (livePid = pid),
      timeoutMs: 60_000,
    })
    const stateOf = (pid: number) => sandboxStates().find((st) => st.launcherPid === pid)
    let deadNetns = ''
    let liveNetns = ''
    try {
      await waitFor(() => {
        const d = stateOf(deadPid)
        const l = stateOf(livePid)
        if (!d || !l || !keelNamespaces().includes(d.netns) || !keelNamespaces().includes(l.netns)) return false
        return agentIn(d.netns, 'sleep')
      }, 10_000)
      deadNetns = stateOf(deadPid)!.netns
      liveNetns = stateOf(livePid)!.netns
      process.kill(deadPid, 'SIGKILL')
      await dead
      expect(keelNamespaces()).toContain(deadNetns) // left behind, with its orphaned agent
      const gc = JSON.parse(execFileSync(process.execPath, [KEEL, 'gc', '--json'], { encoding: 'utf8' })) as {
        removed: { netns?: string }[]
        kept: { id: string; pid: number }[]
        killed: number[]
      }
      // (Other suites' sandboxes on this machine may be listed too; ours are these.)
      expect(gc.removed.map((x) => x.netns)).toContain(deadNetns)
      expect(gc.kept.map((x) => x.pid)).toContain(livePid)
      expect(gc.killed.length).toBeGreaterThanOrEqual(1) // the orphaned `sleep`
      expect(keelNamespaces()).not.toContain(deadNetns)
      expect(keelNamespaces()).toContain(liveNetns)
    } finally {
      writeFileSync(gcDone, '')
    }
    const r = await live
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/LIVE rounds=\d+ fails=0/)
    expect(world.http.requests.some((q) => q.path === '/live-after-gc')).toBe(true)
    expect(keelNamespaces()).not.toContain(liveNetns)
    expect(sandboxStates().filter((st) => st.launcherPid === deadPid || st.launcherPid === livePid)).toEqual([])
  })

  it('a full disk for the flow log or the report: the agent runs, its exit code stands, one clear warning', async () => {
    const agent = ['sh', '-c', 'curl -sSf --max-time 5 -o /dev/null http://plain.test/disk-full && curl -s --max-time 5 http://other.test/; exit 7']
    const logFull = await keelRun({ world, dir: scratch.path, flags: ['--log', '/dev/full'], command: agent })
    expect(logFull.code, logFull.stderr).toBe(7)
    expect(logFull.stderr.match(/the flow log \/dev\/full failed \(ENOSPC/g)).toHaveLength(1)
    expect(logFull.stderr).toMatch(/ALLOW\s+plain\.test:80\/tcp/) // the exit table is still printed
    expect(rowsFor(logFull.report, 'plain.test')).toEqual([expect.objectContaining({ verdict: 'allow' })])

    const reportFull = await keelRun({ world, dir: scratch.path, flags: ['--report', '/dev/full'], command: agent })
    expect(reportFull.code, reportFull.stderr).toBe(7)
    expect(reportFull.stderr).toMatch(/could not write the report \/dev\/full \(ENOSPC/)
    expect(reportFull.stderr).not.toMatch(/internal error/)
    expect(reportFull.stderr).toMatch(/ALLOW\s+plain\.test:80\/tcp/)
    expect(world.http.requests.filter((q) => q.path === '/disk-full')).toHaveLength(2)
  })
})

/** True when a process named `comm` runs in the namespace. */
function agentIn(ns: string, comm: string): boolean {
  let pids: string[] = []
  try {
    pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean)
  } catch {
    return false
  }
  return pids.some((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm
    } catch {
      return false // gone meanwhile
    }
  })
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
