/**
 * A fake world on loopback for proxy tests: upstream servers, a fake policy, fake name
 * bindings and resolver, and a proxy whose "original destination" is looked up by the
 * client's source address (clients bind 127.0.0.x so concurrent tests do not collide).
 * Test-only; excluded from the build.
 */
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import {
  Reason,
  type AgentIdentity,
  type CheckResolvedArgs,
  type DecideArgs,
  type Decision,
  type DecisionEvent,
  type NameBindings,
  type Resolve,
} from '@keel/core'
import { createProxy, type Proxy, type ProxyOptions } from '../proxy-server.js'
import type { OriginalDestination } from '../decide-connection.js'

export const AGENT: AgentIdentity = { name: 'coder', labels: { team: 'platform' } }

export interface Upstream {
  port: number
  accepts: number
  server: net.Server
  close(): Promise<void>
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as net.AddressInfo).port
}

function track(server: net.Server, port: number): Upstream {
  const sockets = new Set<net.Socket>()
  const u: Upstream = {
    port,
    accepts: 0,
    server,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
  server.on('connection', (s: net.Socket) => {
    u.accepts++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
  })
  return u
}

/** HTTPS upstream answering `hello <host>`. */
export async function startHttps(tlsOptions: { key: string; cert: string }): Promise<Upstream> {
  const server = https.createServer(tlsOptions, (req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end(`hello ${req.headers.host ?? ''}`)
  })
  return track(server, await listen(server))
}

/** HTTP upstream answering `hello <host> <method> <url>`. */
export async function startHttp(): Promise<Upstream> {
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => res.end(`hello ${req.headers.host ?? ''} ${req.method} ${req.url}`))
  })
  return track(server, await listen(server))
}

/** A raw TCP upstream; `onSocket` gets each accepted socket (allowHalfOpen). */
export async function startRaw(onSocket: (s: net.Socket) => void): Promise<Upstream> {
  const server = net.createServer({ allowHalfOpen: true }, onSocket)
  return track(server, await listen(server))
}

/** Echo upstream (half-close aware: ends after the client ends). */
export function startEcho(): Promise<Upstream> {
  return startRaw((s) => s.pipe(s))
}

