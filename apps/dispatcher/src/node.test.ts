/**
 * The app behind a real node:http server (createNodeListener), as `keel dispatcher serve`
 * runs it: request headers and bodies read straight from the IncomingMessage.
 */
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createApp } from './app.js'
import { staticCredentials } from './credentials/store.js'
import { createMemoryGovernanceSink } from './governance.js'
import { MAX_BODY_BYTES } from './middleware/request-context.js'
import { createNodeListener } from './node.js'
import { BASE_PROVIDERS, fakeFetch, loadSpec, OPENAI_KEY } from '../test-support/unit.js'

const SPEC = `${BASE_PROVIDERS}  permits:
    rules:
      - { name: no-cui, when: { dataClass: [CUI] }, action: deny }
      - { name: all, action: allow }
`

let server: Server | undefined
afterEach(async () => {
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined))
  server = undefined
})

async function serve() {
  const upstream = fakeFetch()
  const sink = createMemoryGovernanceSink()
  const app = createApp({ config: loadSpec(SPEC), credentials: staticCredentials({ providers: { openai: OPENAI_KEY } }), governance: sink, fetch: upstream.fetch })
  server = createServer(createNodeListener(app))
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as AddressInfo).port, upstream, events: sink.events }
}

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

function post(port: number, headers: Record<string, string | string[]>, body: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length, ...headers } }, (res) => {
      let text = ''
      res.on('data', (d: Buffer) => (text += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    // The server may answer and close before it has read all of an oversize body.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)))
    req.end(body)
  })
}

const CHAT = Buffer.from(JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }] }))

describe('the app on node:http', () => {
  it('reads workflow headers from the request (repeats joined) and forwards only allowlisted ones', async () => {
    const { port, upstream } = await serve()
    const ok = await post(port, { authorization: 'Bearer sk-keel-dummy', 'x-keel-agent': 'coder', 'x-custom': 'dropped', 'openai-beta': 'assistants=v2' }, CHAT)
    expect(ok.status).toBe(200)
    const sent = upstream.calls[0]!.headers
    expect(sent.get('authorization')).toBe(`Bearer ${OPENAI_KEY}`)
    expect(sent.get('openai-beta')).toBe('assistants=v2')
    expect(sent.get('x-custom')).toBeNull()
    const denied = await post(port, { 'x-keel-data-class': 'CUI' }, CHAT)
    expect(denied.status).toBe(403)
    expect(denied.headers['x-keel-reason']).toBe('permit_denied_rule')
    // Sent twice, the class would read "public, CUI" and match no rule: refused instead.
    for (const twice of [['public', 'CUI'], ['public, CUI']]) {
      const res = await post(port, { 'x-keel-data-class': twice }, CHAT)
      expect(res.status).toBe(400)
      expect(res.headers['x-keel-reason']).toBe('request_unevaluable')
      expect(JSON.parse(res.body).error.message).toMatch(/x-keel-data-class has more than one value/)
    }
    expect(upstream.calls).toHaveLength(1)
  })

  it('answers an oversize body with 413 and closes the connection', async () => {
    const { port, upstream, events } = await serve()
    const res = await post(port, {}, Buffer.alloc(MAX_BODY_BYTES + 1024, 0x20))
    expect(res.status).toBe(413)
    expect(res.headers['x-keel-reason']).toBe('request_unevaluable')
    expect(res.headers['connection']).toBe('close')
    expect(JSON.parse(res.body).error.message).toMatch(/too large/)
    expect(upstream.calls).toHaveLength(0)
    expect(events.map((e) => e.reason)).toContain('request_unevaluable')
  })
})
