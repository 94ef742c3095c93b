/**
 * The in-process mount `keel run` will use, without the sandbox: a TLS server stands in for
 * the proxy (per-sandbox CA made with node-forge, one leaf per name), terminates TLS and
 * hands each decrypted socket to `createInProcessServer(app).handleConnection(socket, origin)`.
 * An unmodified OpenAI SDK in a child process trusts the CA through NODE_EXTRA_CA_CERTS
 * (as the agent will) and calls with a dummy key. Identity comes from the origin, not headers.
 */
import { execFile } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import forge from 'node-forge'
import { createApp, createInProcessServer, createMemoryGovernanceSink, loadDispatcherConfig, staticCredentials, type InProcessServer } from '@keel/dispatcher'
import { startFakeProvider, type FakeProvider } from '../fake-provider/index.mjs'

const REAL_KEY = 'sk-real-inprocess-0123456789abcdef'
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

function makeCa(names: string[]): { caPem: string; keyPem: string; certPem: string } {
  const toForge = (pem: string) => forge.pki.privateKeyFromPem(pem)
  const caKeys = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
  const ca = forge.pki.createCertificate()
  ca.publicKey = forge.pki.publicKeyFromPem(caKeys.publicKey)
  ca.serialNumber = '01'
  ca.validity.notBefore = new Date(Date.now() - 60_000)
  ca.validity.notAfter = new Date(Date.now() + 86_400_000)
  const caName = [{ name: 'commonName', value: 'keel sandbox test CA' }]
  ca.setSubject(caName)
  ca.setIssuer(caName)
  ca.setExtensions([{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }])
  ca.sign(toForge(caKeys.privateKey), forge.md.sha256.create())
  const leafKeys = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
  const leaf = forge.pki.createCertificate()
  leaf.publicKey = forge.pki.publicKeyFromPem(leafKeys.publicKey)
  leaf.serialNumber = '02'
  leaf.validity.notBefore = new Date(Date.now() - 60_000)
  leaf.validity.notAfter = new Date(Date.now() + 86_400_000)
  leaf.setSubject([{ name: 'commonName', value: names[0]! }])
  leaf.setIssuer(caName)
  leaf.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: names.map((n) => (/^\d/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
  ])
  leaf.sign(toForge(caKeys.privateKey), forge.md.sha256.create())
  return { caPem: forge.pki.certificateToPem(ca), keyPem: leafKeys.privateKey, certPem: forge.pki.certificateToPem(leaf) }
}

let fake: FakeProvider
let tlsServer: TlsServer
let inproc: InProcessServer
let port: number
let dir: string
const events = createMemoryGovernanceSink()

beforeAll(async () => {
  fake = await startFakeProvider({ expectedKeys: { openai: REAL_KEY } })
  const config = loadDispatcherConfig(`apiVersion: keel.dev/v1alpha1
kind: DispatcherConfig
spec:
  providers:
    - { name: openai, format: openai, hosts: [api.openai.com], endpoints: ["${fake.openaiBaseUrl}"], credential: { env: UNUSED } }
  permits:
    rules:
      - { name: sandboxed, when: { agent: [sandboxed-agent], project: [proj-x] }, action: allow }
`)
  const app = createApp({ config, credentials: staticCredentials({ providers: { openai: REAL_KEY } }), governance: events })
  inproc = createInProcessServer(app)
  const { keyPem, certPem, caPem } = makeCa(['localhost', '127.0.0.1'])
  dir = mkdtempSync(join(tmpdir(), 'keel-inproc-'))
  writeFileSync(join(dir, 'ca.pem'), caPem)
  // Stands in for the proxy: terminate TLS, then hand the socket over with its origin.
  // The proxy decides the name from SNI / the synthetic address; here every socket is api.openai.com.
  tlsServer = createTlsServer({ key: keyPem, cert: certPem, ALPNProtocols: ['http/1.1'] }, (socket: TLSSocket) => {
    inproc.handleConnection(socket, { boundName: 'api.openai.com', agent: 'sandboxed-agent', project: 'proj-x', bindingKey: 'sandbox-1234' })
  })
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', () => resolve()))
  port = (tlsServer.address() as AddressInfo).port
})

afterAll(async () => {
  await inproc?.close()
  await new Promise<void>((resolve) => (tlsServer ? tlsServer.close(() => resolve()) : resolve()))
  await fake?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

function runAgent(script: string): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script],
      { cwd: ROOT, env: { PATH: process.env['PATH'] ?? '', NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ stdout, stderr, code: err ? ((err as { code?: number }).code ?? 1) : 0 }),
    )
  })
}

describe('in-process mount (what keel run will do)', () => {
  it('an unmodified SDK with a dummy key, trusting the CA via NODE_EXTRA_CA_CERTS, gets a real answer over TLS', async () => {
    const script = `import OpenAI from 'openai'
const client = new OpenAI({ apiKey: 'sk-keel-dummy', baseURL: 'https://localhost:${port}/v1', maxRetries: 0 })
const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'x-keel-agent': 'someone-else', 'x-keel-project': 'other' } })
let text = ''
for await (const c of await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream: true })) text += c.choices[0]?.delta?.content ?? ''
const attest = await fetch('https://localhost:${port}/v1/attestations', { method: 'POST', body: '{}' })
console.log(JSON.stringify({ content: r.choices[0].message.content, text, attestStatus: attest.status }))`
    const out = await runAgent(script)
    expect(out.stderr).toBe('')
    const res = JSON.parse(out.stdout) as { content: string; text: string; attestStatus: number }
    expect(res.content).toContain('Hello from the keel fake provider')
    expect(res.text).toBe('Hello from the keel fake provider. This reply streams word by word.')
    // The attestation API is not reachable from inside the sandbox.
    expect(res.attestStatus).toBe(404)
    expect(fake.requests.every((r) => r.headers['authorization'] === `Bearer ${REAL_KEY}`)).toBe(true)
    const bound = events.events.filter((e) => e.event === 'dispatch.egress_bound')
    expect(bound).toHaveLength(2)
    // Identity from the sandbox origin; the agent's x-keel-agent / x-keel-project are ignored.
    for (const e of bound) expect(e).toMatchObject({ actor: 'sandboxed-agent', project: 'proj-x' })
  })
})
