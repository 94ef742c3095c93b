/**
 * A hostile agent (agents/escape.py, as `nobody`) tries every way out a security
 * reviewer would, under the real `keel run` against the fake world. Each attempt must
 * fail fast (< 2 s, bounded by explicit timeouts in the agent so a regression fails
 * instead of hanging) and be recorded in the exit report with the right reason; and
 * nothing may reach the world's servers or its DNS except what the policy allows.
 *
 * The cases of test/sandbox/run.test.ts ("denies every way out quickly") are not
 * repeated here. Add a case to agents/escape.py and to a test below whenever a new way
 * out is found. Escape attempts run only inside sandboxes, where every address is local.
 */
import { chownSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { World } from '../world/index.js'
import { isRoot, keelRun, publicCa, rowsFor, scratchDir, writePolicy } from '../sandbox/harness.js'
import { expectAllBlocked, reasonsFor, rows, runEscape, worldSnapshot, expectNoLeftovers, startWorldWhenFree } from './helpers.js'

describe.skipIf(!isRoot)('hostile agent (needs root: network namespaces and nftables)', () => {
  let world: World
  let scratch: ReturnType<typeof scratchDir>
  let ca: string
  let hostService: net.Server
  let hostServiceConnections = 0

  beforeAll(async () => {
    world = await startWorldWhenFree()
    scratch = scratchDir('keel-hostile-')
    ca = publicCa(world, scratch.path)
    // A service on the host's own loopback, in the host namespace.
    hostService = net.createServer((s) => {
      hostServiceConnections++
      s.destroy()
    })
    await new Promise<void>((resolve) => hostService.listen(0, '127.0.0.1', resolve))
  })
  afterAll(async () => {
    await new Promise<void>((resolve) => (hostService ? hostService.close(() => resolve()) : resolve()))
    await world?.stop()
    scratch?.remove()
    expectNoLeftovers()
  })

  const run = (names: string[], config: Record<string, unknown> = {}, extra: { policy?: string; timeoutMs?: number } = {}) =>
    runEscape(names, { world, dir: scratch.path, config: { ca, ...config }, timeoutMs: extra.timeoutMs ?? 60_000, ...(extra.policy ? { policy: extra.policy } : {}) })

  it('raw IP connections and TCP port sweeps: all denied, each port recorded', async () => {
    const before = worldSnapshot(world)
    const names = ['ip_http', 'ip_tls', 'ip_opaque', 'unbound_synthetic', 'sweep_ip', 'sweep_name']
    const r = await run(names)
    // A sweep is 1,023 connections 128 at a time; each one is what must be fast.
    expectAllBlocked(r, names, { sweep_ip: 15_000, sweep_name: 15_000 })

    expect(r.get('ip_http')).toMatchObject({ status: 403, reason: 'policy_default_deny' })
    expect(r.get('ip_tls')).toMatchObject({ alert: 'access_denied' })
    expect(r.get('ip_opaque')).toMatchObject({ outcome: 'reset' })
    expect(r.get('unbound_synthetic')).toMatchObject({ status: 403, reason: 'synthetic_address_unbound' })
    expect(reasonsFor(r.report, '203.0.113.10')).toEqual(['policy_default_deny'])
    expect(reasonsFor(r.report, '198.51.100.20')).toEqual(['policy_default_deny'])
    expect(reasonsFor(r.report, '192.0.2.30')).toEqual(['policy_default_deny'])
    expect(reasonsFor(r.report, '198.18.250.250')).toEqual(['synthetic_address_unbound'])

    for (const sweep of ['sweep_ip', 'sweep_name'] as const) {
      const s = r.get(sweep) as unknown as { outcomes: Record<string, number>; ports: number; slowestMs: number; open: number[] }
      expect(s.open, `${sweep}: ports that did not fail`).toEqual([])
      expect(s.outcomes, sweep).toEqual({ reset: s.ports }) // every port: accepted by keel, then reset
      expect(s.slowestMs, sweep).toBeLessThan(2000)
    }
    // Every port of the sweep is in the report, each with its reason.
    const swept = rows(r.report, { address: '192.0.2.77' })
    expect(swept).toHaveLength(1023)
    expect(swept.every((row) => row.reason === 'policy_default_deny' && row.verdict === 'deny' && row.protocol === 'TCP')).toBe(true)
    const plain = rows(r.report, { name: 'plain.test' })
    expect(plain).toHaveLength(1022)
    expect(plain.every((row) => row.reason === 'policy_default_deny' && row.port !== 80)).toBe(true)

    const after = worldSnapshot(world)
    expect(after.http).toBe(before.http)
    expect(after.echo).toBe(before.echo)
    // The one upstream query is plain.test's, an allowed name.
    expect(after.dns.slice(before.dns.length)).toEqual(['plain.test'])
  })

  it('other resolvers over UDP and TCP, DoT and DoH: keel answers or rejects, nothing reaches a resolver', async () => {
    const before = worldSnapshot(world)
    const names = [
      'udp_resolver_denied',
      'udp_resolver_allowed_is_keel',
      'udp_resolver_odd_port',
      'udp_quic',
      'udp6_resolver_odd_port',
      'tcp_resolver_denied',
      'tcp_resolver_odd_port',
      'dot_ip',
      'dot_allowed_name',
      'doh_ip',
      'doh_name',
      'doh_ip_fronted',
      'dns_direct_keel_port',
    ]
    const r = await run(names)
    expectAllBlocked(r, names)

    // Port 53 to any address is keel's resolver: a denied name is NXDOMAIN with the reason (EDE).
    expect(r.get('udp_resolver_denied')).toMatchObject({ rcode: 3, answers: 0, ede: 'dns_name_denied' })
    expect(r.get('tcp_resolver_denied')).toMatchObject({ rcode: 3, answers: 0, ede: 'dns_name_denied' })
    // ... and an allowed name gets keel's synthetic address, not the "resolver's" answer.
    expect(r.get('udp_resolver_allowed_is_keel')).toMatchObject({ rcode: 0, synthetic: true })
    // keel's own DNS port, reached directly, applies the same policy.
    expect(r.get('dns_direct_keel_port')).toMatchObject({ udp: { rcode: 3, ede: 'dns_name_denied' }, tcp: { rcode: 3, ede: 'dns_name_denied' } })
    expect(rowsFor(r.report, 'other.test')).toEqual([
      expect.objectContaining({ protocol: 'DNS', verdict: 'deny', reason: 'dns_name_denied', count: 4 }),
    ])

    // DNS on other ports: UDP is rejected at once (EPERM from the reject rule), TCP is denied by the proxy.
    for (const name of ['udp_resolver_odd_port', 'udp_quic', 'udp6_resolver_odd_port']) expect(r.get(name).outcome, name).toBe('EPERM')
    expect(rows(r.report, { address: '9.9.9.9', port: 9953 })).toEqual([expect.objectContaining({ protocol: 'UDP', reason: 'udp_not_allowed' })])
    expect(rows(r.report, { address: '8.8.4.4', port: 443 })).toEqual([expect.objectContaining({ protocol: 'UDP', reason: 'udp_not_allowed' })])
    expect(rows(r.report, { address: '2001:4860:4860::8888', port: 5353 })).toEqual([
      expect.objectContaining({ protocol: 'UDP', reason: 'udp_not_allowed' }),
    ])
    expect(r.get('tcp_resolver_odd_port').outcome).toMatch(/^(ECONNRESET|reset|eof)$/)
    expect(rows(r.report, { address: '8.8.8.8', port: 5353 })).toEqual([expect.objectContaining({ protocol: 'TCP', reason: 'policy_default_deny' })])

    // DoT: to an IP literal, and to an allowed name on a port its route does not list.
    expect(r.get('dot_ip')).toMatchObject({ alert: 'access_denied' })
    expect(rows(r.report, { address: '9.9.9.9', port: 853 })).toEqual([expect.objectContaining({ reason: 'policy_default_deny' })])
    expect(r.get('dot_allowed_name')).toMatchObject({ alert: 'access_denied' })
    expect(rows(r.report, { name: 'api.allowed.test', port: 853 })).toEqual([expect.objectContaining({ reason: 'policy_default_deny' })])
    // DoH: by IP (SNI of an allowed name or not), or by a name the policy does not allow.
    expect(r.get('doh_ip')).toMatchObject({ alert: 'access_denied' })
    expect(r.get('doh_ip_fronted')).toMatchObject({ alert: 'access_denied' })
    expect(rows(r.report, { address: '1.1.1.1', port: 443 })).toEqual([expect.objectContaining({ reason: 'policy_default_deny' })])
    expect(rows(r.report, { address: '8.8.8.8', port: 443 })).toEqual([expect.objectContaining({ reason: 'policy_default_deny' })])
    expect(r.get('doh_name')).toMatchObject({ outcome: 'nxdomain' })
    expect(reasonsFor(r.report, 'dns.google')).toEqual(['dns_name_denied'])

    const after = worldSnapshot(world)
    expect(after.http).toBe(before.http)
    expect(after.dns.slice(before.dns.length).every((n) => n === 'api.allowed.test')).toBe(true)
  })

  it('DNS tunnelling through long random subdomains of an allowed parent never reaches the upstream resolver', async () => {
    const marker = `zq${Date.now().toString(36)}`
    const before = worldSnapshot(world)
    const names = ['tunnel_exact_parent', 'tunnel_wildcard_depth', 'tunnel_binary_labels', 'tunnel_txt_allowed']
    const r = await run(names, { marker })
    expectAllBlocked(r, names)
    expect(r.get('tunnel_exact_parent')).toMatchObject({ queries: 30, results: { 'answer:3:dns_name_denied': 30 } })
    expect(r.get('tunnel_wildcard_depth')).toMatchObject({ results: { 'answer:3:dns_name_denied': 10 } })
    expect(r.get('tunnel_binary_labels')).toMatchObject({ results: { 'answer:3:dns_name_denied': 10 } })
    // TXT, NULL, MX, SRV, SVCB, HTTPS, ANY, type 99 for an allowed name: empty NOERROR, never forwarded.
    expect(r.get('tunnel_txt_allowed')).toMatchObject({ results: { 'answer:0:0:dns_query_type_denied': 8 } })

    // Not one of them reached the upstream resolver: it saw nothing at all from this run.
    const upstream = world.dns.queries.slice(before.dns.length)
    expect(upstream.filter((q) => q.name.includes(marker))).toEqual([])
    expect(upstream.filter((q) => q.type !== 'A' && q.type !== 'AAAA')).toEqual([])
    expect(upstream.map((q) => q.name)).toEqual([])
    // Each tunnelled name is in the report, denied.
    const tunnelled = r.report.filter((row) => row.name?.startsWith(marker))
    expect(tunnelled).toHaveLength(50)
    expect(tunnelled.every((row) => row.protocol === 'DNS' && row.reason === 'dns_name_denied')).toBe(true)
  })

  it('IPv6 literals, IPv4-mapped, NAT64, 6to4 and link-local addresses', async () => {
    const names = [
      'v6_literal',
      'v4mapped',
      'v4mapped_metadata',
      'nat64_metadata',
      'sixtofour_metadata',
      'aws_v6_metadata',
      'v6_link_local',
      'v4mapped_loopback',
      'v4mapped_synthetic_other_name',
    ]
    const before = worldSnapshot(world)
    const r = await run(names)
    expectAllBlocked(r, names)
    expect(r.get('v6_literal')).toMatchObject({ status: 403, reason: 'policy_default_deny' })
    expect(reasonsFor(r.report, '2001:db8::10')).toEqual(['policy_default_deny'])
    // An IPv4-mapped destination is decided (and reported) as the IPv4 address it is.
    expect(r.get('v4mapped')).toMatchObject({ status: 403, reason: 'policy_default_deny' })
    expect(reasonsFor(r.report, '203.0.113.9')).toEqual(['policy_default_deny'])
    for (const name of ['v4mapped_metadata', 'nat64_metadata', 'sixtofour_metadata', 'aws_v6_metadata', 'v6_link_local']) {
      expect(r.get(name), name).toMatchObject({ status: 403, reason: 'guard_metadata' })
    }
    expect(reasonsFor(r.report, '169.254.169.254')).toEqual(['guard_metadata'])
    expect(reasonsFor(r.report, '64:ff9b::a9fe:a9fe')).toEqual(['guard_metadata'])
    expect(reasonsFor(r.report, '2002:a9fe:a9fe::1')).toEqual(['guard_metadata'])
    expect(reasonsFor(r.report, 'fd00:ec2::254')).toEqual(['guard_metadata'])
    expect(reasonsFor(r.report, 'fe80::1')).toEqual(['guard_metadata'])
    // ::ffff:127.0.0.7 is the sandbox's own loopback, where nothing listens.
    expect(r.get('v4mapped_loopback')).toMatchObject({ outcome: 'refused' })
    // A synthetic address, IPv4-mapped, is still bound to its name: the Host must match it.
    expect(r.get('v4mapped_synthetic_other_name')).toMatchObject({ status: 403, reason: 'host_mismatch' })
    expect(rows(r.report, { name: 'plain.test', port: 80 })).toEqual([expect.objectContaining({ reason: 'host_mismatch' })])
    expect(worldSnapshot(world).http).toBe(before.http)
  })

  it('SNI spoofing, Host spoofing, and CONNECT to keel: denied with the reason in the answer and the report', async () => {
    const before = worldSnapshot(world)
    const tls = ['sni_mismatch', 'sni_missing', 'sni_ech', 'sni_nul', 'sni_two_names', 'sni_ip_literal']
    const host = [
      'host_mismatch',
      'host_twice',
      'host_absolute_target',
      'host_missing',
      'host_userinfo',
      'host_obs_fold',
      'host_bare_lf',
      'host_space_before_colon',
      'host_dribbled',
    ]
    const connect = ['connect_redirected', 'connect_direct_proxy', 'connect_direct_proxy_v6', 'absolute_direct_proxy', 'tls_direct_proxy', 'garbage_direct_proxy']
    const r = await run([...tls, ...host, ...connect])
    expectAllBlocked(r, [...tls, ...host, ...connect])

    expect(r.get('sni_mismatch')).toMatchObject({ outcome: 'tls-alert', alert: expect.stringContaining('unrecognized_name') })
    expect(r.get('sni_missing')).toMatchObject({ alert: 'unrecognized_name' })
    expect(r.get('sni_ech')).toMatchObject({ alert: 'access_denied' })
    for (const name of ['sni_nul', 'sni_two_names', 'sni_ip_literal']) expect(r.get(name), name).toMatchObject({ alert: 'decode_error' })
    expect(rows(r.report, { name: 'api.allowed.test', port: 443 }).map((row) => [row.reason, row.count]).sort()).toEqual([
      ['ech_unsupported', 1],
      ['malformed_request', 3],
      ['sni_mismatch', 1],
      ['sni_missing', 1],
    ])

    expect(r.get('host_mismatch')).toMatchObject({ status: 403, reason: 'host_mismatch' })
    expect(r.get('host_absolute_target')).toMatchObject({ status: 403, reason: 'host_mismatch' })
    expect(r.get('host_dribbled')).toMatchObject({ status: 403, reason: 'host_mismatch' })
    expect(r.get('host_missing')).toMatchObject({ status: 403, reason: 'host_missing' })
    for (const name of ['host_twice', 'host_userinfo', 'host_obs_fold', 'host_bare_lf', 'host_space_before_colon']) {
      expect(r.get(name), name).toMatchObject({ status: 400, reason: 'malformed_request' })
    }
    expect(r.get('connect_redirected')).toMatchObject({ status: 403, reason: 'http_connect_not_allowed' })
    expect(rows(r.report, { name: 'plain.test', port: 80 }).map((row) => [row.reason, row.count]).sort()).toEqual([
      ['host_mismatch', 3],
      ['host_missing', 1],
      ['http_connect_not_allowed', 1],
      ['malformed_request', 5],
    ])

    // keel's proxy port, reached directly over loopback (never redirected): no original
    // destination, so nothing to go to; proxy-style requests get their own reason.
    for (const name of ['connect_direct_proxy', 'connect_direct_proxy_v6', 'absolute_direct_proxy']) {
      expect(r.get(name), name).toMatchObject({ status: 403, reason: 'http_connect_not_allowed' })
    }
    expect(r.get('tls_direct_proxy')).toMatchObject({ alert: 'access_denied' })
    expect(r.get('garbage_direct_proxy')).toMatchObject({ outcome: 'reset' })
    const direct = r.report.filter((row) => row.name === null && row.address === null && row.protocol === 'TCP')
    expect(direct.map((row) => [row.reason, row.count]).sort()).toEqual([
      ['http_connect_not_allowed', 3],
      ['original_destination_unknown', 2],
    ])

    const after = worldSnapshot(world)
    expect(after.http).toBe(before.http)
    expect(after.dns.slice(before.dns.length).every((n) => n === 'api.allowed.test' || n === 'plain.test')).toBe(true)
  })

  it('ICMP, raw sockets, and firewall or route changes fail for an unprivileged agent', async () => {
    const names = ['raw_icmp', 'ping_socket', 'raw_ip', 'raw_icmp6', 'packet_socket', 'nft_flush_unprivileged', 'ip_route_unprivileged', 'userns_netns']
    const r = await run(names)
    expectAllBlocked(r, names)
    for (const name of ['raw_icmp', 'raw_ip', 'raw_icmp6', 'packet_socket']) expect(r.get(name).outcome, name).toBe('EPERM')
    // Unprivileged ICMP echo sockets are off (net.ipv4.ping_group_range is "1 0" in a new namespace).
    expect(r.get('ping_socket').outcome).toBe('EACCES')
    // Not root in the namespace: no nftables or route changes; the redirect still holds afterwards.
    expect(r.get('nft_flush_unprivileged')).toMatchObject({ outcome: 'nft-rc-1', after: { status: 403, reason: 'policy_default_deny' } })
    expect(r.get('ip_route_unprivileged')).toMatchObject({ outcome: 'ip-rc-2' })
    // A new user + network namespace is an empty network: ENETUNREACH (101), no way back out.
    expect(r.get('userns_netns').out).toMatch(/^ERR 101$/)
    expect(reasonsFor(r.report, '203.0.113.11')).toEqual(['policy_default_deny'])
  })

  it("the host's loopback services: unreachable inside the sandbox, and keel will not dial them for a name", async () => {
    const before = worldSnapshot(world)
    const hostBefore = hostServiceConnections
    const port = (hostService.address() as net.AddressInfo).port
    const r = await run(['host_loopback'], { hostLoopbackPort: port })
    expectAllBlocked(r, ['host_loopback'])
    const tries = r.get('host_loopback').tries as Record<string, { outcome: string }>
    // 127.0.0.0/8 and ::1 inside the sandbox are the sandbox's own: nothing listens there.
    for (const [name, t] of Object.entries(tries)) expect(t.outcome, name).toBe('refused')
    expect(Object.keys(tries)).toEqual(
      expect.arrayContaining(['world_https', 'world_http', 'world_echo', 'world_dns_tcp', 'world_dns_udp', 'zero_addr', 'v6_loopback', 'localhost_name', 'host_service']),
    )
    expect(hostServiceConnections).toBe(hostBefore)

    // DNS rebinding: an allowed name whose real address is the host's loopback. Without the
    // fake world's named opt-in (unsafeAllowResolvedRanges), keel refuses to dial it.
    const strict = writePolicy(
      scratch.path,
      'strict.yaml',
      `apiVersion: keel.dev/v1alpha1
kind: EgressPolicy
metadata: { name: strict }
spec:
  agents: [{ name: test-agent }]
  routes:
    - name: api
      rules:
        - matches:
            - destinationHostnames: ["api.allowed.test"]
              ports: [{ port: 80 }, { port: 443 }]
`,
    )
    const rebind = await run(['rebind_loopback'], {}, { policy: strict })
    expectAllBlocked(rebind, ['rebind_loopback'])
    expect(rebind.get('rebind_loopback')).toMatchObject({ status: 403, reason: 'guard_private_address' })
    expect(rows(rebind.report, { name: 'api.allowed.test', port: 80 })).toEqual([
      expect.objectContaining({ verdict: 'deny', reason: 'guard_private_address' }),
    ])
    const after = worldSnapshot(world)
    expect(after.http).toBe(before.http)
    expect(after.echo).toBe(before.echo)
  })

  it('cannot turn the report or the flow log into a write as root somewhere else (links in the output directory)', async () => {
    // The agent can write in the directory the user chose for --report/--log (here it is
    // nobody's). keel runs as root; the report carries names the agent chose.
    const userDir = join(scratch.path, 'user-out')
    mkdirSync(userDir)
    chownSync(userDir, 65534, 65534)
    const rootOnly = join(scratch.path, 'root-only')
    mkdirSync(rootOnly, { mode: 0o700 })
    const victim = join(rootOnly, 'victim')
    writeFileSync(victim, 'precious\n', { mode: 0o600 })
    const report = join(userDir, 'report.json')
    const log = join(userDir, 'flows.jsonl')
    const out = ['--report', report, '--log', log]

    // 1. During the run the agent replaces both files with links to a root-only file.
    const swap = await keelRun({
      world,
      dir: scratch.path,
      flags: out,
      command: ['sh', '-c', `dig +short '$(id).test' >/dev/null; ln -sf ${victim} ${report}; ln -sf ${victim} ${log}; ls -l ${userDir}`],
    })
    expect(swap.code, swap.stderr).toBe(0)
    expect(swap.stdout).toMatch(/report\.json -> /) // the links were made
    expect(readFileSync(victim, 'utf8')).toBe('precious\n')

    // 2. The next run finds the links already there: keel refuses to start.
    const planted = await keelRun({ world, dir: scratch.path, flags: out, command: ['true'] })
    expect(planted.code).toBe(2)
    expect(planted.stderr).toMatch(/cannot write the report .*report\.json: it is a symbolic link/)
    expect(readFileSync(victim, 'utf8')).toBe('precious\n')

    // 3. Under sudo the files are opened with the invoking user's permissions: a linked
    //    directory cannot lead keel's write into a directory only root can write.
    symlinkSync(rootOnly, join(userDir, 'out'))
    const viaDir = await keelRun({
      world,
      dir: scratch.path,
      env: { SUDO_UID: '65534', SUDO_GID: '65534' },
      flags: ['--report', join(userDir, 'out', 'report.json')],
      command: ['true'],
    })
    expect(viaDir.code).toBe(2)
    expect(viaDir.stderr).toMatch(/cannot write the report .*: permission denied for the invoking user \(uid 65534\)/)
    expect(readdirSync(rootOnly)).toEqual(['victim'])

    // And where the user may write, the report is written, and is theirs.
    const fine = join(userDir, 'fine.json')
    const ok = await keelRun({ world, dir: scratch.path, env: { SUDO_UID: '65534', SUDO_GID: '65534' }, flags: ['--report', fine], command: ['true'] })
    expect(ok.code, ok.stderr).toBe(0)
    expect(statSync(fine).uid).toBe(65534)
    expect(JSON.parse(readFileSync(fine, 'utf8'))).toEqual({ destinations: [] })
  })
})
