import http from 'node:http'
import https from 'node:https'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Reason } from '@keel/core'
import type { DispatcherContext } from '../connection.js'
import { exchange, parseResponse, startWorld, SYNTH, type World, type WorldOptions } from '../test-helpers/world.js'
import { captureNodeHello } from '../test-helpers/tls-fixtures.js'
import { createSandboxCa, type SandboxCa } from './sandbox-ca.js'
import { createTlsTerminator, type TerminationFailure, type TlsTerminatorOptions } from './terminate.js'

const NAME = 'api.provider.test'

const cleanup: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

let ca: SandboxCa
beforeAll(async () => {
  ca = await createSandboxCa({ names: [NAME, 'other.provider.test'] })
})

interface Rig {
  w: World
  failures: Array<{ failure: TerminationFailure; name: string; error?: string }>
  handled: Array<{ ctx: DispatcherContext; encrypted: boolean }>
  stats: { terminated: number; plain: number; failed: number }
}

/** A proxy world whose dispatcher hook is the terminator, handing sockets to an HTTP server that echoes. */
async function rig(options: Partial<TlsTerminatorOptions> = {}, world: Partial<WorldOptions> = {}): Promise<Rig> {
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const alpn = (req.socket as tls.TLSSocket).alpnProtocol
      res.setHeader('content-type', 'text/plain')
      res.end(`dispatcher ${req.method} ${req.url} host=${req.headers.host ?? ''} alpn=${alpn ?? 'none'}`)
    })
  })
  const failures: Rig['failures'] = []
  const handled: Rig['handled'] = []
  const terminator = createTlsTerminator({
    ca,
    handle: (socket: Duplex, ctx) => {
      handled.push({ ctx, encrypted: socket instanceof tls.TLSSocket })
      server.emit('connection', socket)
    },
    onError: (failure, ctx, error) => failures.push({ failure, name: ctx.name, ...(error ? { error: error.message } : {}) }),
    ...options,
  })
  const w = await startWorld({
    names: { [NAME]: { via: 'dispatcher', route: 'llm' }, 'outside.test': { via: 'dispatcher', route: 'llm' } },
    bindings: { [SYNTH(5)]: NAME, [SYNTH(6)]: 'outside.test' },
    destinations: { '*': { address: SYNTH(5), port: 443 } },
    onDispatcher: terminator.hook,
    ...world,
  })
  cleanup.push(() => {
    server.closeAllConnections()
    return w.close()
  })
  return { w, failures, handled, stats: terminator.stats }
}

function httpsGet(port: number, options: { servername?: string; ca?: string; path?: string; alpn?: string[] } = {}) {
  return new Promise<{ status: number; body: string; alpn?: string | false | null }>((resolve, reject) => {
    const req = https.request(
      <https.RequestOptions & tls.ConnectionOptions>{
        host: '127.0.0.1',
        port,
        path: options.path ?? '/v1/models',
        servername: options.servername ?? NAME,
        headers: { host: NAME },
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        ALPNProtocols: options.alpn ?? ['http/1.1'],
        agent: false,
      },
      (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, alpn: (res.socket as tls.TLSSocket).alpnProtocol }))
      },
    )
    req.on('error', reject)
    req.setTimeout(10_000, () => req.destroy(new Error('client timeout')))
    req.end()
  })
}

