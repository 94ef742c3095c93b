/**
 * The agent as root in its namespace (`keel run --as-root`): it may send ICMP and raw IP,
 * flush keel's ruleset, add links and routes. None of it gets a packet out: the
 * namespace has only `lo` (plus what the agent makes inside it) and no route to the
 * host, so with keel's rules gone nothing answers at all.
 *
 * What --as-root does NOT contain: root in the namespace is root on the host (same
 * mount, PID and user namespaces). It could setns into the host's network namespace or
 * move a link there. That is out of scope here and stated in SECURITY.md; these tests
 * stay inside the sandbox's namespace and never try it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { World } from '../world/index.js'
import { isRoot, publicCa, scratchDir } from '../sandbox/harness.js'
import { expectAllBlocked, rows, runEscape, worldSnapshot, expectNoLeftovers, startWorldWhenFree } from './helpers.js'

describe.skipIf(!isRoot)('hostile agent running as root in its namespace (needs root)', () => {
  let world: World
  let scratch: ReturnType<typeof scratchDir>
  let ca: string

  beforeAll(async () => {
    world = await startWorldWhenFree()
    scratch = scratchDir('keel-hostile-root-')
    ca = publicCa(world, scratch.path)
  })
  afterAll(async () => {
    await world?.stop()
    scratch?.remove()
    expectNoLeftovers()
  })

  it('ICMP and other IP protocols from raw sockets are rejected at once and recorded', async () => {
    const names = ['root_icmp', 'root_icmp6', 'root_raw_protocol', 'root_packet_socket']
    const r = await runEscape(names, { world, dir: scratch.path, flags: ['--as-root'], config: { ca }, timeoutMs: 30_000 })
    expectAllBlocked(r, names)
    // The reject rules drop the locally generated packet: sendto fails with EPERM at once.
    for (const name of ['root_icmp', 'root_icmp6', 'root_raw_protocol']) expect(r.get(name).outcome, name).toBe('EPERM')
    expect(rows(r.report, { address: '203.0.113.1' })).toEqual([expect.objectContaining({ protocol: 'ICMP', verdict: 'deny', reason: 'icmp_not_allowed' })])
    expect(rows(r.report, { address: '2001:db8::1' })).toEqual([expect.objectContaining({ protocol: 'ICMP', verdict: 'deny', reason: 'icmp_not_allowed' })])
    expect(rows(r.report, { address: '203.0.113.2' })).toEqual([expect.objectContaining({ protocol: '253', verdict: 'deny', reason: 'protocol_not_allowed' })])
    // An AF_PACKET frame goes to the one link there is: the namespace's own lo.
    expect(r.get('root_packet_socket')).toMatchObject({ outcome: 'sent-on-lo', links: ['lo'] })
  })

  it('flushing the ruleset, adding a veth pair and routes, deleting the AnyIP routes: still no way out', async () => {
    const before = worldSnapshot(world)
    const names = ['root_flush', 'root_after_flush', 'root_unroute', 'root_after_unroute']
    const r = await runEscape(names, { world, dir: scratch.path, flags: ['--as-root'], config: { ca }, timeoutMs: 60_000 })
    // Timeouts are expected here (routes now point at a veth with nobody behind it); each
    // try is bounded by the agent (2 s, then 1 s), so the attempts are bounded too.
    expectAllBlocked(r, names, { root_after_flush: 10_000, root_after_unroute: 8_000 })

    // The agent really did it all (except `dummy`, which this kernel lacks).
    expect(r.get('root_flush')).toMatchObject({
      steps: expect.objectContaining({ 'nft flush ruleset': 0, 'ip link add kv0 type': 0, 'ip route add default via': 0 }),
      ruleset: '',
    })
    expect(r.get('root_flush').links).toEqual(expect.arrayContaining(['kv0', 'kv1', 'lo']))
    expect(r.get('root_unroute')).toMatchObject({ steps: { 'ip route del local 0.0.0.0/0 dev': 0, 'ip -6 route del local ::/0': 0 } })

    type Try = { outcome: string; status?: number; reason?: string; world?: boolean }
    const afterFlush = r.get('root_after_flush') as unknown as { tries: Record<string, Try>; gotOut: string[] }
    expect(afterFlush.gotOut).toEqual([])
    const t = afterFlush.tries
    // Nothing is redirected any more, and nothing is there: refused locally, or routed into the veth (no answer).
    for (const name of ['world_https', 'world_http', 'world_echo', 'world_dns', 'resolver_udp', 'public_dns_udp', 'public_dns_tcp', 'v6_public']) {
      expect(t[name]?.outcome, name).toBe('refused')
    }
    for (const name of ['public_http', 'public_routed']) expect(t[name]?.outcome, name).toBe('connect-timeout')
    expect(t.getaddrinfo?.outcome).toBe('no-answer')
    expect(t.icmp?.outcome).toMatch(/^(icmp-type-3|timeout)$/) // unreachable, from the veth's own address
    // keel's sockets are still there: its resolver still applies the policy (a synthetic
    // address, now going nowhere), and its proxy reached directly has no destination.
    expect(t.keel_dns_direct).toMatchObject({ rcode: 0 })
    expect(t.synthetic_after_flush?.outcome).toBe('refused')
    expect(t.keel_proxy_direct).toMatchObject({ status: 403, reason: 'http_connect_not_allowed' })

    const afterUnroute = r.get('root_after_unroute') as unknown as { tries: Record<string, Try>; gotOut: string[] }
    expect(afterUnroute.gotOut).toEqual([])
    for (const [name, v] of Object.entries(afterUnroute.tries)) {
      expect(v.outcome, name).toMatch(/^(refused|timeout|connect-timeout|connect-ENETUNREACH|connect-EHOSTUNREACH|icmp-type-3|EHOSTUNREACH|ENETUNREACH)$/)
    }

    // Nothing reached the world; its resolver saw only the allowed name keel itself asked for.
    const after = worldSnapshot(world)
    expect(after.http).toBe(before.http)
    expect(after.echo).toBe(before.echo)
    expect(after.dns.slice(before.dns.length).every((n) => n === 'api.allowed.test')).toBe(true)
    // keel says it could not read its counters (the agent deleted them), and still exits cleanly.
    expect(r.stderr).toMatch(/could not read the sandbox's reject counters/)
    expect(rows(r.report, { reason: 'http_connect_not_allowed' })).toHaveLength(1)
  })
})
