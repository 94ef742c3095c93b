import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { peek, type PeekStep } from './peek.js'

/** A connected pair on loopback: [server side, client side]. */
async function pair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as net.AddressInfo).port
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r))
  const client = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  const s = await accepted
  server.close()
  s.on('error', () => {})
  client.on('error', () => {})
  sockets.push(s, client)
  return [s, client]
}
const sockets: net.Socket[] = []
afterEach(() => sockets.splice(0).forEach((s) => s.destroy()))

/** Done once the buffer holds a newline. */
const line = (buf: Buffer): PeekStep<string> => {
  const i = buf.indexOf(10)
  return i === -1 ? { done: false } : { done: true, value: buf.toString('latin1', 0, i) }
}

describe('peek', () => {
  it('returns the head and leaves later bytes on the socket', async () => {
    const [s, c] = await pair()
    c.write('first line\nrest')
    const r = await peek(s, { classify: line, maxBytes: 1024, timeoutMs: 1000 })
    expect(r).toMatchObject({ kind: 'complete', value: 'first line' })
    c.write(' and more')
    c.end()
    const after: Buffer[] = []
    s.on('data', (b: Buffer) => after.push(b))
    s.resume() // peek leaves the socket paused
    await new Promise((r) => s.once('end', r))
    const head = r.kind === 'complete' ? r.head : Buffer.alloc(0)
    expect(Buffer.concat([head, ...after]).toString()).toBe('first line\nrest and more')
  })

  it('times out a head that never completes', async () => {
    const [s, c] = await pair()
    c.write('no newline')
    const t0 = Date.now()
    const r = await peek(s, { classify: line, maxBytes: 1024, timeoutMs: 150 })
    expect(r).toMatchObject({ kind: 'timeout' })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140)
  })

  it('reports no-data after the first-byte window', async () => {
    const [s] = await pair()
    expect(await peek(s, { classify: line, maxBytes: 1024, timeoutMs: 1000, firstByteMs: 50 })).toEqual({ kind: 'no-data', ended: false })
  })

  it('starts the deadline at the first byte when asked', async () => {
    const [s, c] = await pair()
    setTimeout(() => c.write('x'), 200)
    const t0 = Date.now()
    const r = await peek(s, { classify: line, maxBytes: 1024, timeoutMs: 100, deadlineFrom: 'first-byte' })
    expect(r.kind).toBe('timeout')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290)
  })

  it('stops at the byte cap', async () => {
    const [s, c] = await pair()
    c.write(Buffer.alloc(5000, 0x61))
    expect(await peek(s, { classify: line, maxBytes: 1000, timeoutMs: 1000 })).toMatchObject({ kind: 'oversize' })
  })

  it('reports a half-close mid-head and a half-close with nothing sent', async () => {
    const [s, c] = await pair()
    c.end('partial')
    expect(await peek(s, { classify: line, maxBytes: 1024, timeoutMs: 1000 })).toMatchObject({ kind: 'ended' })
    const [s2, c2] = await pair()
    c2.end()
    expect(await peek(s2, { classify: line, maxBytes: 1024, timeoutMs: 1000 })).toEqual({ kind: 'no-data', ended: true })
  })

  it('reports a reset', async () => {
    const [s, c] = await pair()
    c.resetAndDestroy()
    expect(await peek(s, { classify: line, maxBytes: 1024, timeoutMs: 1000 })).toMatchObject({ kind: 'closed' })
  })

  it('skips classifying until `need` bytes are there', async () => {
    const [s, c] = await pair()
    let calls = 0
    const classify = (buf: Buffer): PeekStep<number> => {
      calls++
      return buf.length >= 100 ? { done: true, value: buf.length } : { done: false, need: 100 }
    }
    const p = peek(s, { classify, maxBytes: 1024, timeoutMs: 2000 })
    for (let i = 0; i < 100; i += 10) {
      c.write(Buffer.alloc(10))
      await new Promise((r) => setTimeout(r, 5))
    }
    expect(await p).toMatchObject({ kind: 'complete', value: 100 })
    expect(calls).toBe(2)
  })
})
