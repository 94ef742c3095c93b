/**
 * `keel run` end to end: real namespaces, the real ruleset, real programs as the agent
 * (curl, node, python3, openssl, dig, getent), against the fake world on loopback.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWorld, type World } from '../world/index.js'
import {
  keelNamespaces,
  keelRun,
  parseTimings,
  publicCa,
  rowsFor,
  scratchDir,
  timingAgent,
  writePolicy,
  isRoot,
  KEEL,
  ROOT,
} from './harness.js'

describe.skipIf(!isRoot)('keel run (needs root: network namespaces and nftables)', () => {
  let world: World
  let scratch: ReturnType<typeof scratchDir>
  let ca: string

  beforeAll(async () => {
    world = await startWorld()
    scratch = scratchDir()
    ca = publicCa(world, scratch.path)
  })
  // Other sandboxes (another suite on this machine) may exist: look only at new ones.
  let before: Set<string>
  const newNamespaces = () => keelNamespaces().filter((n) => !before.has(n))
  beforeAll(() => {
    before = new Set(keelNamespaces())
  })
  afterAll(async () => {
    await world?.stop()
    scratch?.remove()
    expect(newNamespaces()).toEqual([])
  })

  it('lets real programs reach allowed names over HTTPS and HTTP, with synthetic DNS answers', async () => {
    const env = { NODE_EXTRA_CA_CERTS: ca, SSL_CERT_FILE: ca, CURL_CA_BUNDLE: ca }
    const r = await keelRun({
      world,
      dir: scratch.path,
      env,
      command: [
        'sh',
        '-c',
        [
          `curl -sS --max-time 5 https://api.allowed.test/curl-https`,
          `curl -sS --max-time 5 http://plain.test/curl-http`,
          `node -e "fetch('https://www.allowed.test/node-fetch').then(r => r.json()).then(j => console.log(JSON.stringify(j)))"`,
          `python3 -c "import urllib.request; print(urllib.request.urlopen('https://cdn.test/python', timeout=5).read().decode())"`,
          `echo | openssl s_client -connect a.cdn.test:443 -servername a.cdn.test -CAfile ${ca} -verify_return_error -brief 2>&1 | grep -i 'verification: ok'`,
          `dig +short api.allowed.test A`,
          `getent hosts plain.test`,
        ].join(' && '),
      ],
    })
    expect(r.stderr).toContain('keel:')
    expect(r.code, r.stderr).toBe(0)
    for (const path of ['/curl-https', '/curl-http', '/node-fetch', '/python']) expect(r.stdout).toContain(`"path":"${path}"`)
    expect(r.stdout).toMatch(/^198\.1[89]\.\d+\.\d+$/m) // dig got a synthetic address
    expect(r.stdout).toMatch(/^(198\.1[89]\.\d+\.\d+|fd[0-9a-f:]+)\s+plain\.test$/m) // getent: a synthetic address too
    const served = world.http.requests.filter((q) => ['/curl-https', '/node-fetch', '/python'].includes(q.path))
    expect(served.map((q) => q.sni).sort()).toEqual(['api.allowed.test', 'cdn.test', 'www.allowed.test'])
    expect(rowsFor(r.report, 'api.allowed.test')).toEqual([
      expect.objectContaining({ address: '127.0.0.2', port: 443, protocol: 'TCP', verdict: 'allow', reason: 'allowed', count: 1 }),
    ])
    const api = rowsFor(r.report, 'api.allowed.test')[0]!
    expect(api.bytesOut).toBeGreaterThan(100)
    expect(api.bytesIn).toBeGreaterThan(1000)
  })

  it("gives the agent a namespace with only lo, AnyIP routes for IPv4 and IPv6, and big packets on lo", async () => {
    const r = await keelRun({
      world,
      dir: scratch.path,
      command: ['sh', '-c', 'ip -j -d link show && ip -4 -j route show table local && ip -6 -j route show table local'],
    })
    expect(r.code, r.stderr).toBe(0)
    const [links, routes4, routes6] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>[])
    expect(links!.map((l) => l.ifname)).toEqual(['lo'])
    expect(links![0]).toMatchObject({ operstate: 'UNKNOWN' })
    // 256 KiB packets between the agent and keel (packages/sandbox/src/netns.ts,
    // LOOPBACK_GSO_BYTES), where the kernel has IPv4 BIG TCP (6.3+) and so reports
    // gso_ipv4_max_size for the host's lo.
    const hostLo = JSON.parse(execFileSync('python3', [join(ROOT, 'packages/nftables-napi/test/helpers/lo-gso.py')], { encoding: 'utf8' })) as Record<string, number>
    if (hostLo.gsoIpv4MaxSize !== undefined) expect(links![0]).toMatchObject({ gso_max_size: 262144 })
    const anyIp = (routes: Record<string, unknown>[]) => routes.filter((x) => x.type === 'local' && x.dst === 'default' && x.dev === 'lo')
    expect(anyIp(routes4!)).toHaveLength(1)
    expect(anyIp(routes6!)).toHaveLength(1)
  })

  it('denies every way out quickly, each with its reason in the report', async () => {
    // DNS over TLS to a public resolver: TCP 853 to an IP literal no CIDR rule allows.
    const dot = `echo | openssl s_client -connect 1.1.1.1:853 -servername one.one.one.one -brief`
    const r = await keelRun({
      world,
      dir: scratch.path,
      command: timingAgent({
        deniedName: `curl -fsS --max-time 5 https://other.test/`,
        deniedPort: `curl -fsS --max-time 5 http://echo.test:80/`,
        ipLiteral: `curl -fsS --max-time 5 http://203.0.113.10/`,
        ipv6Literal: `curl -fsS --max-time 5 'http://[2001:db8::10]:8080/'`,
        sniLie: `curl -fsS --max-time 5 --cacert ${ca} --connect-to other.test:443:api.allowed.test:443 https://other.test/`,
        dot,
        udp: `python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(b'x', ('192.0.2.53', 9999)); s.recv(10)"`,
        quic: `python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(b'\\xc0quic', ('198.51.100.7', 443)); s.recv(10)"`,
        metadata: `curl -fsS --max-time 5 http://169.254.169.254/latest/meta-data/`,
        hostLoopback: `curl -fsS --max-time 5 --cacert ${ca} https://127.0.0.2/`,
        expired: `curl -fsS --max-time 5 http://legacy.test/`,
        denyPolicy: `curl -fsS --max-time 5 http://evil.test/`,
      }),
    })
    expect(r.code, r.stderr).toBe(0)
    const timings = parseTimings(r.stdout)
    expect([...timings.keys()].length).toBe(12)
    for (const [name, t] of timings) {
      expect(t.rc, `${name} should fail`).not.toBe(0)
      expect(t.ms, `${name} should fail fast`).toBeLessThan(2000)
    }
    const reason = (nameOrAddress: string) => rowsFor(r.report, nameOrAddress).map((row) => row.reason)
    expect(reason('other.test')).toEqual(['dns_name_denied'])
    expect(rowsFor(r.report, 'echo.test')).toEqual([expect.objectContaining({ port: 80, verdict: 'deny', reason: 'policy_default_deny' })])
    expect(reason('203.0.113.10')).toEqual(['policy_default_deny'])
    expect(reason('2001:db8::10')).toEqual(['policy_default_deny'])
    expect(rowsFor(r.report, 'api.allowed.test')).toEqual([expect.objectContaining({ port: 443, reason: 'sni_mismatch' })])
    expect(rowsFor(r.report, '1.1.1.1')).toEqual([expect.objectContaining({ port: 853, protocol: 'TCP', reason: 'policy_default_deny' })])
    expect(rowsFor(r.report, '192.0.2.53')).toEqual([expect.objectContaining({ port: 9999, protocol: 'UDP', reason: 'udp_not_allowed' })])
    expect(rowsFor(r.report, '198.51.100.7')).toEqual([expect.objectContaining({ port: 443, protocol: 'UDP', reason: 'udp_not_allowed' })])
    expect(reason('169.254.169.254')).toEqual(['guard_metadata'])
    expect(reason('legacy.test')).toEqual(['exception_expired'])
    expect(reason('evil.test')).toEqual(['deny_policy'])
    // The host's loopback is not the sandbox's: nothing reached the world's 127.0.0.2:443 by IP.
    expect(world.http.requests.some((q) => q.sni === undefined && q.address === '127.0.0.2' && q.scheme === 'https')).toBe(false)
    // Denied names never went upstream.
    for (const name of ['other.test', 'legacy.test', 'evil.test']) expect(world.dns.count(name)).toBe(0)
  })

  it('runs three sandboxes with different policies at once without them seeing each other', async () => {
    const only = (name: string, host: string, port: number) =>
      writePolicy(
        scratch.path,
        `${name}.yaml`,
        `apiVersion: keel.dev/v1alpha1
kind: EgressPolicy
metadata: { name: ${name} }
spec:
  guardRails: { unsafeAllowResolvedRanges: ["127.0.0.0/8"] }
  routes:
    - name: only
      rules:
        - matches:
            - destinationHostnames: ["${host}"]
              ports: [{ port: ${port} }]
`,
      )
    const policies = [only('a', 'plain.test', 80), only('b', 'www.allowed.test', 80), only('c', 'cdn.test', 80)]
    const hosts = ['plain.test', 'www.allowed.test', 'cdn.test']
    const tryAll = timingAgent(Object.fromEntries(hosts.map((h) => [h, `curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -f http://${h}/ && sleep 0.3`])))
    const runs = await Promise.all(
      policies.map((policy) => keelRun({ world, dir: scratch.path, policy, agent: 'x', command: tryAll })),
    )
    runs.forEach((r, i) => {
      expect(r.code, r.stderr).toBe(0)
      const timings = parseTimings(r.stdout)
      hosts.forEach((h, j) => expect(timings.get(h)?.rc === 0, `sandbox ${i} → ${h}`).toBe(i === j))
      expect(r.report.filter((row) => row.verdict === 'allow').map((row) => row.name)).toEqual([hosts[i]])
    })
  })

  it('writes a flow log, fails on deny when asked, and passes the agent exit code through', async () => {
    const log = join(scratch.path, 'flows.jsonl')
    const denied = await keelRun({
      world,
      dir: scratch.path,
      flags: ['--fail-on-deny', '--log', log, '--quiet'],
      command: ['sh', '-c', 'curl -sS --max-time 5 http://plain.test/ >/dev/null; curl -sS --max-time 5 http://other.test/; exit 0'],
    })
    expect(denied.code).toBe(3)
    expect(denied.stderr).not.toContain('destinations (')
    const records = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    const conn = records.find((x) => x.kind === 'connection' && x.name === 'plain.test')
    expect(conn).toMatchObject({ agent: 'test-agent', port: 80, verdict: 'allow', reason: 'allowed' })
    expect(typeof conn?.time).toBe('string')
    expect(conn?.bytesIn).toBeGreaterThan(0)
    expect(typeof conn?.durationMs).toBe('number')
    expect(records.find((x) => x.kind === 'dns' && x.name === 'other.test')).toMatchObject({ verdict: 'deny', reason: 'dns_name_denied' })

    const seven = await keelRun({ world, dir: scratch.path, flags: ['--quiet'], command: ['sh', '-c', 'exit 7'] })
    expect(seven.code).toBe(7)
    const signalled = await keelRun({ world, dir: scratch.path, flags: ['--quiet'], command: ['sh', '-c', 'kill -TERM $$'] })
    expect(signalled.code).toBe(128 + 15)
  })

  it('says clearly what is wrong: command not found, invalid policy, not root', async () => {
    const missing = await keelRun({ world, dir: scratch.path, command: ['no-such-agent-command'] })
    expect(missing.code).toBe(127)
    expect(missing.stderr).toMatch(/command not found: no-such-agent-command/)

    const bad = writePolicy(scratch.path, 'bad.yaml', 'apiVersion: keel.dev/v1alpha1\nkind: EgressPolicy\nmetadata: { name: bad }\nspec:\n  routes:\n    - name: x\n      rulez: []\n')
    const invalid = await keelRun({ world, dir: scratch.path, policy: bad, command: ['true'] })
    expect(invalid.code).toBe(2)
    expect(invalid.stderr).toMatch(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7:7: .*rulez`))

    let notRoot: { status: number | null; stderr: string }
    try {
      execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, KEEL, 'run', '--policy', bad, '--', 'true'], {
        encoding: 'utf8',
        stdio: 'pipe',
      })
      notRoot = { status: 0, stderr: '' }
    } catch (err) {
      notRoot = err as { status: number | null; stderr: string }
    }
    // Policy errors come first (they need no root); with a valid policy, root is next.
    expect(notRoot.status).toBe(2)
    let notRoot2: { status: number | null; stderr: string } = { status: 0, stderr: '' }
    try {
      execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, KEEL, 'run', '--policy', join(scratch.path, 'a.yaml'), '--', 'true'], {
        encoding: 'utf8',
        stdio: 'pipe',
      })
    } catch (err) {
      notRoot2 = err as { status: number | null; stderr: string }
    }
    expect(notRoot2.status).toBe(125)
    expect(notRoot2.stderr).toMatch(/needs root.*sudo/)
  })

  it('forwards signals to the agent and tears the sandbox down', async () => {
    let keelPid = 0
    const running = keelRun({ world, dir: scratch.path, flags: ['--quiet'], command: ['sleep', '30'], onSpawn: (pid) => (keelPid = pid) })
    await waitFor(() => newNamespaces().length === 1, 5000)
    const id = newNamespaces()[0]!.slice('keel-'.length)
    process.kill(keelPid, 'SIGTERM')
    const r = await running
    expect(r.code).toBe(128 + 15)
    expect(r.durationMs).toBeLessThan(10_000)
    expect(newNamespaces()).toEqual([])
    expect(existsSync(`/run/keel/${id}`)).toBe(false)
  })

  it('keel gc cleans up after a launcher killed with SIGKILL, and a later run is not disturbed', async () => {
    let keelPid = 0
    const running = keelRun({ world, dir: scratch.path, flags: ['--quiet'], command: ['sleep', '30'], onSpawn: (pid) => (keelPid = pid) })
    await waitFor(() => newNamespaces().length === 1, 5000)
    // Wait until the agent runs inside it, so the kill leaves an orphan for gc to find.
    const ns = newNamespaces()[0]!
    const agentRunning = () =>
      execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean)
        .some((pid) => {
          try {
            return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep'
          } catch {
            return false
          }
        })
    await waitFor(agentRunning, 5000)
    process.kill(keelPid, 'SIGKILL')
    await running
    expect(newNamespaces()).toEqual([ns])
    const gc = JSON.parse(execFileSync(process.execPath, [KEEL, 'gc', '--json'], { encoding: 'utf8' })) as {
      removed: { netns?: string }[]
      killed: number[]
    }
    // gc removes only dead sandboxes: this one (and none that another live run owns).
    expect(gc.removed.map((r) => r.netns)).toContain(ns)
    expect(gc.killed.length).toBeGreaterThanOrEqual(1) // the orphaned agent (sleep) still in the namespace
    expect(newNamespaces()).toEqual([])
    expect(existsSync(`/run/keel/${ns.slice('keel-'.length)}`)).toBe(false)
    const after = await keelRun({ world, dir: scratch.path, flags: ['--quiet'], command: ['curl', '-sS', '--max-time', '5', 'http://plain.test/'] })
    expect(after.code, after.stderr).toBe(0)
  })
})

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