/** A port with nothing listening (connections are refused). */
export async function closedPort(): Promise<number> {
  const server = net.createServer()
  const port = await listen(server)
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export interface WorldOptions extends Partial<Omit<ProxyOptions, 'server' | 'agent' | 'originalDestination' | 'bindings'>> {
  /** name → decision for hostnames (absent: policy_default_deny). */
  names?: Record<string, Partial<Decision>>
  /** Literal addresses a "CIDR rule" allows. */
  addresses?: string[]
  /** synthetic address → name. */
  bindings?: Record<string, string>
  /** name → resolved addresses (default 127.0.0.1). */
  dns?: Record<string, string[]>
  /** Source address → original destination; `*` is the default. */
  destinations?: Record<string, OriginalDestination | (() => OriginalDestination)>
}

export interface World {
  proxy: Proxy
  port: number
  events: DecisionEvent[]
  resolved: string[]
  /** Wait until `n` events have been recorded (default: one more than now). */
  waitEvents(n?: number): Promise<DecisionEvent[]>
  close(): Promise<void>
}

export const SYNTH = (n: number): string => `198.18.0.${n}`

export async function startWorld(o: WorldOptions): Promise<World> {
  const server = net.createServer()
  const port = await listen(server)
  const events: DecisionEvent[] = []
  const waiters: Array<() => void> = []
  const resolved: string[] = []
  const bindingsTable = o.bindings ?? {}
  const bindings: NameBindings = {
    isSynthetic: (a) => a.startsWith('198.18.'),
    nameFor: (a) => bindingsTable[a],
  }
  const decide = (a: DecideArgs): Decision => {
    if (a.hostname !== undefined) {
      const d = o.names?.[a.hostname]
      if (d === undefined) return { verdict: 'deny', reason: Reason.POLICY_DEFAULT_DENY }
      return { verdict: 'allow', reason: Reason.ALLOWED, route: 'test-route', ...d }
    }
    if (a.address !== undefined && (o.addresses ?? []).includes(a.address)) {
      return { verdict: 'allow', reason: Reason.ALLOWED, route: 'cidr-route' }
    }
    return { verdict: 'deny', reason: Reason.POLICY_DEFAULT_DENY }
  }
  const checkResolved = (a: CheckResolvedArgs): Decision => {
    if (a.address.startsWith('169.254.')) return { verdict: 'deny', reason: Reason.GUARD_METADATA }
    if (a.address.startsWith('10.')) return { verdict: 'deny', reason: Reason.GUARD_PRIVATE_ADDRESS }
    return { verdict: 'allow', reason: Reason.ALLOWED }
  }
  const resolve: Resolve = async (name) => {
    resolved.push(name)
    return o.dns?.[name] ?? ['127.0.0.1']
  }
  const originalDestination = (s: net.Socket): OriginalDestination => {
    const d = o.destinations?.[s.remoteAddress ?? ''] ?? o.destinations?.['*']
    if (d === undefined) throw new Error(`no destination for ${s.remoteAddress}`)
    return typeof d === 'function' ? d() : d
  }
  const { names: _n, addresses: _a, bindings: _b, dns: _d, destinations: _t, ...proxyOptions } = o
  const proxy = createProxy({
    server,
    agent: AGENT,
    originalDestination,
    bindings,
    decide,
    checkResolved,
    resolve,
    ...proxyOptions,
    sink: (e) => {
      events.push(e)
      for (const w of waiters.splice(0)) w()
      o.sink?.(e)
    },
  } as ProxyOptions)
  const waitEvents = async (n = events.length + 1): Promise<DecisionEvent[]> => {
    const deadline = Date.now() + 10_000
    while (events.length < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} events; have ${JSON.stringify(events)}`)
      await new Promise<void>((r) => {
        waiters.push(r)
        setTimeout(r, 200)
      })
    }
    return events
  }
  return { proxy, port, events, resolved, waitEvents, close: () => proxy.close() }
}

export interface Exchange {
  data: Buffer
  error?: string
  /** ms from connect to close. */
  ms: number
}

/**
 * Connect to `port` from `localAddress`, send `chunks` (strings or buffers; numbers are
 * pauses in ms), then read until the server closes.
 */
export function exchange(
  port: number,
  chunks: Array<string | Buffer | number>,
  options: { localAddress?: string; end?: boolean; timeoutMs?: number } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const started = Date.now()
    const got: Buffer[] = []
    let error: string | undefined
    const s = net.connect({ host: '127.0.0.1', port, localAddress: options.localAddress ?? '127.0.0.1', allowHalfOpen: true })
    const timer = setTimeout(() => {
      error = 'client timeout'
      s.destroy()
    }, options.timeoutMs ?? 10_000)
    s.on('data', (c: Buffer) => got.push(c))
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message))
    s.on('end', () => s.end())
    s.on('close', () => {
      clearTimeout(timer)
      const r: Exchange = { data: Buffer.concat(got), ms: Date.now() - started }
      if (error !== undefined) r.error = error
      resolve(r)
    })
    s.on('connect', async () => {
      for (const c of chunks) {
        if (s.destroyed) return
        if (typeof c === 'number') await new Promise((r) => setTimeout(r, c))
        else s.write(c)
      }
      if (options.end === true) s.end()
    })
  })
}

/** Split an HTTP response into status, headers and body. */
export function parseResponse(data: Buffer): { status: number; headers: Record<string, string>; body: string } {
  const text = data.toString('utf8')
  const split = text.indexOf('\r\n\r\n')
  const head = split === -1 ? text : text.slice(0, split)
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const l of lines) {
    const i = l.indexOf(':')
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1] ?? 0), headers, body: split === -1 ? '' : text.slice(split + 4) }
}
