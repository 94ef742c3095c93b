/** The real `dig` (BIND 9) against keel's resolver: what users will see. */
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import type { DecideNameArgs, Decision } from '@keel/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWorld, type World } from '../../../test/world/index.js'
import { SyntheticPool } from './pool.js'
import { listenDnsServer, type DnsServer } from './server.js'
import { UpstreamResolver } from './upstream.js'

const run = promisify(execFile)
const hasDig = ((): boolean => {
  try {
    execFileSync('dig', ['-v'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

const decideName = ({ hostname }: DecideNameArgs): Decision =>
  hostname === 'api.allowed.test' || hostname === 'blackhole.test'
    ? { verdict: 'allow', reason: 'allowed', route: 'world' }
    : { verdict: 'deny', reason: 'dns_name_denied' }

describe.skipIf(!hasDig)('dig against the keel resolver', () => {
  let world: World
  let pool: SyntheticPool
  let server: DnsServer & { host: string; port: number }
  const dig = async (...args: string[]): Promise<string> =>
    (await run('dig', ['@127.0.0.1', '-p', String(server.port), '+time=3', '+tries=1', ...args], { timeout: 10_000 })).stdout

  beforeAll(async () => {
    world = await startWorld({ dnsOnly: true })
    pool = new SyntheticPool()
    server = await listenDnsServer({
      agent: { name: 'coder', labels: {} },
      decideName,
      pool,
      upstream: new UpstreamResolver({ servers: { host: '127.0.0.1', port: world.dnsPort }, timeoutMs: 300 }),
    })
  })
  afterAll(async () => {
    await server?.close()
    await world?.stop()
  })

  it('shows NXDOMAIN with EDE 15 (Blocked) and the reason code for a denied name', async () => {
    const out = await dig('evil.test')
    expect(out).toContain('status: NXDOMAIN')
    expect(out).toContain('EDE: 15 (Blocked): (dns_name_denied)')
    const tcp = await dig('+tcp', 'other.test', 'AAAA')
    expect(tcp).toContain('status: NXDOMAIN')
    expect(tcp).toContain('EDE: 15 (Blocked): (dns_name_denied)')
    expect(world.dns.queries).toEqual([])
  })

  it('gets synthetic addresses over UDP and TCP', async () => {
    const a = (await dig('+short', 'api.allowed.test')).trim()
    expect(a).toMatch(/^198\.1[89]\.\d+\.\d+$/)
    expect((await dig('+tcp', '+short', 'api.allowed.test')).trim()).toBe(a)
    const full = await dig('+tcp', 'api.allowed.test')
    expect(full).toContain('status: NOERROR')
    expect(full).toMatch(/api\.allowed\.test\.\s+60\s+IN\s+A\s+198\.1[89]\./)
    const aaaa = (await dig('+short', 'AAAA', 'api.allowed.test')).trim()
    expect(pool.nameFor(aaaa)).toBe('api.allowed.test')
    expect((await dig('+short', '-x', a)).trim()).toBe('api.allowed.test.')
  })

  it('shows the type denial and the upstream failure', async () => {
    const txt = await dig('TXT', 'api.allowed.test')
    expect(txt).toContain('status: NOERROR')
    expect(txt).toContain('EDE: 15 (Blocked): (dns_query_type_denied)')
    const down = await dig('blackhole.test')
    expect(down).toContain('status: SERVFAIL')
    expect(down).toContain('EDE: 22 (No Reachable Authority): (upstream_dns_failed)')
  })
})
