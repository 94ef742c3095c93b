/**
 * The native relay, on real loopback TCP sockets: a client, a front listener whose
 * accepted socket is the relay's "agent" side, and an upstream server the relay dials.
 * No root needed; everything stays on 127.0.0.1.
 */
import { createHash, randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { closeSync, openSync, readdirSync } from 'node:fs'
import net from 'node:net'
import { networkInterfaces } from 'node:os'
import { afterEach, describe, expect, it } from 'vitest'
import { dialAndRelay, RelayStartError, relayStats, type RelayHandle, type RelayOptions } from '../src/index.js'

interface Rig {
  /** The agent's end: what a sandboxed program holds. */
  client: net.Socket
  /** The upstream server's accepted socket. */
  server: net.Socket
  handle: RelayHandle
}

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)))
}

function fdOf(socket: net.Socket): number {
  return (socket as unknown as { _handle: { fd: number } })._handle.fd
}

/** An upstream server on 127.0.0.1; `onSocket` sees each accepted socket. */
async function upstreamServer(onSocket: (s: net.Socket) => void = () => {}): Promise<number> {
  const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {})
    onSocket(s)
  })
  cleanups.push(() => upstream.close())
  return listen(upstream)
}

/** A client connected to a front listener, and the front's accepted (paused) socket: keel's side. */
async function accepted(): Promise<{ client: net.Socket; agent: net.Socket }> {
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true })
  cleanups.push(() => front.close())
  const port = await listen(front)
  const agentSide = new Promise<net.Socket>((resolve) => front.once('connection', resolve))
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
  client.on('error', () => {})
  const agent = await agentSide
  agent.on('error', () => {})
  cleanups.push(() => {
    client.destroy()
    agent.destroy()
  })
  return { client, agent }
}

/**
 * A connection through the relay, set up as keel's proxy does it: dial, wait for the
 * connect, let go of the Node socket, commit.
 */
async function rig(options: RelayOptions = {}, commitBytes?: Buffer): Promise<Rig> {
  let onServerSocket!: (s: net.Socket) => void
  const serverSide = new Promise<net.Socket>((resolve) => (onServerSocket = resolve))
  const port = await upstreamServer((s) => onServerSocket(s))
  const { client, agent } = await accepted()
  const handle = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1'], port, timeoutMs: 5_000 }, options)
  cleanups.push(() => handle.abort())
  expect(await handle.connected).toEqual({ ok: true, address: '127.0.0.1' })
  agent.destroy()
  handle.commit(commitBytes)
  return { client, server: await serverSide, handle }
}

/** A port whose listener never accepts and whose queue is full: a connect to it hangs. */
async function blackholePort(): Promise<number> {
  const py = spawn('python3', [
    '-c',
    'import socket,sys,time\n' +
      's=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(0)\n' +
      'fill=[socket.socket() for _ in range(3)]\n' +
      'for c in fill: c.setblocking(False); c.connect_ex(s.getsockname())\n' +
      'print(s.getsockname()[1], flush=True); time.sleep(30)',
  ])
  cleanups.push(() => py.kill())
  return new Promise((resolve, reject) => {
    // Up to the newline: the line can arrive in more than one read.
    let line = ''
    py.stdout.on('data', (d: Buffer) => {
      line += d.toString()
      if (line.includes('\n')) resolve(Number(line.trim()))
    })
    py.once('error', reject)
  })
}

/** Every byte `socket` receives until its end (or close). */
function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.once('end', () => resolve(Buffer.concat(chunks)))
    socket.once('close', () => resolve(Buffer.concat(chunks)))
    socket.on('error', () => {})
  })
}

/** Resolves when the peer's end arrives (or the socket closes); discards data. */
function ended(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed || socket.readableEnded) return resolve()
    socket.once('end', () => resolve())
    socket.once('close', () => resolve())
    socket.resume()
  })
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function withinMs<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

function hasIpv6Loopback(): boolean {
  return (networkInterfaces().lo ?? []).some((a) => a.family === 'IPv6' && a.address === '::1')
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length
}