describe('createTlsTerminator', () => {
  it('terminates TLS with the sandbox CA and hands the decrypted socket over after the handshake', async () => {
    const { w, handled, failures, stats } = await rig()
    const r = await httpsGet(w.port, { ca: ca.certPem })
    expect(r).toEqual({ status: 200, body: `dispatcher GET /v1/models host=${NAME} alpn=http/1.1`, alpn: 'http/1.1' })
    expect(handled).toHaveLength(1)
    expect(handled[0]).toMatchObject({ encrypted: true, ctx: { name: NAME, protocol: 'tls', sni: NAME } })
    expect(failures).toEqual([])
    expect(stats).toEqual({ terminated: 1, plain: 0, failed: 0 })
    const [e] = await w.waitEvents(1)
    expect(e).toMatchObject({ verdict: 'allow', reason: Reason.ALLOWED, route: 'llm' })
    expect(e!.bytesIn).toBeGreaterThan(500) // the certificate went back to the agent
  })

  it('serves keep-alive requests on one terminated connection', async () => {
    const { w, stats } = await rig()
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 })
    cleanup.push(() => agent.destroy())
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: w.port, path, servername: NAME, ca: ca.certPem, agent, headers: { host: NAME } }, (res) => {
            let body = ''
            res.on('data', (d: Buffer) => (body += d.toString()))
            res.on('end', () => resolve(body))
          })
          .on('error', reject)
      })
    expect(await get('/one')).toContain('GET /one')
    expect(await get('/two')).toContain('GET /two')
    expect(stats.terminated).toBe(1)
  })

  it('hands plain HTTP over with its head put back', async () => {
    const { w, handled, stats } = await rig({}, { destinations: { '*': { address: SYNTH(5), port: 80 } } })
    // The body arrives after the head the proxy peeked.
    const r = await exchange(w.port, [`POST /v1/chat/completions HTTP/1.1\r\nHost: ${NAME}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n`, 50, '{}'])
    const res = parseResponse(r.data)
    expect(res.status).toBe(200)
    expect(res.body).toBe(`dispatcher POST /v1/chat/completions host=${NAME} alpn=none`)
    expect(handled[0]).toMatchObject({ encrypted: false, ctx: { protocol: 'http' } })
    expect(stats.plain).toBe(1)
  })

  it('resets plain HTTP when plainHttp is reject (the proxy records internal_error)', async () => {
    const { w, handled } = await rig({ plainHttp: 'reject' }, { destinations: { '*': { address: SYNTH(5), port: 80 } } })
    const r = await exchange(w.port, [`GET / HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`])
    expect(r.error).toBe('ECONNRESET')
    expect(handled).toEqual([])
    expect((await w.waitEvents(1))[0]).toMatchObject({ reason: Reason.INTERNAL_ERROR })
  })

  it('a client that does not trust the CA fails the handshake; recorded, never thrown', async () => {
    const { w, failures, handled } = await rig()
    await expect(httpsGet(w.port)).rejects.toThrow(/self-signed|unable to (get|verify)/i)
    await w.waitEvents(1)
    expect(handled).toEqual([])
    expect(failures).toHaveLength(1)
    expect(failures[0]!.failure).toMatch(/^(handshake_error|closed_during_handshake)$/)
  })

  it('a client that offers only h2 gets no_application_protocol', async () => {
    const { w, failures } = await rig()
    const err = await new Promise<Error>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: w.port, servername: NAME, ca: ca.certPem, ALPNProtocols: ['h2'] })
      s.on('secureConnect', () => resolve(new Error('handshake succeeded')))
      s.on('error', resolve)
    })
    expect(err.message).toMatch(/no application protocol/i)
    await w.waitEvents(1)
    expect(failures.map((f) => f.failure)).toEqual(['handshake_error'])
  })

  it('times out a handshake that stalls', async () => {
    const { w, failures } = await rig({ handshakeTimeoutMs: 300 })
    const hello = await captureNodeHello({ servername: NAME })
    const r = await exchange(w.port, [hello], { timeoutMs: 5000 }) // sends the hello, then nothing
    expect(r.error).not.toBe('client timeout')
    expect(r.ms).toBeLessThan(3000)
    expect(r.data.length).toBeGreaterThan(0) // the ServerHello and certificate came back first
    await w.waitEvents(1)
    expect(failures).toEqual([{ failure: 'handshake_timeout', name: NAME }])
  })

  it('a bound name outside the CA throws to the proxy: reset, internal_error', async () => {
    const { w, handled } = await rig({}, { destinations: { '*': { address: SYNTH(6), port: 443 } } })
    await expect(httpsGet(w.port, { servername: 'outside.test', ca: ca.certPem })).rejects.toThrow(/ECONNRESET|socket hang up/)
    expect(handled).toEqual([])
    expect((await w.waitEvents(1))[0]).toMatchObject({ reason: Reason.INTERNAL_ERROR, detail: expect.stringContaining('name constraints') })
  })

  it('uses the leaf of the bound name for each connection', async () => {
    const { w } = await rig(
      {},
      {
        names: { 'other.provider.test': { via: 'dispatcher', route: 'llm' } },
        bindings: { [SYNTH(7)]: 'other.provider.test' },
        destinations: { '*': { address: SYNTH(7), port: 443 } },
      },
    )
    const cert = await new Promise<tls.PeerCertificate>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: w.port, servername: 'other.provider.test', ca: ca.certPem }, () => {
        resolve(s.getPeerCertificate())
        s.destroy()
      })
      s.on('error', reject)
    })
    expect(cert.subjectaltname).toBe('DNS:other.provider.test')
  })
})
