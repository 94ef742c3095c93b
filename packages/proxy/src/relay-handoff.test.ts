/**
 * The hand-off to a relay, with a scripted relay in place of the native one (which
 * packages/nftables-napi/test/relay.test.ts covers, and keel run's tests use end to
 * end): what it is given, when the Node socket is let go, and how failures map.
 */
import net, { type AddressInfo } from 'node:net'
import { Reason } from '@keel/core'
import { afterEach, describe, expect, it } from 'vitest'
import { dialThroughRelay, type SocketRelay } from './relay-handoff.js'

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

/** keel's accepted socket (paused, as after a peek) and the program's end of it. */
async function accepted(): Promise<{ agent: net.Socket; program: net.Socket }> {
  const front = net.createServer({ pauseOnConnect: true, allowHalfOpen: true })
  cleanups.push(() => front.close())
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r))
  const next = new Promise<net.Socket>((r) => front.once('connection', r))
  const program = net.connect((front.address() as AddressInfo).port, '127.0.0.1')
  const agent = await next
  for (const s of [agent, program]) {
    s.on('error', () => {})
    cleanups.push(() => s.destroy())
  }
  return { agent, program }
}

const fdOf = (s: net.Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd

type Connected = Awaited<ReturnType<SocketRelay>['connected']>

/** A relay that records what it is given and connects (or fails) as told. */
function scriptedRelay(result: Connected, log: unknown[], options: { throws?: boolean } = {}): SocketRelay {
  return (agentFd, target, o) => {
    if (options.throws === true) throw new Error('EMFILE')
    log.push({ agentFd, target, headOut: o.headOut?.toString(), idleTimeoutMs: o.idleTimeoutMs })
    return {
      connected: Promise.resolve(result),
      commit: (bytes?: Buffer) => log.push({ commit: bytes?.toString() }),
      abort: () => log.push('abort'),
      done: Promise.resolve({ bytesOut: 7, bytesIn: 9 }),
    }
  }
}

const TARGET = { addresses: ['127.0.0.8', 'not-an-ip', '::1', '127.0.0.9'], port: 443, timeoutMs: 1_000, maxAttempts: 2 }

describe('dialThroughRelay', () => {
  it('dials the vetted addresses with the head, then lets go of the socket and commits what Node read after the head', async () => {
    const { agent, program } = await accepted()
    program.write('rest-of-request')
    // Node reads it into the paused socket's buffer (a 'readable' listener reads without flowing).
    await new Promise((r) => agent.once('readable', r))
    const log: unknown[] = []
    const fd = fdOf(agent)
    const dial = dialThroughRelay(agent, scriptedRelay({ ok: true, address: '127.0.0.8' }, log), TARGET, {
      head: Buffer.from('hello|'),
      idleTimeoutMs: 500,
    })
    expect(dial).toBeDefined()
    expect(agent.destroyed).toBe(false) // not before the upstream is connected
    const r = await dial!.result
    expect(log).toEqual([
      { agentFd: fd, target: { addresses: ['127.0.0.8', '::1'], port: 443, timeoutMs: 1_000 }, headOut: 'hello|', idleTimeoutMs: 500 },
      { commit: 'rest-of-request' },
    ])
    expect(agent.destroyed).toBe(true)
    expect(r.ok && r.address).toBe('127.0.0.8')
    const spliced = await (r as Extract<typeof r, { ok: true }>).relayed
    expect([spliced.bytesOut, spliced.bytesIn, spliced.error]).toEqual([7, 9, undefined])
  })

  it('maps a failed dial to the reason a JS dial gives, and leaves the socket to the caller', async () => {
    const cases: [Connected, Reason, string][] = [
      [{ ok: false, reason: 'timeout', detail: '127.0.0.8:443 no answer in 1000 ms' }, Reason.UPSTREAM_CONNECT_TIMEOUT, '127.0.0.8:443 no answer in 1000 ms'],
      [{ ok: false, reason: 'failed', detail: '127.0.0.8:443 ECONNREFUSED' }, Reason.UPSTREAM_CONNECT_FAILED, '127.0.0.8:443 ECONNREFUSED'],
      [{ ok: false, reason: 'aborted', detail: 'aborted while dialing' }, Reason.CLIENT_ABORTED, 'aborted while dialing'],
    ]
    for (const [connected, reason, detail] of cases) {
      const { agent } = await accepted()
      const log: unknown[] = []
      const r = await dialThroughRelay(agent, scriptedRelay(connected, log), TARGET, {})!.result
      expect(r).toEqual({ ok: false, reason, detail })
      expect(agent.destroyed).toBe(false)
      expect(log.some((e) => typeof e === 'object' && e !== null && 'commit' in e)).toBe(false)
    }
  })

  it('does not take a socket it cannot hand over, and leaves it untouched', async () => {
    const log: unknown[] = []
    const relay = scriptedRelay({ ok: true, address: '127.0.0.8' }, log)
    expect(dialThroughRelay(new net.Socket(), relay, TARGET, {})).toBeUndefined() // no descriptor
    const closing = await accepted()
    closing.agent.end()
    expect(dialThroughRelay(closing.agent, relay, TARGET, {})).toBeUndefined()
    const refused = await accepted()
    expect(dialThroughRelay(refused.agent, scriptedRelay({ ok: true, address: '' }, log, { throws: true }), TARGET, {})).toBeUndefined()
    expect(refused.agent.destroyed).toBe(false)
    expect(log).toEqual([])
  })
})
