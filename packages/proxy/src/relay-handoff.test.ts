/**
 * The hand-off to a relay, with a recording relay in place of the native one (which
 * packages/nftables-napi/test/relay.test.ts covers, and keel run's tests use end to
 * end): what it is given, in what order, and what happens to the Node sockets.
 */
import net, { type AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { BulkReader, bulkReaderOf } from './bulk-read.js'
import { handOffToRelay, type SocketRelay } from './relay-handoff.js'

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

interface Pair {
  /** Accepted by "keel" (paused, as after a peek). */
  agent: net.Socket
  /** The far end of `agent`: the program in the sandbox. */
  program: net.Socket
  /** keel's upstream socket (bulk-reading, as dial.ts makes it). */
  upstream: net.Socket
  /** The far end of `upstream`: the server. */
  server: net.Socket
}

async function pair(): Promise<Pair> {
  const front = net.createServer({ pauseOnConnect: true, allowHalfOpen: true })
  const back = net.createServer({ allowHalfOpen: true })
  cleanups.push(() => {
    front.close()
    back.close()
  })
  await Promise.all([front, back].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))))
  const accepted = new Promise<net.Socket>((r) => front.once('connection', r))
  const served = new Promise<net.Socket>((r) => back.once('connection', r))
  const program = net.connect((front.address() as AddressInfo).port, '127.0.0.1')
  const agent = await accepted
  const reader = new BulkReader()
  const upstream = net.connect({ host: '127.0.0.1', port: (back.address() as AddressInfo).port, onread: reader.onread })
  reader.bind(upstream)
  await new Promise((r) => upstream.once('connect', r))
  const server = await served
  for (const s of [agent, program, upstream, server]) {
    s.on('error', () => {})
    cleanups.push(() => s.destroy())
  }
  return { agent, program, upstream, server }
}

const fdOf = (s: net.Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd

const settle = (ms = 50): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface Call {
  agentFd: number
  upstreamFd: number
  headOut?: string
  headIn?: string
  idleTimeoutMs?: number
}

function recordingRelay(calls: Call[], fail = false): SocketRelay {
  return (agentFd, upstreamFd, o) => {
    if (fail) throw new Error('EMFILE')
    const call: Call = { agentFd, upstreamFd }
    if (o.headOut !== undefined) call.headOut = o.headOut.toString()
    if (o.headIn !== undefined) call.headIn = o.headIn.toString()
    if (o.idleTimeoutMs !== undefined) call.idleTimeoutMs = o.idleTimeoutMs
    calls.push(call)
    return { abort() {}, done: Promise.resolve({ bytesOut: 7, bytesIn: 9 }) }
  }
}

describe('handOffToRelay', () => {
  it('gives the relay both descriptors and every byte read but not forwarded, in order, then lets go of the sockets', async () => {
    const { agent, program, upstream, server } = await pair()
    program.write('rest-of-request') // read by Node into the paused socket's buffer
    agent.resume()
    await new Promise((r) => agent.once('readable', r))
    agent.pause()
    server.write('early-greeting') // held by the bulk reader, nobody took it
    await settle()
    const fds = { agent: fdOf(agent), upstream: fdOf(upstream) }
    const calls: Call[] = []
    const relayed = handOffToRelay(agent, upstream, recordingRelay(calls), { head: Buffer.from('hello|'), idleTimeoutMs: 500 })
    expect(relayed).toBeDefined()
    expect(calls).toEqual([
      { agentFd: fds.agent, upstreamFd: fds.upstream, headOut: 'hello|rest-of-request', headIn: 'early-greeting', idleTimeoutMs: 500 },
    ])
    expect(agent.destroyed && upstream.destroyed).toBe(true)
    const r = await relayed!.done
    expect([r.bytesOut, r.bytesIn]).toEqual([7, 9])
  })

  it('leaves both sockets as they were when the relay refuses', async () => {
    const { agent, program, upstream, server } = await pair()
    server.write('greeting')
    program.write('more')
    await settle()
    const relayed = handOffToRelay(agent, upstream, recordingRelay([], true), { head: Buffer.from('hello|') })
    expect(relayed).toBeUndefined()
    expect(agent.destroyed || upstream.destroyed).toBe(false)
    // The bytes it read back out are in front again, for the JS splice.
    const heldIn: Buffer[] = []
    bulkReaderOf(upstream)!.take((c) => (heldIn.push(Buffer.from(c)), true))
    expect(Buffer.concat(heldIn).toString()).toBe('greeting')
    const agentBytes = new Promise<string>((r) => agent.once('data', (c: Buffer) => r(c.toString())))
    agent.resume()
    expect(await agentBytes).toBe('more')
  })

  it('does not take a socket that has bytes queued for writing or is closing', async () => {
    const calls: Call[] = []
    const a = await pair()
    a.upstream.destroy()
    expect(handOffToRelay(a.agent, a.upstream, recordingRelay(calls), {})).toBeUndefined()
    const b = await pair()
    b.agent.end()
    expect(handOffToRelay(b.agent, b.upstream, recordingRelay(calls), {})).toBeUndefined()
    expect(handOffToRelay(new net.Socket(), b.upstream, recordingRelay(calls), {})).toBeUndefined()
    expect(calls).toEqual([])
  })
})
