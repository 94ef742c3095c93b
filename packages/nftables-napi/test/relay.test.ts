/**
 * The native splice(2) relay, on real loopback TCP sockets: a client, a front listener
 * whose accepted socket is the relay's "agent" side, and an upstream server. No root
 * needed; everything stays on 127.0.0.1.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readdirSync } from 'node:fs'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { RelayStartError, relayStats, startRelay, type RelayHandle, type RelayOptions } from '../src/index.js'

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

/** A connection through the relay, set up as keel's proxy does it. */
async function rig(options: RelayOptions = {}): Promise<Rig> {
  const upstream = net.createServer({ allowHalfOpen: true })
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true })
  cleanups.push(() => {
    upstream.close()
    front.close()
  })
  const [upstreamPort, frontPort] = await Promise.all([listen(upstream), listen(front)])
  const serverSide = new Promise<net.Socket>((resolve) => upstream.once('connection', resolve))
  const agentSide = new Promise<net.Socket>((resolve) => front.once('connection', resolve))
  const client = net.connect({ port: frontPort, host: '127.0.0.1', allowHalfOpen: true })
  const agent = await agentSide
  const up = net.connect({ port: upstreamPort, host: '127.0.0.1', allowHalfOpen: true })
  await new Promise((resolve) => up.once('connect', resolve))
  const server = await serverSide
  const handle = startRelay(fdOf(agent), fdOf(up), options)
  agent.destroy()
  up.destroy()
  cleanups.push(() => {
    handle.abort()
    client.destroy()
    server.destroy()
  })
  return { client, server, handle }
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

function openFds(): number {
  return readdirSync('/proc/self/fd').length
}

describe('startRelay (native splice relay)', () => {
  it('moves bytes both ways intact, each head first, and counts them', async () => {
    const headOut = Buffer.from('CLIENT-HELLO-ALREADY-READ')
    const headIn = Buffer.from('SERVER-GREETING-ALREADY-READ')
    const { client, server, handle } = await rig({ headOut, headIn })
    const up = randomBytes(8 * 1024 * 1024)
    const down = randomBytes(16 * 1024 * 1024 + 123)
    const atServer = readAll(server)
    const atClient = readAll(client)
    client.end(up)
    server.end(down)
    const [gotUp, gotDown, outcome] = await withinMs(Promise.all([atServer, atClient, handle.done]), 20_000, 'transfer')
    expect(sha(gotUp)).toBe(sha(Buffer.concat([headOut, up])))
    expect(sha(gotDown)).toBe(sha(Buffer.concat([headIn, down])))
    expect(outcome).toEqual({ bytesOut: headOut.length + up.length, bytesIn: headIn.length + down.length })
    expect(relayStats().active).toBe(0)
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
    // Socket buffers plus one pipe are all that may be in flight; nothing is queued without bound.
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
    // The relay keeps at most 64 empty pipes (two descriptors each) for reuse.
    expect(openFds() - before).toBeLessThanOrEqual(2 * relayStats().pooledPipes + 2)
    expect(relayStats().pooledPipes).toBeLessThanOrEqual(64)
  })

  it('refuses descriptors it cannot take, and takes nothing', () => {
    let error: unknown
    try {
      startRelay(1_000_000, 1_000_001)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(RelayStartError)
    expect((error as RelayStartError).code).toBe('EBADF')
    expect(() => startRelay(-1, 0)).toThrow(TypeError)
  })
})
