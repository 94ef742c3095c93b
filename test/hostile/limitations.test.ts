/**
 * What keel does NOT stop, pinned by tests so that SECURITY.md stays true: if one of
 * these starts failing because keel now stops it, update SECURITY.md ("What keel does not
 * stop") in the same change.
 *
 * Every attempt here reaches only what the policy allows (an allowed name's real address,
 * or the allowed upstream resolver) or something outside the network namespace that keel
 * does not claim to control (a Unix socket on the shared filesystem).
 */
import { spawn } from 'node:child_process'
import net from 'node:net'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { World } from '../world/index.js'
import { isRoot, publicCa, rowsFor, scratchDir } from '../sandbox/harness.js'
import { expectNoLeftovers, PYTHON, runEscape, startWorldWhenFree } from './helpers.js'

describe.skipIf(!isRoot)('documented limitations (SECURITY.md; needs root)', () => {
  let world: World
  let scratch: ReturnType<typeof scratchDir>
  let ca: string
  let unixServer: net.Server
  let unixPath: string
  const unixSeen: string[] = []

  beforeAll(async () => {
    world = await startWorldWhenFree()
    scratch = scratchDir('keel-limits-')
    ca = publicCa(world, scratch.path)
    unixPath = join(scratch.path, 'host-service.sock')
    unixServer = net.createServer((s) => {
      s.on('error', () => {})
      s.once('data', (d) => {
        unixSeen.push(d.toString())
        s.end('hello from the host')
      })
    })
    await new Promise<void>((resolve) => unixServer.listen(unixPath, resolve))
    chmodSync(unixPath, 0o777)
  })
  afterAll(async () => {
    await new Promise<void>((resolve) => (unixServer ? unixServer.close(() => resolve()) : resolve()))
    await world?.stop()
    scratch?.remove()
    expectNoLeftovers()
  })

  it('data to allowed destinations, fronting inside TLS, a second keep-alive request, opaque bytes, wildcard DNS labels, host Unix sockets', async () => {
    const marker = `lim${Date.now().toString(36)}`
    const names = ['limit_domain_fronting', 'limit_keepalive_second_request', 'limit_opaque_to_allowed', 'limit_wildcard_dns', 'limit_unix_socket']
    const before = world.http.requests.length
    const r = await runEscape(names, { world, dir: scratch.path, config: { ca, marker, unixSocket: unixPath }, timeoutMs: 60_000 })
    expect(r.code, r.stderr).toBe(0)
    for (const name of names) expect(r.attempts.get(name)?.rc, `${name}: ${JSON.stringify(r.attempts.get(name)?.result)}`).toBe(0)
    const seen = world.http.requests.slice(before)

    // Domain fronting: the SNI names an allowed host, the Host inside TLS another one. keel
    // checks the SNI; without TLS termination it cannot see the Host. A CDN at the allowed
    // name's address would route the request by that inner Host.
    expect(seen).toContainEqual(expect.objectContaining({ scheme: 'https', address: '127.0.0.2', sni: 'api.allowed.test', hostHeader: 'evil.test', path: '/fronted' }))
    // Keep-alive: only the first request head is checked; the second, with another Host,
    // still goes to the same (allowed) address.
    expect(seen).toContainEqual(expect.objectContaining({ scheme: 'http', address: '127.0.0.7', hostHeader: 'evil.test', path: '/second' }))
    // Opaque bytes (neither TLS nor HTTP) to an allowed name and port pass as they are.
    expect(r.get('limit_opaque_to_allowed')).toMatchObject({ echoed: true })
    expect(rowsFor(r.report, 'echo.test')).toEqual([expect.objectContaining({ verdict: 'allow', port: 7 })])
    // A single-label wildcard route lets any one label through to the upstream resolver
    // (A/AAAA only; other types are never forwarded): a DNS channel to that zone's servers.
    const wild = r.get('limit_wildcard_dns').name as string
    expect(world.dns.queries.map((q) => q.name)).toContain(wild)
    // The host's filesystem Unix sockets are reachable: keel isolates the network namespace only.
    expect(unixSeen).toContain('hello from the sandbox')
  })

  it("a process of the agent's own user outside the sandbox is a way out: its sockets can be taken (pidfd_getfd)", async () => {
    // A host-namespace TCP server on loopback, and a process of the agent's user (nobody)
    // in the host namespace holding a connection to it. keel does not isolate processes:
    // same-user processes outside the sandbox are outside keel's boundary (SECURITY.md).
    const received: string[] = []
    const server = net.createServer((s) => {
      s.on('error', () => {})
      s.on('data', (d) => {
        received.push(d.toString())
        s.end('hello from the host network')
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as net.AddressInfo).port
    const holder = spawn(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', PYTHON, '-c',
        `import os, socket, time\ns = socket.create_connection(('127.0.0.1', ${port}))\nprint(os.getpid(), s.fileno(), flush=True)\ntime.sleep(60)`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    try {
      const [hostPid, hostFd] = await new Promise<number[]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the holder did not start')), 5000)
        // Up to the newline: the line can arrive in more than one read.
        let line = ''
        const onData = (d: Buffer): void => {
          line += d.toString()
          if (!line.includes('\n')) return
          clearTimeout(timer)
          holder.stdout!.off('data', onData)
          resolve(line.trim().split(' ').map(Number))
        }
        holder.stdout!.on('data', onData)
      })
      const r = await runEscape(['limit_same_user_process'], { world, dir: scratch.path, config: { hostPid, hostFd }, timeoutMs: 30_000 })
      expect(r.code, r.stderr).toBe(0)
      // The whole result in the message: an 'agent-error' carries the Python exception.
      const result = r.get('limit_same_user_process')
      expect(result, JSON.stringify(result)).toMatchObject({ outcome: 'data', head: 'hello from the host network', escaped: true })
      expect(received).toContain('sent through a socket of the host namespace')
    } finally {
      if (holder.exitCode === null) holder.kill('SIGKILL')
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })
})