describe('dialAndRelay (native relay)', () => {
  it('moves bytes both ways intact, the head and the committed bytes first, and counts them', async () => {
    const headOut = Buffer.from('CLIENT-HELLO-ALREADY-READ|')
    const committed = Buffer.from('READ-BY-NODE-AFTER-THE-HEAD|')
    const { client, server, handle } = await rig({ headOut }, committed)
    const up = randomBytes(8 * 1024 * 1024)
    const down = randomBytes(16 * 1024 * 1024 + 123)
    const atServer = readAll(server)
    const atClient = readAll(client)
    client.end(up)
    server.end(down)
    const [gotUp, gotDown, outcome] = await withinMs(Promise.all([atServer, atClient, handle.done]), 20_000, 'transfer')
    expect(sha(gotUp)).toBe(sha(Buffer.concat([headOut, committed, up])))
    expect(sha(gotDown)).toBe(sha(down))
    expect(outcome).toEqual({ bytesOut: headOut.length + committed.length + up.length, bytesIn: down.length })
    expect(relayStats().active).toBe(0)
  })

  it('sends the head and lets the upstream answer before the commit, but reads the agent only after it', async () => {
    let server!: net.Socket
    const port = await upstreamServer((s) => {
      server = s
      s.write('greeting')
    })
    const { client, agent } = await accepted()
    const handle = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1'], port, timeoutMs: 5_000 }, { headOut: Buffer.from('head|') })
    cleanups.push(() => handle.abort())
    expect((await handle.connected).ok).toBe(true)
    const greeting = new Promise<string>((resolve) => client.once('data', (d: Buffer) => resolve(d.toString())))
    expect(await withinMs(greeting, 5_000, 'greeting')).toBe('greeting')
    client.write('sent-before-commit')
    await new Promise((resolve) => setTimeout(resolve, 200))
    const upstreamSaw = readAll(server)
    // Node's socket is still the reader: it has the bytes, the relay has not touched them.
    const early = await new Promise<Buffer>((resolve) => agent.once('readable', () => resolve(agent.read() as Buffer)))
    agent.destroy()
    handle.commit(early)
    client.end('|after')
    server.end()
    expect((await withinMs(upstreamSaw, 5_000, 'upstream')).toString()).toBe('head|sent-before-commit|after')
    expect((await withinMs(handle.done, 5_000, 'done')).error).toBeUndefined()
  })

  it('carries a half-close: the response to a request sent with FIN still arrives', async () => {
    const { client, server, handle } = await rig()
    server.once('end', () => server.end('response after the request ended'))
    const request = readAll(server)
    const response = readAll(client)
    client.end('request')
    expect((await request).toString()).toBe('request')
    expect((await response).toString()).toBe('response after the request ended')
    const outcome = await withinMs(handle.done, 5_000, 'done')
    expect(outcome.error).toBeUndefined()
  })

  it('holds the upstream back while the agent does not read, then delivers everything', async () => {
    const { client, server, handle } = await rig()
    client.pause()
    const chunk = randomBytes(64 * 1024)
    let written = 0
    let stalled = false
    // Write until the relay stops taking bytes for 500 ms (bounded: 64 MiB at most).
    for (let i = 0; i < 1024 && !stalled; i++) {
      written += chunk.length
      if (!server.write(chunk)) {
        stalled = !(await Promise.race([
          new Promise<boolean>((resolve) => server.once('drain', () => resolve(true))),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 500)),
        ]))
      }
    }
    // Socket buffers plus one read are all that may be in flight; nothing is queued without bound.
    expect(stalled).toBe(true)
    expect(server.bytesWritten).toBeLessThan(48 * 1024 * 1024)
    const total = written
    const received = new Promise<number>((resolve) => {
      let n = 0
      client.on('data', (c: Buffer) => {
        n += c.length
        if (n >= total) resolve(n)
      })
    })
    client.resume()
    expect(await withinMs(received, 20_000, 'drain')).toBe(total)
    client.end()
    server.end()
    expect((await withinMs(handle.done, 5_000, 'done')).bytesIn).toBe(total)
  })

  it('ends both sides when the upstream resets, and says so', async () => {
    const { client, server, handle } = await rig()
    client.on('error', () => {})
    client.write('x')
    await new Promise((resolve) => server.once('data', resolve))
    server.resetAndDestroy()
    const outcome = await withinMs(handle.done, 5_000, 'done')
    expect((outcome.error as NodeJS.ErrnoException).code).toMatch(/^(ECONNRESET|EPIPE)$/)
    await withinMs(ended(client), 5_000, 'client ended')
  })

  it('reports an upstream that resets right after reading the head as connected, then reset: not as a failed dial', async () => {
    const port = await upstreamServer((s) => s.once('data', () => s.resetAndDestroy()))
    const { client, agent } = await accepted()
    const handle = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1'], port, timeoutMs: 5_000 }, { headOut: Buffer.from('GET / HTTP/1.1\r\n\r\n') })
    expect(await withinMs(handle.connected, 5_000, 'connected')).toEqual({ ok: true, address: '127.0.0.1' })
    agent.destroy()
    handle.commit()
    const outcome = await withinMs(handle.done, 5_000, 'done')
    expect((outcome.error as NodeJS.ErrnoException).code).toMatch(/^(ECONNRESET|EPIPE)$/)
    await withinMs(ended(client), 5_000, 'client ended')
  })

  it('closes both sides on abort', async () => {
    const { client, server, handle } = await rig()
    client.on('error', () => {})
    server.on('error', () => {})
    handle.abort()
    const outcome = await withinMs(handle.done, 5_000, 'done')
    expect((outcome.error as NodeJS.ErrnoException).code).toBe('ECANCELED')
    await withinMs(Promise.all([ended(client), ended(server)]), 5_000, 'peers ended')
  })

  it('closes a connection idle for longer than its timeout, and not before', async () => {
    const { client, handle } = await rig({ idleTimeoutMs: 300 })
    client.on('error', () => {})
    const started = performance.now()
    const outcome = await withinMs(handle.done, 5_000, 'done')
    const took = performance.now() - started
    expect(outcome.error?.message).toBe('idle for 300 ms')
    expect(took).toBeGreaterThanOrEqual(250)
    expect(took).toBeLessThan(2_000)
  })

  it('runs 100 relays at once without mixing their bytes, and gives its descriptors back', async () => {
    const before = openFds()
    const rigs = await Promise.all(Array.from({ length: 100 }, () => rig()))
    const payloads = rigs.map(() => [randomBytes(200_000), randomBytes(300_000)] as const)
    const results = await withinMs(
      Promise.all(
        rigs.map(async ({ client, server, handle }, i) => {
          const [up, down] = payloads[i]!
          const atServer = readAll(server)
          const atClient = readAll(client)
          client.end(up)
          server.end(down)
          const [u, d, outcome] = await Promise.all([atServer, atClient, handle.done])
          return sha(u) === sha(up) && sha(d) === sha(down) && outcome.error === undefined
        }),
      ),
      30_000,
      '100 relays',
    )
    expect(results.every(Boolean)).toBe(true)
    expect(relayStats().active).toBe(0)
    for (const c of cleanups.splice(0)) c()
    await new Promise((resolve) => setTimeout(resolve, 100))
    // Nothing kept: at most the engine's own epoll and eventfd, made with the first relay.
    expect(openFds() - before).toBeLessThanOrEqual(2)
  })

  it.skipIf(!hasIpv6Loopback())('dials an IPv6 upstream', async () => {
    const upstream = net.createServer((s) => s.end('over ::1'))
    cleanups.push(() => upstream.close())
    const port = await new Promise<number>((resolve) => upstream.listen(0, '::1', () => resolve((upstream.address() as net.AddressInfo).port)))
    const { client, agent } = await accepted()
    const handle = dialAndRelay(fdOf(agent), { addresses: ['::1'], port, timeoutMs: 5_000 })
    expect(await withinMs(handle.connected, 5_000, 'connected')).toEqual({ ok: true, address: '::1' })
    agent.destroy()
    handle.commit()
    const got = readAll(client)
    client.end()
    expect((await withinMs(got, 5_000, 'bytes')).toString()).toBe('over ::1')
    expect(await withinMs(handle.done, 5_000, 'done')).toEqual({ bytesOut: 0, bytesIn: 8 })
  })

  it('tries the addresses in order and reports each failure; the socket stays the caller\'s', async () => {
    const refused = await upstreamServer()
    // A closed listener: its port refuses.
    const closedServer = net.createServer()
    const closedPort = await listen(closedServer)
    await new Promise((resolve) => closedServer.close(resolve))
    const { client, agent } = await accepted()
    const failed = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1', '::1'], port: closedPort, timeoutMs: 5_000 })
    const outcome = await withinMs(failed.connected, 5_000, 'connected')
    expect(outcome).toMatchObject({ ok: false, reason: 'failed' })
    expect((outcome as { detail: string }).detail).toMatch(
      new RegExp(`^127\\.0\\.0\\.1:${closedPort} ECONNREFUSED; \\[::1\\]:${closedPort} (ECONNREFUSED|EADDRNOTAVAIL)$`),
    )
    expect(await failed.done).toEqual({ bytesOut: 0, bytesIn: 0 })
    // The caller still owns the socket and can answer the agent on it.
    const answer = new Promise<string>((resolve) => client.once('data', (d: Buffer) => resolve(d.toString())))
    agent.write('denied')
    expect(await withinMs(answer, 5_000, 'answer')).toBe('denied')
    // A refusing first address, then one that answers: the second wins.
    const second = await accepted()
    const ok = dialAndRelay(fdOf(second.agent), { addresses: ['127.0.0.2', '127.0.0.1'], port: refused, timeoutMs: 5_000 })
    cleanups.push(() => ok.abort())
    expect(await withinMs(ok.connected, 5_000, 'connected')).toEqual({ ok: true, address: '127.0.0.1' })
    expect(relayStats().active).toBe(1)
  })

  it('times out a dial that gets no answer, per address, and can be aborted while dialing', async () => {
    const port = await blackholePort()
    const { agent } = await accepted()
    const started = performance.now()
    const slow = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1', '127.0.0.1'], port, timeoutMs: 300 })
    const outcome = await withinMs(slow.connected, 5_000, 'connected')
    expect(outcome).toEqual({
      ok: false,
      reason: 'timeout',
      detail: `127.0.0.1:${port} no answer in 300 ms; 127.0.0.1:${port} no answer in 300 ms`,
    })
    expect(performance.now() - started).toBeGreaterThanOrEqual(550)
    const aborted = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1'], port, timeoutMs: 10_000 })
    setTimeout(() => aborted.abort(), 100)
    expect(await withinMs(aborted.connected, 5_000, 'aborted')).toMatchObject({ ok: false, reason: 'aborted' })
    expect(((await aborted.done).error as NodeJS.ErrnoException).code).toBe('ECANCELED')
    expect(relayStats().active).toBe(0)
  })

  it('never reports a connect that carried the head as a timeout, nor moves the head to another address', async () => {
    // Two upstreams on the same port, one per address; a 1 ms dial timeout makes the
    // deadline race the connect. Whatever the outcome, the head must go exactly once,
    // and only to the connection reported as connected.
    const seen = new Map<string, string[]>([['127.0.0.1', []], ['127.0.0.2', []]])
    const serve = (host: string, port: number): Promise<number> => {
      const server = net.createServer((s) => {
        const chunks: Buffer[] = []
        s.on('data', (c: Buffer) => chunks.push(c))
        s.on('error', () => {})
        s.on('close', () => seen.get(host)!.push(Buffer.concat(chunks).toString()))
        s.on('end', () => s.end())
      })
      cleanups.push(() => server.close())
      return new Promise((resolve) => server.listen(port, host, () => resolve((server.address() as net.AddressInfo).port)))
    }
    const port = await serve('127.0.0.1', 0)
    await serve('127.0.0.2', port)
    let connectedCount = 0
    for (let i = 0; i < 60; i++) {
      const { client, agent } = await accepted()
      const handle = dialAndRelay(fdOf(agent), { addresses: ['127.0.0.1', '127.0.0.2'], port, timeoutMs: 1 }, { headOut: Buffer.from(`HEAD${i}|`) })
      const c = await withinMs(handle.connected, 5_000, 'connected')
      if (c.ok) {
        connectedCount++
        agent.destroy()
        handle.commit(Buffer.from('BODY'))
        client.end()
        await withinMs(Promise.all([handle.done, ended(client)]), 5_000, 'done')
      } else {
        expect(c.reason).toBe('timeout')
        client.destroy()
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
      const got = [...seen.values()].flat().filter((x) => x.includes(`HEAD${i}|`))
      expect(got, `round ${i}: ${JSON.stringify(c)}`).toEqual(c.ok ? [`HEAD${i}|BODY`] : [])
      if (c.ok) expect(seen.get(c.address)!.at(-1)).toBe(`HEAD${i}|BODY`)
    }
    expect(connectedCount).toBeGreaterThan(0)
  })

  it('reports its own failure while dialing as a failed dial with the cause, not as an abort', async () => {
    // /dev/null dup()s fine but epoll refuses it (EPERM): the relay fails before any connect.
    const fd = openSync('/dev/null', 'r')
    cleanups.push(() => closeSync(fd))
    const port = await upstreamServer()
    // Many times over: a relay that fails this fast is finished (and freed) by the relay
    // thread while relayStart is still returning its id, which once read freed memory.
    for (let i = 0; i < 1000; i++) {
      const handle = dialAndRelay(fd, { addresses: ['127.0.0.1'], port, timeoutMs: 1_000 })
      const outcome = await withinMs(handle.connected, 5_000, `connected (round ${i})`)
      expect(outcome).toEqual({ ok: false, reason: 'failed', detail: 'epoll_ctl: EPERM' })
    }
    expect(relayStats().active).toBe(0)
  })

  it('refuses what it cannot take, and takes nothing', () => {
    const target = { addresses: ['127.0.0.1'], port: 9, timeoutMs: 1_000 }
    let error: unknown
    try {
      dialAndRelay(1_000_000, target)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(RelayStartError)
    expect((error as RelayStartError).code).toBe('EBADF')
    expect(() => dialAndRelay(-1, target)).toThrow(TypeError)
    expect(() => dialAndRelay(0, { ...target, addresses: ['example.test'] })).toThrow(/not an IP address: example.test/)
    expect(relayStats().active).toBe(0)
  })
})
