import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Nft, originalDestination, originalDestinationFromFd, type OriginalDestination } from '../src/index.js'
import { SKIP_REASON, acceptFromNetns, listenInNetns, useNetnsPerTest, withTimeout } from './helpers/netns.js'

// TEST-NET-3 and the IPv6 documentation prefix: inside the AnyIP namespace they are
// local addresses, so nothing leaves the machine even if the redirect did not match.
const V4_TARGET = '203.0.113.7'
const V6_TARGET = '2001:db8::7'
const DIALED_PORT = 8080

/** The nat rule under test: every tcp/8080 connection goes to the listener's port. */
function redirectTo(nft: Nft, v4Port: number, v6Port = v4Port): void {
  nft.run(`
    add table inet t
    add chain inet t out { type nat hook output priority -100; }
    add rule inet t out meta nfproto ipv4 tcp dport ${DIALED_PORT} redirect to :${v4Port}
    add rule inet t out meta nfproto ipv6 tcp dport ${DIALED_PORT} redirect to :${v6Port}
  `)
}

function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port
}

/** Call `fn`, returning its error (or failing when it does not throw). */
function errorOf(fn: () => unknown): Error & { code?: string } {
  try {
    fn()
  } catch (e) {
    return e as Error & { code?: string }
  }
  throw new Error('expected an error')
}

describe.skipIf(SKIP_REASON !== undefined)(`originalDestination${SKIP_REASON ? ` (skipped: ${SKIP_REASON})` : ''}`, () => {
  // The calling thread must never move namespace, whatever a test does (checked after each).
  const ns = useNetnsPerTest()

  it('reads SO_ORIGINAL_DST of a redirected IPv4 connection', async () => {
    const server = await listenInNetns(ns(), '127.0.0.1')
    redirectTo(new Nft({ netns: ns() }), portOf(server))
    const dst = await acceptFromNetns(ns(), server, V4_TARGET, DIALED_PORT, originalDestination)
    expect(dst).toEqual<OriginalDestination>({ address: V4_TARGET, port: DIALED_PORT, family: 4 })
  })

  it('reads IP6T_SO_ORIGINAL_DST of a redirected IPv6 connection', async () => {
    const server = await listenInNetns(ns(), '::1', true)
    redirectTo(new Nft({ netns: ns() }), portOf(server))
    const dst = await acceptFromNetns(ns(), server, V6_TARGET, DIALED_PORT, originalDestination)
    expect(dst).toEqual<OriginalDestination>({ address: V6_TARGET, port: DIALED_PORT, family: 6 })
  })

  it('handles both families on one dual-stack listener (IPv4 arrives v4-mapped)', async () => {
    const server = await listenInNetns(ns(), '::', false)
    redirectTo(new Nft({ netns: ns() }), portOf(server))
    const v4 = await acceptFromNetns(ns(), server, V4_TARGET, DIALED_PORT, (s) => ({
      local: s.localAddress,
      dst: originalDestination(s),
    }))
    expect(v4.local).toBe('::ffff:127.0.0.1')
    expect(v4.dst).toEqual({ address: V4_TARGET, port: DIALED_PORT, family: 4 })
    const v6 = await acceptFromNetns(ns(), server, V6_TARGET, DIALED_PORT, originalDestination)
    expect(v6).toEqual({ address: V6_TARGET, port: DIALED_PORT, family: 6 })
  })

  it('keeps each connection’s own destination', async () => {
    const server = await listenInNetns(ns(), '127.0.0.1')
    const port = portOf(server)
    new Nft({ netns: ns() }).run(`
      add table inet t
      add chain inet t out { type nat hook output priority -100; }
      add rule inet t out meta nfproto ipv4 tcp dport { 443, 5432 } redirect to :${port}
    `)
    const a = await acceptFromNetns(ns(), server, '198.18.0.1', 443, originalDestination)
    const b = await acceptFromNetns(ns(), server, '10.20.0.5', 5432, originalDestination)
    expect([a, b]).toEqual([
      { address: '198.18.0.1', port: 443, family: 4 },
      { address: '10.20.0.5', port: 5432, family: 4 },
    ])
  })

  it('throws ERR_NO_ORIGINAL_DST for a direct (not redirected) connection inside the namespace', async () => {
    // conntrack is active here (the nat chain exists), but this connection was not
    // rewritten: its original destination is the listener itself.
    const v4 = await listenInNetns(ns(), '127.0.0.1')
    const v6 = await listenInNetns(ns(), '::1', true)
    redirectTo(new Nft({ netns: ns() }), portOf(v4), portOf(v6))
    for (const [server, host] of [
      [v4, '127.0.0.1'],
      [v6, '::1'],
    ] as const) {
      const err = await acceptFromNetns(ns(), server, host, portOf(server), (s) => errorOf(() => originalDestination(s)))
      expect(err).toMatchObject({ name: 'KeelError', code: 'ERR_NO_ORIGINAL_DST' })
      expect(err.message).toMatch(/not redirected by nat: its original destination .* is this socket itself/)
    }
  })

  it('throws ERR_NO_ORIGINAL_DST in a namespace without any nat ruleset (no conntrack entry)', async () => {
    const server = await listenInNetns(ns(), '127.0.0.1')
    const err = await acceptFromNetns(ns(), server, '127.0.0.1', portOf(server), (s) => errorOf(() => originalDestination(s)))
    expect(err).toMatchObject({ name: 'KeelError', code: 'ERR_NO_ORIGINAL_DST' })
    // Usually ENOENT (nothing asked for conntrack in this namespace); either way, not redirected.
    expect(err.message).toMatch(/not redirected by nat/)
  })

  it('throws ERR_NO_ORIGINAL_DST for a plain loopback connection in the host namespace', async () => {
    const server = net.createServer()
    try {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      const accepted = new Promise<Error & { code?: string }>((resolve) =>
        server.once('connection', (s) => {
          resolve(errorOf(() => originalDestination(s)))
          s.destroy()
        }),
      )
      const client = net.connect(portOf(server), '127.0.0.1')
      client.on('error', () => {})
      const err = await withTimeout(accepted, 10_000, 'loopback connection')
      client.destroy()
      expect(err).toMatchObject({ name: 'KeelError', code: 'ERR_NO_ORIGINAL_DST' })
      expect(err.message).toMatch(/not redirected by nat/)
    } finally {
      server.close()
    }
  })

  it('rejects what is not an open TCP/IP socket with TypeError', async () => {
    expect(() => originalDestination(new net.Socket())).toThrow(TypeError)
    expect(() => originalDestinationFromFd(-1)).toThrow(TypeError)
    expect(() => originalDestinationFromFd(1.5)).toThrow(TypeError)
    // fd 0 is /dev/null or a pipe under vitest: not a socket.
    expect(() => originalDestinationFromFd(0)).toThrow(/not a connected TCP\/IP socket/)

    const dir = mkdtempSync(path.join(tmpdir(), 'keel-nft-'))
    const server = net.createServer()
    try {
      const sock = path.join(dir, 's')
      await new Promise<void>((resolve) => server.listen(sock, resolve))
      const accepted = new Promise<Error>((resolve) =>
        server.once('connection', (s) => {
          resolve(errorOf(() => originalDestination(s)))
          s.destroy()
        }),
      )
      const client = net.connect(sock)
      client.on('error', () => {})
      const err = await withTimeout(accepted, 10_000, 'unix connection')
      client.destroy()
      expect(err).toBeInstanceOf(TypeError)
      expect(err.message).toMatch(/not a connected TCP\/IP socket \(address family 1\)/)
    } finally {
      server.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
