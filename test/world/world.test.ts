import { execFile } from 'node:child_process'
import { Resolver } from 'node:dns/promises'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWorld, type World } from './index.js'

const run = promisify(execFile)

function get(
  mod: typeof http | typeof https,
  options: https.RequestOptions,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = mod.request({ ...options, agent: false, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

describe('the fake world', () => {
  let world: World
  let resolver: Resolver

  beforeAll(async () => {
    world = await startWorld()
    resolver = new Resolver({ timeout: 2000, tries: 1 })
    resolver.setServers([`${world.dnsAddress}:${world.dnsPort}`])
  })
  afterAll(async () => {
    await world?.stop()
  })

  it('answers .test names with loopback addresses and counts every query', async () => {
    world.dns.reset()
    expect(await resolver.resolve4('api.allowed.test')).toEqual(['127.0.0.2'])
    expect(await resolver.resolve6('api.allowed.test')).toEqual(['::1'])
    expect(await resolver.resolve4('a.cdn.test')).toEqual(['127.0.0.4'])
    expect(await resolver.resolve4('b.cdn.test')).toEqual(['127.0.0.4'])
    expect(await resolver.resolve4('alias.test')).toEqual(['127.0.0.2'])
    await expect(resolver.resolve4('nx.test')).rejects.toMatchObject({ code: 'ENOTFOUND' })
    await expect(resolver.resolve4('servfail.test')).rejects.toMatchObject({ code: 'ESERVFAIL' })
    expect(world.dns.count('api.allowed.test', 'A')).toBe(1)
    expect(world.dns.count('api.allowed.test', 'AAAA')).toBe(1)
    expect(world.dns.count('nx.test')).toBe(1)
    expect(world.dns.queries[0]).toEqual({ name: 'api.allowed.test', type: 'A', transport: 'udp' })
  })

  it('truncates big answers over UDP so clients retry over TCP', async () => {
    world.dns.reset()
    const addresses = await resolver.resolve4('big.test')
    expect(addresses).toHaveLength(100)
    expect(world.dns.queries.map((q) => q.transport)).toEqual(['udp', 'tcp'])
  })

  it('serves HTTPS with certificates from the test CA, per name by SNI', async () => {
    for (const name of ['api.allowed.test', 'www.allowed.test', 'a.cdn.test', 'b.cdn.test']) {
      const host = world.hosts[name]
      const res = await get(https, {
        host: host?.address,
        port: host?.ports.https,
        servername: name,
        ca: world.ca.certPem,
        path: '/hello?x=1',
        headers: { host: name },
      })
      expect(res.status).toBe(200)
      const body = JSON.parse(res.body.toString()) as Record<string, unknown>
      expect(body).toMatchObject({ world: true, host: name, sni: name, hostHeader: name, method: 'GET', path: '/hello?x=1', scheme: 'https' })
      expect(body.address).toBe(host?.address)
    }
    expect(world.http.requests.some((r) => r.sni === 'b.cdn.test' && r.address === '127.0.0.4')).toBe(true)
  })

  it('is reachable with curl --resolve --cacert', async () => {
    const port = world.hosts['api.allowed.test']?.ports.https
    const { stdout } = await run(
      'curl',
      ['-sS', '--max-time', '5', '--resolve', `api.allowed.test:${port}:127.0.0.2`, '--cacert', world.ca.path, `https://api.allowed.test:${port}/from-curl`],
      { timeout: 10_000 },
    )
    expect(JSON.parse(stdout)).toMatchObject({ host: 'api.allowed.test', sni: 'api.allowed.test', path: '/from-curl' })
  })

  it('serves plain HTTP and a bulk endpoint', async () => {
    const plain = world.hosts['plain.test']
    const res = await get(http, { host: plain?.address, port: plain?.ports.http, path: '/p', headers: { host: 'plain.test' } })
    expect(JSON.parse(res.body.toString())).toMatchObject({ host: 'plain.test', sni: null, scheme: 'http', path: '/p' })
    const bulk = world.hosts['bulk.test']
    const big = await get(http, { host: bulk?.address, port: bulk?.ports.http, path: '/bytes/3000000' })
    expect(big.headers['content-length']).toBe('3000000')
    expect(big.body.length).toBe(3_000_000)
  })

  it('echoes TCP', async () => {
    const echo = world.hosts['echo.test']
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: echo?.address, port: echo?.ports.echo ?? 0 }, () => s.end('ping\n'))
      let got = ''
      s.on('data', (c: Buffer) => (got += c.toString()))
      s.on('end', () => resolve(got))
      s.on('error', reject)
    })
    expect(reply).toBe('ping\n')
    expect(world.echo.connections.length).toBeGreaterThan(0)
  })

  it('stops cleanly: nothing listens afterwards', async () => {
    const w = await startWorld({ ports: { https: 0, http: 0, echo: 0 } })
    const api = w.hosts['api.allowed.test']
    const res = await get(https, { host: api?.address, port: api?.ports.https, servername: 'api.allowed.test', ca: w.ca.certPem, path: '/' })
    expect(res.status).toBe(200)
    await w.stop()
    await w.stop() // idempotent
    await expect(
      new Promise((resolve, reject) => {
        const s = net.connect({ host: api?.address, port: api?.ports.https ?? 0 }, () => {
          s.destroy()
          resolve('connected')
        })
        s.on('error', reject)
      }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' })
  })
})
