/**
 * The DNS server with core's real policy engine and examples/fake-world.yaml: the
 * decisions the sandbox will make, end to end on loopback.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadPolicy, type CompiledPolicy, type DecisionEvent } from '@keel/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWorld, type World } from '../../../test/world/index.js'
import { SyntheticPool } from './pool.js'
import { listenDnsServer, type DnsServer } from './server.js'
import { dnsQuery } from './transport.js'
import { UpstreamResolver } from './upstream.js'
import { RCode, RRType, extendedErrors } from './wire.js'

const POLICY_PATH = fileURLToPath(new URL('../../../examples/fake-world.yaml', import.meta.url))

describe('DNS decisions under examples/fake-world.yaml', () => {
  let world: World
  let policy: CompiledPolicy
  let pool: SyntheticPool
  let server: DnsServer & { host: string; port: number }
  const events: DecisionEvent[] = []

  beforeAll(async () => {
    world = await startWorld({ dnsOnly: true })
    policy = loadPolicy([{ path: POLICY_PATH, text: readFileSync(POLICY_PATH, 'utf8') }])
    pool = new SyntheticPool()
    server = await listenDnsServer({
      agent: policy.agent('test-agent'),
      decideName: (args) => policy.decideName(args),
      pool,
      upstream: new UpstreamResolver({ servers: { host: '127.0.0.1', port: world.dnsPort }, timeoutMs: 300 }),
      sink: (e) => events.push(e),
    })
  })
  afterAll(async () => {
    await server?.close()
    await world?.stop()
  })

  const ask = (name: string, type: number = RRType.A) => dnsQuery({ host: server.host, port: server.port }, name, type)

  it.each([
    ['api.allowed.test', RCode.NOERROR, undefined],
    ['www.allowed.test', RCode.NOERROR, undefined],
    ['cdn.test', RCode.NOERROR, undefined],
    ['a.cdn.test', RCode.NOERROR, undefined],
    ['echo.test', RCode.NOERROR, undefined],
    ['alias.test', RCode.NOERROR, undefined],
    ['nx.test', RCode.NXDOMAIN, undefined], // allowed, but upstream says it does not exist
    ['x.a.cdn.test', RCode.NXDOMAIN, 'dns_name_denied'], // *.cdn.test is one label only
    ['other.test', RCode.NXDOMAIN, 'dns_name_denied'],
    ['evil.test', RCode.NXDOMAIN, 'deny_policy'],
    ['legacy.test', RCode.NXDOMAIN, 'exception_expired'],
    ['exfil-5365637265742d6b6579.api.allowed.test', RCode.NXDOMAIN, 'dns_name_denied'],
  ])('%s → rcode %i, EDE text %s', async (name, rcode, reason) => {
    world.dns.reset()
    const r = await ask(name)
    expect(r.rcode).toBe(rcode)
    if (reason === undefined) {
      expect(extendedErrors(r)).toEqual([])
      expect(world.dns.count(name, 'A')).toBe(1)
    } else {
      expect(extendedErrors(r)).toEqual([{ infoCode: 15, text: reason }])
      expect(world.dns.queries).toEqual([]) // never forwarded
    }
  })

  it('records who asked, under which route', () => {
    expect(events.find((e) => e.name === 'api.allowed.test')).toMatchObject({
      kind: 'dns',
      agent: 'test-agent',
      verdict: 'allow',
      reason: 'allowed',
      route: 'allowed-api',
    })
    expect(events.find((e) => e.name === 'evil.test')).toMatchObject({ verdict: 'deny', reason: 'deny_policy' })
    expect(pool.nameFor(pool.lookup('a.cdn.test')!.ipv4)).toBe('a.cdn.test')
  })
})
