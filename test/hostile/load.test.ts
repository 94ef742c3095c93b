/**
 * Load: 1,000 concurrent connections through one sandbox for 60 s (agents/load.mjs
 * against the fake world's TCP echo, echo.test:7), every message checked byte for byte.
 * None may be lost, and the launcher's memory must stay flat: its RSS (VmRSS of the
 * `keel run` process, which holds the proxy) is sampled every second from the test.
 *
 * Bounds: 60 s of load (KEEL_LOAD_SECONDS), paced at one 1 KiB message per connection
 * every 200 ms (KEEL_LOAD_INTERVAL_MS; 0 = as fast as the machine goes) so the test does
 * not starve whatever else runs on a 2-core CI machine. Figures: BENCHMARKS.md,
 * "Load (test/hostile)".
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { World } from '../world/index.js'
import { isRoot, keelRun, rowsFor, scratchDir } from '../sandbox/harness.js'
import { expectNoLeftovers, NODE, startWorldWhenFree } from './helpers.js'

const CONNECTIONS = 1000
const SECONDS = Number(process.env.KEEL_LOAD_SECONDS ?? 60)
const INTERVAL_MS = Number(process.env.KEEL_LOAD_INTERVAL_MS ?? 200)
const MESSAGE_BYTES = 1024
const MIB = 1024 * 1024

interface LoadResult {
  connections: number
  connected: number
  failedToConnect: number
  messages: number
  bytesSent: number
  bytesEchoed: number
  corrupt: number
  stalled: number
  closedEarly: number
  errors: Record<string, number>
  elapsedMs: number
  connectMs: number | null
  messagesPerSecond: number
  echoedBytesPerSecond: number
}

/** True when the process has a thread named `name` (/proc/PID/task/TID/comm). */
function hasThread(pid: number, name: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).some((tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === name)
  } catch {
    return false
  }
}

function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

describe.skipIf(!isRoot)('load (needs root: network namespaces and nftables)', () => {
  let world: World
  let scratch: ReturnType<typeof scratchDir>

  beforeAll(async () => {
    world = await startWorldWhenFree()
    scratch = scratchDir('keel-load-')
  })
  afterAll(async () => {
    await world?.stop()
    scratch?.remove()
    expectNoLeftovers()
  })

  it(`holds ${CONNECTIONS} concurrent connections for ${SECONDS} s: none lost, memory flat`, { timeout: (SECONDS + 90) * 1000 }, async () => {
    // The agent (nobody) writes its ready/done markers here.
    const marks = join(scratch.path, 'marks')
    mkdirSync(marks, { mode: 0o777 })
    chmodSync(marks, 0o777)
    const readyFile = join(marks, 'ready')
    const doneFile = join(marks, 'done')
    let pid = 0
    const samples: { t: number; kib: number; ready: boolean; done: boolean; relayThread: boolean }[] = []
    const sampler = setInterval(() => {
      const kib = pid ? rssKiB(pid) : undefined
      if (kib !== undefined) {
        samples.push({ t: Date.now(), kib, ready: existsSync(readyFile), done: existsSync(doneFile), relayThread: hasThread(pid, 'keel-relay') })
      }
    }, 1000)
    let r
    try {
      r = await keelRun({
        world,
        dir: scratch.path,
        command: [
          NODE,
          join(import.meta.dirname, 'agents/load.mjs'),
          JSON.stringify({ host: 'echo.test', port: 7, connections: CONNECTIONS, durationMs: SECONDS * 1000, messageBytes: MESSAGE_BYTES, intervalMs: INTERVAL_MS, readyFile, doneFile }),
        ],
        onSpawn: (p) => (pid = p),
        timeoutMs: (SECONDS + 60) * 1000,
      })
    } finally {
      clearInterval(sampler)
    }
    expect(r.code, r.stderr).toBe(0)
    const line = /^LOAD (.*)$/m.exec(r.stdout)
    expect(line, r.stdout + r.stderr).not.toBeNull()
    const load = JSON.parse(line![1]!) as LoadResult

    // None lost: every connection up for the whole run, every byte echoed back intact.
    expect(load).toMatchObject({ connected: CONNECTIONS, failedToConnect: 0, corrupt: 0, stalled: 0, closedEarly: 0, errors: {} })
    expect(load.bytesEchoed).toBe(load.bytesSent)
    expect(load.messages).toBeGreaterThan(CONNECTIONS * SECONDS) // > 1 message per connection per second
    // keel's own count agrees: one allowed connection each, the same bytes both ways.
    expect(rowsFor(r.report, 'echo.test')).toEqual([
      expect.objectContaining({ verdict: 'allow', reason: 'allowed', count: CONNECTIONS, bytesOut: load.bytesSent, bytesIn: load.bytesEchoed }),
    ])

    // Memory flat: RSS at the start of the load (all connections up), after a warm-up,
    // and at the end (before the agent closes them).
    const during = samples.filter((s) => s.ready && !s.done)
    expect(during.length).toBeGreaterThan(SECONDS / 2)
    // The bytes went through the addon's relay thread, not the JS splice.
    expect(during.every((s) => s.relayThread)).toBe(true)
    const start = during[0]!
    const warm = during.find((s) => s.t >= start.t + 10_000) ?? start
    const end = during[during.length - 1]!
    const peak = Math.max(...during.map((s) => s.kib))
    const summary = {
      connections: CONNECTIONS,
      seconds: Math.round(load.elapsedMs / 1000),
      intervalMs: INTERVAL_MS,
      messageBytes: MESSAGE_BYTES,
      connectMs: load.connectMs,
      messages: load.messages,
      messagesPerSecond: load.messagesPerSecond,
      echoedMiBPerSecondEachWay: Math.round((load.echoedBytesPerSecond / MIB) * 100) / 100,
      rssStartMiB: Math.round(start.kib / 1024),
      rssAfter10sMiB: Math.round(warm.kib / 1024),
      rssEndMiB: Math.round(end.kib / 1024),
      rssPeakMiB: Math.round(peak / 1024),
    }
    console.log(`LOAD SUMMARY ${JSON.stringify(summary)}`)
    // After the warm-up no growth beyond noise, and nothing like a per-message leak overall.
    expect(end.kib - warm.kib).toBeLessThan(16 * 1024)
    expect(peak - start.kib).toBeLessThan(96 * 1024)
  })
})
