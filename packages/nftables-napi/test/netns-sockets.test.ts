import { execFileSync } from 'node:child_process'
import dgram from 'node:dgram'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { listenInNetns, removeNetns, setLoopbackGsoMaxSize } from '../src/index.js'
import { SKIP_REASON, acceptFromNetns, cleanup, deleteNetns, execInNetns, makeNetns, threadNetns, withTimeout } from './helpers/netns.js'

const adopted: { close(): void }[] = []
afterEach(async () => {
  for (const h of adopted.splice(0)) h.close()
  await cleanup()
})

function adoptServer(fd: number): Promise<net.Server> {
  const server = net.createServer()
  adopted.push(server)
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ fd }, () => resolve(server))
  })
}

function adoptUdp(fd: number, type: 'udp4' | 'udp6'): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type })
  adopted.push(socket)
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.bind({ fd }, () => resolve(socket))
  })
}

describe.skipIf(SKIP_REASON !== undefined)(`listenInNetns${SKIP_REASON ? ` (skipped: ${SKIP_REASON})` : ''}`, () => {
  it('makes TCP and UDP sockets inside the namespace, adoptable by net and dgram, and this thread stays put', async () => {
    const ns = makeNetns()
    const before = threadNetns()
    const [tcp4, tcp6, udp4, udp6] = listenInNetns(ns, [
      { protocol: 'tcp', address: '127.0.0.1', port: 0, backlog: 64 },
      { protocol: 'tcp', address: '::1', port: 0 },
      { protocol: 'udp', address: '127.0.0.1', port: 0 },
      { protocol: 'udp', address: '::1', port: 0 },
    ])
    expect(threadNetns()).toBe(before)

    const server4 = await adoptServer(tcp4!)
    const server6 = await adoptServer(tcp6!)
    const port4 = (server4.address() as net.AddressInfo).port
    const port6 = (server6.address() as net.AddressInfo).port
    expect(server4.address()).toMatchObject({ address: '127.0.0.1' })
    expect(server6.address()).toMatchObject({ address: '::1' })

    // A client inside the namespace reaches them ...
    const local = await acceptFromNetns(ns, server4, '127.0.0.1', port4, (s) => s.localAddress)
    expect(local).toBe('127.0.0.1')
    await acceptFromNetns(ns, server6, '::1', port6, () => true)
    // ... and the sockets are not in this namespace: nothing listens on that port here.
    const hostConnect = await new Promise<string>((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port: port4 })
      c.once('connect', () => {
        c.destroy()
        resolve('connected')
      })
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    })
    expect(hostConnect).toBe('ECONNREFUSED')

    // UDP: a datagram sent from inside the namespace arrives on the adopted socket.
    const u4 = await adoptUdp(udp4!, 'udp4')
    const u6 = await adoptUdp(udp6!, 'udp6')
    const got = withTimeout(new Promise<string>((resolve) => u4.once('message', (m) => resolve(m.toString()))), 10_000, 'udp4 datagram')
    execInNetns(ns, process.execPath, [
      '-e',
      `const s=require('node:dgram').createSocket('udp4'); s.send('hello', ${(u4.address() as net.AddressInfo).port}, '127.0.0.1', () => s.close())`,
    ])
    expect(await got).toBe('hello')
    expect(u6.address()).toMatchObject({ address: '::1' })
  })

  it('is all or nothing: a port in use fails with the step named and leaves no socket open', async () => {
    const ns = makeNetns()
    const [first] = listenInNetns(ns, [{ protocol: 'tcp', address: '127.0.0.1', port: 0 }])
    const server = await adoptServer(first!)
    const port = (server.address() as net.AddressInfo).port
    let err: (Error & { code?: string }) | undefined
    try {
      listenInNetns(ns, [
        { protocol: 'udp', address: '127.0.0.1', port: 0 },
        { protocol: 'tcp', address: '127.0.0.1', port },
      ])
    } catch (e) {
      err = e as Error & { code?: string }
    }
    expect(err?.code).toBe('ERR_INTERNAL')
    expect(err?.message).toMatch(/bind\(tcp 127\.0\.0\.1:\d+\): Address already in use/)
    // The UDP socket made before the failure was closed: no UDP socket is bound in the namespace.
    expect(execInNetns(ns, 'ss', ['-Hunl']).trim()).toBe('')
  })

  it('refuses a namespace that does not exist, and bad specs', () => {
    expect(() => listenInNetns('/run/netns/keel-t-does-not-exist', [{ protocol: 'tcp', address: '127.0.0.1', port: 0 }])).toThrow(
      /open\(\/run\/netns\/keel-t-does-not-exist\)/,
    )
    const ns = makeNetns()
    expect(() => listenInNetns(ns, [{ protocol: 'tcp', address: 'not-an-ip', port: 0 }])).toThrow(/address\(tcp not-an-ip:0\)/)
    expect(() => listenInNetns(ns, [{ protocol: 'tcp', address: '127.0.0.1', port: 70000 }])).toThrow(TypeError)
  })

  it('removeNetns deletes a named namespace as `ip netns delete` does, and a missing one is fine', async () => {
    const ns = makeNetns()
    const path = `/run/netns/${ns}`
    expect(existsSync(path)).toBe(true)
    removeNetns(ns)
    expect(existsSync(path)).toBe(false)
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(ns)
    expect(() => removeNetns(ns)).not.toThrow()
    deleteNetns(ns) // forget it in the helper (already gone)
  })
})

describe.skipIf(SKIP_REASON !== undefined)(`setLoopbackGsoMaxSize${SKIP_REASON ? ` (skipped: ${SKIP_REASON})` : ''}`, () => {
  const loGso = fileURLToPath(new URL('helpers/lo-gso.py', import.meta.url))
  const hostLo = (): string => execFileSync('python3', [loGso], { encoding: 'utf8' })
  const nsLo = (ns: string): { gsoMaxSize?: number; gsoIpv4MaxSize?: number } => JSON.parse(execInNetns(ns, 'python3', [loGso]))

  it("raises lo's IPv4 and IPv6 packet size inside the namespace only", () => {
    const ns = makeNetns()
    const host = hostLo()
    const before = threadNetns()
    expect(nsLo(ns)).toEqual({ gsoMaxSize: 65536, gsoIpv4MaxSize: 65536 })
    setLoopbackGsoMaxSize(ns, 256 * 1024)
    expect(nsLo(ns)).toEqual({ gsoMaxSize: 262144, gsoIpv4MaxSize: 262144 })
    expect(hostLo()).toBe(host)
    expect(threadNetns()).toBe(before)
  })

  it("says what the kernel refused, and leaves lo as it was", () => {
    const ns = makeNetns()
    // Above lo's tso_max_size (just under 512 KiB): EINVAL, with the kernel's reason.
    expect(() => setLoopbackGsoMaxSize(ns, 1 << 30)).toThrow(/could not set lo's packet size in network namespace .*: RTM_NEWLINK lo gso_max_size 1073741824 .*Invalid argument/)
    expect(nsLo(ns)).toEqual({ gsoMaxSize: 65536, gsoIpv4MaxSize: 65536 })
    expect(() => setLoopbackGsoMaxSize('/run/netns/keel-t-does-not-exist', 262144)).toThrow(/open\(\/run\/netns\/keel-t-does-not-exist\)/)
    expect(() => setLoopbackGsoMaxSize(ns, -1)).toThrow(TypeError)
  })
})
