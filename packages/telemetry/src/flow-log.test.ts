import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { DecisionEvent } from '@keel/core'
import { openFlowLog } from './flow-log.js'
import { combineSinks, createTelemetrySink } from './decision-telemetry.js'

const EVENT: DecisionEvent = {
  time: Date.UTC(2026, 0, 2, 3, 4, 5),
  kind: 'connection',
  agent: 'coder',
  name: 'api.example.com',
  address: '198.18.0.1',
  port: 443,
  protocol: 'TCP',
  verdict: 'deny',
  reason: 'policy_default_deny',
  bytesIn: 0,
  bytesOut: 0,
  durationMs: 3,
}

describe('flow log', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })

  it('writes one JSON line per event with an ISO time', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-flow-'))
    dirs.push(dir)
    const log = openFlowLog({ path: join(dir, 'flows.jsonl') })
    log.sink(EVENT)
    log.sink({ ...EVENT, verdict: 'allow', reason: 'allowed' })
    await log.close()
    const lines = readFileSync(join(dir, 'flows.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatchObject({ time: '2026-01-02T03:04:05.000Z', agent: 'coder', reason: 'policy_default_deny' })
    expect(lines[1]).toMatchObject({ verdict: 'allow', reason: 'allowed' })
    expect(log.stats()).toEqual({ written: 2, failed: false })
  })

  it('reports a full disk once and keeps accepting events without throwing', async () => {
    // /dev/full fails every write with ENOSPC: the disk-full case without filling a disk.
    const errors: Error[] = []
    const log = openFlowLog({ path: '/dev/full', onError: (e) => errors.push(e) })
    for (let i = 0; i < 5; i++) log.sink(EVENT)
    await new Promise((r) => setTimeout(r, 50))
    for (let i = 0; i < 5; i++) expect(() => log.sink(EVENT)).not.toThrow()
    await log.close()
    expect(errors).toHaveLength(1)
    expect((errors[0] as NodeJS.ErrnoException).code).toBe('ENOSPC')
    expect(log.stats().failed).toBe(true)
  })
})

describe('sinks', () => {
  it('the telemetry sink never throws, even without an SDK', () => {
    const sink = createTelemetrySink()
    expect(() => sink(EVENT)).not.toThrow()
  })

  it('combineSinks delivers to every sink even when one throws', () => {
    const seen: string[] = []
    const sink = combineSinks(
      () => seen.push('a'),
      () => {
        throw new Error('broken sink')
      },
      () => seen.push('c'),
    )
    sink(EVENT)
    expect(seen).toEqual(['a', 'c'])
  })
})
